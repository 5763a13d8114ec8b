"""The one exception root: a check that *could not run*.

Findings (see `auditkit.findings`) are values returned by checks that ran.
An `AuditError` means the check itself could not run — unreadable input, a
usage mistake, a broken schema — and maps to exit code 2.
"""

from __future__ import annotations


class AuditError(Exception):
    """The check could not run. `diagnostics()` says what happened and what to do."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.hint = hint

    def diagnostics(self) -> str:
        from auditkit.text import printable  # a path or message may carry package text (a name with a newline)

        where = f"{printable(self.path)}: " if self.path else ""
        text = f"error: {where}{printable(self.message)}"
        if self.hint:
            text += f"\n  hint: {printable(self.hint)}"
        return text

    def to_dict(self) -> dict:
        return {"error": self.message, "path": self.path, "hint": self.hint}
