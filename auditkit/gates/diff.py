"""The one decision diff: where a recorded decision differs from the replayed one, field by field.

`iter_differences(recorded, replayed, path, better=...)` yields a finding per difference, located
by a JSON path into the recorded file (`diff_decisions` is the list). A package read through a
profile records only the fields the profile maps, each at its own place in the authors' files;
`auditkit.profile.replay` compares those with the same number test (`num_differs`) at the
profile's tolerance.
"""

from __future__ import annotations

import math
from typing import Iterator
from auditkit.findings import Finding, json_location
from auditkit.gates.documents import cell_findings, show

TOLERANCE = 1e-9


def num_differs(a, b, tolerance: float = TOLERANCE) -> bool:
    """Numbers differ beyond `tolerance` (SPEC 6: 1e-9); None only equals None; a bool is no number."""
    if a is None or b is None:
        return a is not b
    if isinstance(a, bool) or isinstance(b, bool):
        return True
    try:
        return not (math.isfinite(float(a)) and math.isfinite(float(b)) and abs(float(a) - float(b)) <= tolerance)
    except (TypeError, ValueError):
        return True


def int_differs(got, want) -> bool:
    """An integer field (rank, wins): equal as numbers, `1.0` being `1` (JSON has one number type); a bool
    or a fraction is no integer."""
    if got is None or want is None:
        return got is not want
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return True
    return not (float(got).is_integer() and got == want)


DIFFERS = "the recorded value is not what the frozen rules give on the raw rows"
DIFFERS_HINT = ("the decision, its rules or its rows changed after it was made, or it was not made by these rules: "
                "compare the input hashes the decision records, and the rows of the cell named")
_ABSENT = object()


def diff_decisions(recorded: dict, replayed: dict, path: str, *, better: str = "lower") -> list[Finding]:
    """Every difference `iter_differences` finds, as a list."""
    return list(iter_differences(recorded, replayed, path, better=better))


def iter_differences(recorded: dict, replayed: dict, path: str, *, better: str = "lower") -> Iterator[Finding]:
    """Every field where `recorded` differs from `replayed` (auditkit's form), comparing exactly what
    SPEC v1 defines — promoted list and order, the set of cells and of candidates, eligibility,
    ranks, wins, per-cell values, check outcomes exactly; numbers within 1e-9 — and accepting either
    v1 form where the SPEC leaves the representation open (docs/SPEC.md, "v1.1: representations").
    `better` is the rules' metric direction (the sign of a `mean_gap` value is open only for
    `higher`). Locations are JSON paths into the recorded file. Lazily (jsonschema's `iter_errors`
shape), field by field: gate, cells, promoted, candidates, checks; a caller that needs only
whether it differs stops at the first."""

    def differ(loc, code, exp, got, msg=DIFFERS) -> Finding:
        return Finding(path, code, json_location(loc), show(exp), show(got), msg, DIFFERS_HINT, roles="replay")

    if recorded.get("gate") != replayed["gate"]:
        yield differ(["gate"], "decision-differs", replayed["gate"], recorded.get("gate"))
    # cells: a set of (host, seed) pairs, in any order
    rec_cells = sorted((str(h), s) for h, s in recorded["cells"])
    if len(rec_cells) != len(replayed["cells"]) or rec_cells != sorted((h, s) for h, s in replayed["cells"]):
        yield differ(["cells"], "decision-differs", replayed["cells"], recorded["cells"])
    if recorded["promoted"] != replayed["promoted"]:
        yield differ(["promoted"], "promoted-differs", replayed["promoted"], recorded["promoted"],
               "the rules applied to the raw rows promote a different list")
    # candidates: matched by config_id, in any order
    rec_c = {}
    for i, c in enumerate(recorded["candidates"]):
        rec_c.setdefault(c["config_id"], (i, c))
    names_rec = sorted(c["config_id"] for c in recorded["candidates"])
    names_rep = sorted(c["config_id"] for c in replayed["candidates"])
    if names_rec != names_rep:
        yield differ(["candidates"], "candidates-differ", names_rep, names_rec)
    for want in replayed["candidates"]:
        cid = want["config_id"]
        if cid not in rec_c:
            continue
        i, got = rec_c[cid]
        if got.get("eligible") is not want["eligible"]:
            yield differ(["candidates", i, "eligible"], "eligible-differs", want["eligible"], got.get("eligible"))
        # rank and wins: an ineligible candidate has neither (null, absent; wins also 0)
        rank = got.get("rank")
        if int_differs(rank, want["rank"]):
            yield differ(["candidates", i, "rank"], "rank-differs", want["rank"], rank)
        wins = got.get("wins")
        if not (not want["eligible"] and wins in (None, 0) and not isinstance(wins, bool)) \
                and int_differs(wins, want["wins"]):
            yield differ(["candidates", i, "wins"], "wins-differs", want["wins"], wins)
        # statistics: null or absent where there is none (an ineligible candidate, std of one cell)
        for key in ("mean", "min", "max", "std"):
            if num_differs(got.get(key), want[key]):
                yield differ(["candidates", i, key], "value-differs", want[key], got.get(key))
        yield from _diff_cells(got.get("cells", _ABSENT), want, i, path, differ)
    yield from _diff_checks(recorded["checks"], replayed["checks"], better, differ)


def _diff_cells(gcells, want: dict, i: int, path: str, differ) -> Iterator[Finding]:
    """An eligible candidate's cells: exactly the decision's cells, each value and rank. An ineligible
    candidate's: `{}` or any of its cells, each value as the row's and no rank."""
    wcells = want["cells"]
    if gcells is _ABSENT:
        if want["eligible"]:
            yield differ(["candidates", i, "cells"], "decision-differs", "the candidate's cells", "none")
        return
    if gcells == wcells:  # the common case, compared in C; floats round-trip through JSON exactly
        return
    bad = cell_findings(path, i, gcells)
    if bad:
        yield from bad
        return
    extra = sorted(set(gcells) - set(wcells))
    if (want["eligible"] and set(gcells) != set(wcells)) or extra:
        yield differ(["candidates", i, "cells"], "decision-differs", sorted(wcells), sorted(gcells))
    for ck, gc in gcells.items():
        wc = wcells.get(ck)
        if wc is None:
            continue
        if num_differs(gc.get("val_bpb"), wc["val_bpb"]):
            yield differ(["candidates", i, "cells", ck, "val_bpb"], "value-differs", wc["val_bpb"],
                         gc.get("val_bpb"))
        if int_differs(gc.get("rank"), wc["rank"]):
            yield differ(["candidates", i, "cells", ck, "rank"], "rank-differs", wc["rank"], gc.get("rank"))


def _check_key(ch: dict) -> tuple:
    ref = None if ch.get("kind") == "ranks_first_in_all_cells" else ch.get("reference")
    return ch.get("kind"), ch.get("candidate"), ref


def _diff_checks(rchecks: list, wchecks: list, better: str, differ) -> Iterator[Finding]:
    """Checks matched by (kind, candidate, reference), in any order; value per the open forms."""
    unused = list(range(len(rchecks)))
    pairs = []
    for w in wchecks:
        j = next((j for j in unused if _check_key(rchecks[j]) == _check_key(w)), None)
        if j is None:
            yield differ(["checks"], "checks-differ", f"a {w['kind']} check of {w['candidate']}", "none")
            continue
        unused.remove(j)
        pairs.append((j, rchecks[j], w))
    for j in unused:
        yield differ(["checks", j], "checks-differ", "only the checks the rules define",
               f"a {rchecks[j].get('kind')} check of {rchecks[j].get('candidate')}")
    for j, got, want in pairs:
        if not _check_value_matches(got.get("value"), want, better):
            yield differ(["checks", j, "value"], "check-value-differs", want["value"], got.get("value"))
        if want["kind"] != "ranks_first_in_all_cells" and num_differs(got.get("threshold"), want["threshold"]):
            yield differ(["checks", j, "threshold"], "check-value-differs", want["threshold"], got.get("threshold"))
        if got.get("passed") is not want["passed"]:
            yield differ(["checks", j, "passed"], "check-outcome-differs", want["passed"], got.get("passed"))


def _check_value_matches(got, want: dict, better: str) -> bool:
    """The recorded `value` of a check against the replayed one, in either open form (SPEC v1.1)."""
    value = want["value"]
    if want["kind"] == "ranks_first_in_all_cells":
        # null, or the number of first places (0 for an ineligible candidate, which has none)
        return got is None or not num_differs(got, 0.0 if value is None else value)
    if value is None or got is None:
        return got is value
    if not num_differs(got, value):
        return True
    if want["kind"] == "near_equivalence" or better == "higher":
        # |difference| for near_equivalence; for `higher` the SPEC fixes no sign of the gap
        return not num_differs(got, -value)
    return False
