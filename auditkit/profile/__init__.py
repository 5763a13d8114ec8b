"""Audit packages auditkit did not write, through a reviewer-written profile (docs/PROFILES.md).

    from auditkit.profile import load_profile, verify_profiled, replay_profiled, check_tables_profiled
    from auditkit.profile import draft_profile
"""

from auditkit.profile.audit import ProfiledReport, check_tables_profiled, replay_profiled, verify_profiled
from auditkit.profile.draft import draft_profile
from auditkit.profile.load import load_profile, parse_profile
from auditkit.profile.model import Profile

__all__ = ["Profile", "ProfiledReport", "check_tables_profiled", "draft_profile", "load_profile", "parse_profile",
           "replay_profiled", "verify_profiled"]
