"""`Outcome`: what a command did, as a value a formatter prints (`auditkit.cli.output`).

An outcome carries at most one findings `report` (printed by every format: text, JSON, SARIF,
JUnit), or a JSON answer that is no findings report (`doc`), plus the text a person reads
(`lines` on stdout before the report, `notes` and `warnings` on stderr) and the exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from auditkit.findings import Report


@dataclass
class Outcome:
    """The result of one use case.

    - `report`: the findings (its exit code is the outcome's unless `exit_code` is set);
    - `doc`: the JSON answer when there is no report (`contract`: False prints it as it is, without
      the output contract's fields, as `review --json` does);
    - `lines`: stdout lines of the text answer (before the report's text); `raw`: stdout text
      written as it is (no newline added);
    - `notes`: stderr lines before the answer, `warnings`: stderr lines after it (in every format);
    - `package`, `replays`, `claims`, `user_files`: what SARIF and JUnit need to place findings;
    - `view`: how the text format shows the report ("report", or "replay" with `verbosity`:
      -1 the verdict line alone, 0 a table of the gates, 1 every gate whole).
    """

    command: str
    report: Report | None = None
    doc: dict | None = None
    contract: bool = True
    lines: list[str] = field(default_factory=list)
    raw: str | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    exit_code: int | None = None
    package: str | None = None
    replays: Sequence[Any] = ()
    claims: Sequence[Any] = ()
    user_files: Sequence[str] = ()
    view: str = "report"
    verbosity: int = 0

    @property
    def code(self) -> int:
        """The process's exit code: 0 all holds, 1 findings, 2 could not check (or a command's own)."""
        if self.exit_code is not None:
            return self.exit_code
        return self.report.exit_code if self.report is not None else 0
