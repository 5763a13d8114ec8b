"""Freeze evidence through a profile, from what a real package showed: a prose pre-registration's own
`Frozen:` time (with its zone) is used before the date in its file name, and an addendum scoped to
some of a gate's inputs is compared only with the runs it governs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from auditkit.profile import parse_profile, replay_profiled
from fixtures import legacy

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "examples" / "paper06.profile.toml"
S3 = "preanalysis/PREANALYSIS_STAGE3_12H_SEED46_2026-04-29.txt"
S3B = "preanalysis/PREANALYSIS_STAGE3B_12H_SEED47_2026-04-30.txt"


@pytest.fixture(scope="module")
def frozen_pkg(tmp_path_factory) -> Path:
    return legacy.build_legacy_package(tmp_path_factory.mktemp("frozen") / "pkg", frozen=True)


def profile_for(pkg: Path, stage3b_prose):
    """The shipped example profile, its prose pins re-taken from `pkg`, stage3b's prose replaced."""
    doc = tomllib.loads(EXAMPLE.read_text())
    for g in doc["gates"].values():
        g["prose"] = {"path": g["prose"]["path"], "sha256": legacy.sha256_of(pkg, g["prose"]["path"])}
    doc["gates"]["stage3b"]["prose"] = [dict(p, sha256=legacy.sha256_of(pkg, p["path"])) for p in stage3b_prose]
    return parse_profile(doc, "frozen.toml")


def test_stated_freeze_times_make_every_gate_consistent(frozen_pkg):
    prof = profile_for(frozen_pkg, [{"path": S3}, {"path": S3B, "seeds": [47]}])
    rep = replay_profiled(frozen_pkg, prof)
    freeze = {g.gate: g.freeze for g in rep.gates}
    assert set(freeze) == {"stage1_top9", "stage1", "stage2", "stage3", "stage3b"}
    for gate, text in freeze.items():
        assert "; consistent:" in text, (gate, text)
        assert "freeze time stated in the text" in text
    # the stated time, not the file name's day: stage2's rows began the same day (undetermined by a date)
    assert "2026-04-28T18:00:00+00:00" in freeze["stage2"]
    assert not [f for f in rep.findings if f.code.startswith("freeze")]


def test_an_addendum_scoped_to_its_seed_contradicts_nothing_else(frozen_pkg):
    unscoped = replay_profiled(frozen_pkg, profile_for(frozen_pkg, [{"path": S3}, {"path": S3B}]))
    bad = [f for f in unscoped.findings if f.code == "freeze-contradicted"]
    assert len(bad) == 1 and bad[0].path == S3B and "seed46" in bad[0].found      # the seed-46 rows came first
    scoped = replay_profiled(frozen_pkg, profile_for(frozen_pkg, [{"path": S3}, {"path": S3B, "seeds": [47]}]))
    assert not [f for f in scoped.findings if f.code == "freeze-contradicted"]
    text = {g.gate: g.freeze for g in scoped.gates}["stage3b"]
    assert "governs seeds 47" in text and "; consistent:" in text
    # scoped to the wrong seed, the addendum is contradicted by the runs it does govern
    early = replay_profiled(frozen_pkg, profile_for(frozen_pkg, [{"path": S3B, "seeds": [46]}]))
    assert [f.code for f in early.findings if f.code == "freeze-contradicted"] == ["freeze-contradicted"]


def test_a_stated_time_that_is_no_time_is_a_finding(tmp_path):
    pkg = legacy.build_legacy_package(tmp_path / "pkg")
    p = pkg / S3
    p.write_text(p.read_text() + "\nFrozen: 2026-13-29 09:00:00+02:00\n")
    rep = replay_profiled(pkg, profile_for(pkg, [{"path": S3}]))
    assert [f.path for f in rep.findings if f.code == "freeze-date-invalid"] == [S3]
