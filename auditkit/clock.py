"""The one clock: what time auditkit writes into a package, and how it reads a time back.

Every time auditkit records (a rules file's `frozen_at`, a decision's `decided_at`, an event's
`time`, a report's `generated_at`) is `utc_now()`: UTC, microseconds, a `Z` suffix, so string order
is time order.  Code that records a time takes a `Clock` (a function returning that text) with
`utc_now` as its default, so a test can pass a fixed one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

#: a clock: returns the current time in the one format (`utc_now`'s)
Clock = Callable[[], str]

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def now() -> datetime:
    """The current time as an aware UTC datetime (for arithmetic; write it with `format_utc`)."""
    return datetime.now(timezone.utc)


def utc_now() -> str:
    """The one clock format: UTC, microseconds, `Z` suffix (string order is time order)."""
    return now().strftime(FORMAT)


def format_utc(t: datetime) -> str:
    """`t` in the one clock format (a naive datetime is taken as UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).strftime(FORMAT)


def parse_utc(text: str) -> datetime | None:
    """An ISO-8601 timestamp as an aware UTC datetime; None if it does not parse or has no zone."""
    if not isinstance(text, str) or not text:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        return None
    return t.astimezone(timezone.utc)
