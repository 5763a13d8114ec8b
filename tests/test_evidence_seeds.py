"""Seeds derived from the freeze token: the byte encoding, and the checker."""

from __future__ import annotations

import pytest

from auditkit.evidence.seeds import anchored_seed, seed_findings

EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # sha256 of b""


def test_known_vector():
    # sha256(bytes.fromhex(EMPTY_SHA) + b"stage2_60min" + (44).to_bytes(8, "big")) computed with
    # `openssl dgst -sha256` = 04878093ff63...; its first 4 bytes 0x04878093 >> 1 = 37994569
    assert anchored_seed(EMPTY_SHA, "stage2_60min", 44) == 37994569
    assert anchored_seed(EMPTY_SHA, "stage2_60min", 45) == 1112852451


def test_seeds_depend_on_anchor_stage_and_index_and_fit_31_bits():
    seeds = {anchored_seed(a * 64, s, n) for a in "0f" for s in ("s1", "s2") for n in range(50)}
    assert len(seeds) == 200
    assert all(0 <= x < 2 ** 31 for x in seeds)


def test_bad_anchor_or_index():
    with pytest.raises(ValueError, match="64 hex"):
        anchored_seed("abcd", "s", 1)
    with pytest.raises(ValueError, match="outside"):
        anchored_seed(EMPTY_SHA, "s", -1)


def test_checker_finds_edited_and_missing_seeds():
    good = str(anchored_seed(EMPTY_SHA, "s1", 7))
    rows = [("a.csv", 1, {"stage": "s1", "seed": "7", "rng_seed": good}),
            ("a.csv", 2, {"stage": "s1", "seed": "7", "rng_seed": str(int(good) + 1)}),
            ("a.csv", 3, {"stage": "s1", "seed": "8", "rng_seed": ""}),
            ("a.csv", 4, {"stage": "s1", "seed": "x", "rng_seed": good}),
            ("b.csv", 1, {"stage": "s2", "seed": "7", "rng_seed": "1"})]  # another stage: not this anchor's
    found = seed_findings(EMPTY_SHA, "s1", rows)
    assert [(f.code, f.location) for f in found] == [("seed-not-from-anchor", f"row {i}, column rng_seed")
                                                     for i in (2, 3, 4)]
    assert found[0].expected == good and found[1].found == "empty"
