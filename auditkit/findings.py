"""Findings are values: what a check that ran found wrong.

Each finding has a stable kebab-case `code`, the package-relative `path`, a
`location` (``row 3, column val_bpb`` or a JSON path such as
``$.inputs.stages[0]``), what was `expected` and what was `found`, and a
`message` that says what to do.  Checks collect every finding; none stops at
the first.  Every code is catalogued, with its meaning and what to do, in
`auditkit.codes` (docs/FINDINGS.md).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

#: Every code a `Finding` was made with in this process. The test session fails when one of them
#: is not in the catalogue (`auditkit.codes`, docs/FINDINGS.md); see tests/conftest.py.
EMITTED_CODES: set[str] = set()


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    code: str
    location: str = ""
    expected: str = ""
    found: str = ""
    message: str = ""
    hint: str = ""
    #: what `expected` and `found` are: "" (what the check expected, what it found) or "replay" (the
    #: value the raw rows give, the value the package recorded: printed "recorded X; replayed Y")
    roles: str = ""

    def __post_init__(self) -> None:
        EMITTED_CODES.add(self.code)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["roles"]
        if not self.hint:
            del d["hint"]  # the store's findings carry a hint; the JSON form of the others is unchanged
        if self.roles == "replay":   # the same values, also under the names that say which is which
            d["recorded"], d["replayed"] = self.found, self.expected
        return d

    def detail(self) -> list[str]:
        """'expected X', 'found Y' (a replay: 'recorded Y', 'replayed X'), the empty ones left out."""
        pairs = ((("recorded", self.found), ("replayed", self.expected)) if self.roles == "replay"
                 else (("expected", self.expected), ("found", self.found)))
        return [f"{word} {value}" for word, value in pairs if value]

    def __str__(self) -> str:
        where = self.path + (f" [{self.location}]" if self.location else "")
        text = f"{where}: {self.code}"
        if self.message:
            text += f": {self.message}"
        detail = self.detail()
        if detail:
            text += f" ({'; '.join(detail)})"
        return text


def row_location(row: int, column: str | None = None) -> str:
    """Location of a CSV cell; `row` counts data rows from 1 (the header is row 0)."""
    return f"row {row}" + (f", column {column}" if column else "")


def json_location(parts) -> str:
    """JSON path such as ``$.candidates[2].rank`` from a sequence of keys and indexes."""
    out = "$"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


@dataclass
class Report:
    """Every finding of one command run, plus what was checked."""

    command: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extend(self, findings) -> None:
        self.findings.extend(findings)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f.code for f in self.findings).items()))

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings)

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "target": self.target,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "checked": self.checked,
            "info": self.info,
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.sorted_findings()],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)

    def render_text(self) -> str:
        """One line per finding and per info item, then the verdict; package text is `printable`
        (a carriage return, an ANSI escape or a newline in a file name cannot forge a line)."""
        from auditkit.text import printable

        lines = [printable(f) for f in self.sorted_findings()]
        checked = ", ".join(f"{n} {_singular(what) if n == 1 else what}" for what, n in self.checked.items())
        for key, value in self.info.items():
            lines.append(printable(f"{key}: {value}"))
        if self.ok:
            lines.append(printable(f"OK: {self.command} {self.target}" + (f" ({checked})" if checked else "")))
        else:
            by_code = ", ".join(f"{c} x{n}" for c, n in self.counts().items())
            lines.append(printable(
                f"FAILED: {len(self.findings)} finding(s) in {self.command} {self.target}"
                + (f" ({checked})" if checked else "")
                + f": {by_code}"
            ))
        return "\n".join(lines)


def _singular(noun: str) -> str:
    """'1 gate', '1 run row' — the counted nouns are regular plurals."""
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun
