"""Bounds on the work a reviewer-written profile can ask for: its file patterns and JSON paths.

A profile is input like any other: a pattern with many captures against a long file name
makes a backtracking regular expression take exponential time, and a JSON path with
several descendant segments (``$..*..*..*``) visits the cube of a document's nodes.  So:

- `FilePattern` matches ``{capture}`` patterns by a search that remembers every
  (pattern part, position) it found to fail, so no state is tried twice: at most
  parts x (length + 1) states, each trying at most length + 1 ends; a step budget
  (`MAX_PATTERN_STEPS`) stops it regardless, naming the profile key;
- `jsonpath_problem` refuses a path longer than `MAX_PATH_CHARS` or with more than
  `MAX_DESCENDANT_SEGMENTS` descendant segments (``..``) before it is run, and
  `find_values` stops after the few matches a caller needs (evaluation is lazy).
"""

from __future__ import annotations

import itertools
import re

from auditkit.errors import AuditError

MAX_CAPTURES = 16
MAX_PATTERN_CHARS = 1024
MAX_PATTERN_STEPS = 2_000_000
MAX_PATH_CHARS = 1024
MAX_DESCENDANT_SEGMENTS = 1

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def pattern_problem(pattern: str) -> str | None:
    """Why a `rows.files` pattern is refused (too long, too many captures), or None."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"a pattern of at most {MAX_PATTERN_CHARS} characters"
    names = _CAPTURE.findall(pattern)
    if len(names) > MAX_CAPTURES:
        return f"a pattern of at most {MAX_CAPTURES} captures"
    if len(names) != len(set(names)):
        return "each capture name once"
    return None


class FilePattern:
    """A file-name pattern: each ``{name}`` matches one or more characters other than '/'
    (the shortest that lets the rest match, as `parse` does); the rest is literal and the
    whole name must match.  `key` names the profile key in errors."""

    def __init__(self, pattern: str, key: str = "rows.files"):
        why = pattern_problem(pattern)
        if why:
            raise AuditError(f"profile key {key}: {pattern[:60]!r} is refused: expected {why}", path=key,
                             hint="a file pattern names a few parts of a file name; split it or shorten it")
        self.pattern, self.key = pattern, key
        self.parts: list[tuple[bool, str]] = []     # (is_capture, name or literal text)
        pos = 0
        for m in _CAPTURE.finditer(pattern):
            if m.start() > pos:
                self.parts.append((False, pattern[pos:m.start()]))
            self.parts.append((True, m[1]))
            pos = m.end()
        if pos < len(pattern):
            self.parts.append((False, pattern[pos:]))
        self.steps = 0      # the work the last `parse` did (tests bound it by count)

    def parse(self, name: str) -> dict[str, str] | None:
        """The captures of `name`, or None when it does not match.  AuditError when the step
        budget runs out (it cannot, within the limits on pattern and name; it is the guard)."""
        self.steps = 0
        failed: set[tuple[int, int]] = set()
        parts, n = self.parts, len(name)
        got: dict[str, str] = {}

        def tick():
            self.steps += 1
            if self.steps > MAX_PATTERN_STEPS:
                raise AuditError(f"profile key {self.key}: matching {self.pattern[:60]!r} against a file name of "
                                 f"{n} characters took more than {MAX_PATTERN_STEPS} steps", path=self.key,
                                 hint="use fewer captures, or literal text between them")

        def at(i: int, pos: int) -> bool:
            if i == len(parts):
                return pos == n
            if (i, pos) in failed:
                return False
            tick()
            is_cap, text = parts[i]
            if not is_cap:
                ok = name.startswith(text, pos) and at(i + 1, pos + len(text))
            else:
                ok = False
                end = name.find("/", pos)
                end = n if end < 0 else end
                for stop in range(pos + 1, end + 1):
                    tick()
                    got[text] = name[pos:stop]
                    if at(i + 1, stop):
                        ok = True
                        break
                    del got[text]
            if not ok:
                failed.add((i, pos))    # names are unique: the outcome does not depend on earlier captures
            return ok

        return dict(got) if at(0, 0) else None


def jsonpath_problem(path: str) -> str | None:
    """Why a profile's JSON path is refused before it runs (too long, too many `..`), or None."""
    if len(path) > MAX_PATH_CHARS:
        return f"a JSON path of at most {MAX_PATH_CHARS} characters"
    if _QUOTED.sub("", path).count("..") > MAX_DESCENDANT_SEGMENTS:
        return (f"at most {MAX_DESCENDANT_SEGMENTS} descendant segment ('..'): each one more multiplies the "
                f"nodes visited by the document's size")
    return None


def find_values(path: str, doc, limit: int = 2, key: str = "") -> list:
    """The first `limit` values `path` selects in `doc` (evaluation stops there). AuditError naming
    the profile key for a path `jsonpath_problem` refuses; jsonpath.JSONPathError for a bad path."""
    import jsonpath

    why = jsonpath_problem(path)
    if why:
        raise AuditError(f"profile key {key or 'JSON path'}: {path[:60]!r} is refused: expected {why}",
                         path=key or None, hint="select the value by its own keys ($.a.b[0]) instead")
    return [m.obj for m in itertools.islice(jsonpath.finditer(path, doc), limit)]
