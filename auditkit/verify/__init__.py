"""`auditkit verify`: is a package whole, unaltered and well formed.

`verify_package` (orchestrate.py) scans once, builds the read-only `PackageView`
(view.py) and runs every check of the registry (`checks.CHECKS`, one module per
family, each `check(view) -> Iterator[Finding]`).
"""

from auditkit.verify.orchestrate import PROGRESS_MIN_BYTES, verify_package

__all__ = ["PROGRESS_MIN_BYTES", "verify_package"]
