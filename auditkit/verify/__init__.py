"""`auditkit verify`: is a package whole, unaltered and well formed (see `orchestrate.py`)."""

from auditkit.verify.orchestrate import PROGRESS_MIN_BYTES, verify_package

__all__ = ["PROGRESS_MIN_BYTES", "verify_package"]
