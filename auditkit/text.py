"""Package-supplied text made safe to show: one helper for the terminal, two for Markdown.

A package can put anything in a file name, a CSV cell, a protocol name or an event field: a
carriage return that overwrites the line before it, an ANSI escape that recolours or clears the
terminal, a newline that starts a second "Overall: OK" line, a bidi override that reverses what
follows, `<script>` for a page that renders Markdown as HTML. `printable` shows every such
character as a visible escape (``\\r``, ``\\x1b``, ``\\u202e``; a byte of a non-UTF-8 name, which
Python decodes as a lone surrogate, as ``\\xNN``), so one value always prints as one line and
nothing in it acts on the reader's screen. `md_text` and `md_code` do the same for Markdown and
also neutralise what Markdown or HTML would act on.

Every text renderer passes package-supplied values through these (`findings.Report.render_text`,
`errors.AuditError.diagnostics`, `report.markdown`); JSON escapes by itself, the HTML page is
autoescaped (Jinja2).
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text) -> str:
    """`text` (made a string) with every non-printable character shown as a backslash escape."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def _escape(c: str) -> str:
    o = ord(c)
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"


_MD_ESCAPES = {c: "\\" + c for c in "\\`*_[]|~"}
_MD_ESCAPES.update({"<": "&lt;", ">": "&gt;", "&": "&amp;"})
_MD_TABLE = str.maketrans(_MD_ESCAPES)


def md_text(text) -> str:
    """`text` for running Markdown text or a table cell: one line, no HTML, no emphasis, link,
    code span or cell break of its own (`printable`, then Markdown's and HTML's specials escaped)."""
    return printable(text).translate(_MD_TABLE)


def md_code(text) -> str:
    """`text` as one Markdown code span (inside it nothing is markup): a fence of more backticks
    than the text holds in a row, `|` escaped for tables (GitHub's tables split on it even there)."""
    s = printable(text).replace("|", "\\|")
    run = longest = 0
    for c in s:
        run = run + 1 if c == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip(" ") else ""
    return f"{fence}{pad}{s}{pad}{fence}"
