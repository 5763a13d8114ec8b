"""The work a reviewer-written profile can ask for is bounded (auditkit/profile/bounds.py): a
file pattern with many captures against a long name, and a JSON path with several descendant
segments over a large decision.  Work is bounded by counts (steps, matches), never by time."""

from __future__ import annotations

import json
import random
import re

import parse
import pytest

from auditkit.errors import AuditError
from auditkit.profile.bounds import (MAX_CAPTURES, FilePattern, find_values, jsonpath_problem,
                                     pattern_problem)
from auditkit.profile.load import parse_profile, profile_findings
from test_profile_model import _edit


def _parse_lib(p: str):
    """The reference: the `parse` library with the same capture type (one or more non-'/' chars)."""
    seg = parse.with_pattern(r"[^/]+?")(lambda s: s)
    return parse.compile(re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", r"{\1:seg}", p), extra_types={"seg": seg},
                         case_sensitive=True)


def test_six_captures_against_a_243_byte_name_take_few_steps():
    fp = FilePattern("{a}_{b}_{c}_{d}_{e}_{f}.csv")
    name = "a_" * 121 + "x"
    assert len(name) == 243
    assert fp.parse(name) is None
    assert fp.steps < 200_000      # a backtracking regular expression takes ~n^6/720 = 3e11 here
    assert fp.parse("a_" * 5 + "b.csv") == {"a": "a", "b": "a", "c": "a", "d": "a", "e": "a", "f": "b"}


def test_captures_agree_with_the_parse_library():
    rng = random.Random(7)
    patterns = ["remote-results/{host}_{stage}_summary.csv", "{a}_{b}.csv", "runs/{host}/{stage}-{seed}.csv",
                "{a}{b}", "x{a}y{b}z"]
    for _ in range(3000):
        p = rng.choice(patterns)
        name = "".join(rng.choice("ab_-/.xyzcsv") for _ in range(rng.randint(0, 14)))
        if rng.random() < 0.3:
            name = f"remote-results/{name}_summary.csv"
        ref = _parse_lib(p).parse(name)
        assert FilePattern(p).parse(name) == (dict(ref.named) if ref else None), (p, name)


def test_patterns_beyond_the_bounds_are_refused_naming_the_key():
    many = "_".join(f"{{c{i}}}" for i in range(MAX_CAPTURES + 1))
    assert pattern_problem(many) and pattern_problem("{a}_{a}") and pattern_problem("x" * 2000)
    with pytest.raises(AuditError, match="rows.files"):
        FilePattern(many)
    found = profile_findings(_edit(["rows", "files"], many), "p.toml")
    assert any(f.location == "$.rows.files" and "captures" in f.expected for f in found)


def test_a_path_of_three_descendant_segments_is_refused_before_it_runs():
    doc = _edit(["gates", "stage1_top9", "recorded", "promoted"], "$..*..*..*")
    found = profile_findings(doc, "p.toml")
    assert "$.gates.stage1_top9.recorded[0].promoted" in [f.location for f in found]
    with pytest.raises(AuditError, match="recorded"):
        parse_profile(doc, "p.toml")
    assert jsonpath_problem("$..*..*..*") and jsonpath_problem("$..a..b")
    assert jsonpath_problem("$.promoted") is None and jsonpath_problem("$..promoted") is None
    assert jsonpath_problem("$['a..b'].c") is None        # dots inside a name are no segment


def test_evaluation_stops_after_the_matches_needed():
    decision = {"candidates": [{"config_id": f"c{i}", "cells": [{"host": "h", "seed": s, "val_bpb": 1.0}
                                                                for s in range(20)]} for i in range(120)]}
    assert len(json.dumps(decision)) > 85_000
    assert len(find_values("$..*", decision, 2)) == 2
    assert find_values("$.candidates[3].config_id", decision, 2) == ["c3"]
    with pytest.raises(AuditError, match="profile key gates.g.recorded"):
        find_values("$..*..*..*", decision, 2, key="gates.g.recorded")
