"""The values a package read through a profile is made of: a `Fact` and who vouches for it, a
gate's asserted `Freeze`, and what the authors `Recorded` for a gate (each value with its place)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from auditkit.profile.model import Provenance

DATE_RE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
# a date with no zone names a day somewhere between UTC-12 and UTC+14
ZONE_EARLY, ZONE_LATE = timedelta(hours=14), timedelta(hours=12)


@dataclass(frozen=True)
class Fact:
    """One fact a result rests on, and who vouches for it."""

    name: str
    provenance: Provenance
    detail: str

    def to_dict(self) -> dict:
        return {"fact": self.name, "from": self.provenance.value, "detail": self.detail}


@dataclass(frozen=True)
class Freeze:
    """When the prose says the rules were written: a date, or a time with its zone (`instant`, from a
    `Frozen: 2026-04-28 08:00:00+02:00` line of the text), asserted, never proven. `scope`: the
    inputs the prose governs (an addendum for some seeds or stages), None for all of the gate's."""

    day: date | None
    source: str          # where the date was read
    instant: datetime | None = None
    path: str = ""
    scope: tuple | None = None     # (seeds or None, stages or None)

    def window(self) -> tuple[datetime, datetime] | None:
        """UTC instants the asserted freeze may be: the stated time itself, or every instant the
        asserted day covers somewhere (its zone is not stated)."""
        if self.instant is not None:
            return self.instant, self.instant
        if self.day is None:
            return None
        start = datetime(self.day.year, self.day.month, self.day.day, tzinfo=timezone.utc)
        return start - ZONE_EARLY, start + timedelta(days=1) + ZONE_LATE

    def shown(self) -> str:
        return self.instant.isoformat() if self.instant is not None else str(self.day)

    def latest(self) -> datetime:
        """The latest instant this freeze may be (to find the gate's last prose)."""
        w = self.window()
        return w[1] if w else datetime.min.replace(tzinfo=timezone.utc)


@dataclass
class Recorded:
    """What the authors recorded for one gate, as far as the profile maps it. Each value is
    (value, path, location) so a difference names the exact place in the authors' file."""

    gate: str
    sources: list[str] = field(default_factory=list)
    promoted: tuple[list[str], str, str] | None = None
    ordered: bool = False
    candidates: dict[str, dict[str, tuple]] | None = None
    candidates_at: tuple[str, str] | None = None
    cells: dict[tuple[str, str, int], dict[str, tuple]] | None = None
    cells_at: tuple[str, str] | None = None
    checks: dict[int, dict[str, tuple]] = field(default_factory=dict)
    tolerance: float = 5e-7
