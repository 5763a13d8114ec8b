"""The one exception root: a check that *could not run*.

Findings (see `auditkit.findings`) are values returned by checks that ran.
An `AuditError` means the check itself could not run — unreadable input, a
usage mistake, a broken schema — and maps to exit code 2.  Its one subclass
that is a finding instead: `PackageDefect`, a read refused because the package
itself is defective (exit 1), raised by the store (`defect(...)`).
"""

from __future__ import annotations

from auditkit.findings import Finding


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


class PackageDefect(AuditError):
    """A read refused because the package itself is defective (a finding, exit 1)."""

    def __init__(self, finding: Finding):
        super().__init__(f"{finding.path}: {finding.message}", path=finding.path, hint=finding.hint or None)
        self.finding = finding


def defect(path: str, code: str, message: str, *, location: str = "", expected: str = "", found: str = "",
           hint: str = "") -> PackageDefect:
    return PackageDefect(Finding(path=path, code=code, location=location, expected=expected, found=found,
                                 message=message, hint=hint))
