"""A gate's frozen rules (SPEC section 5): their vocabulary (check kinds, metric direction), the
numbers a check is decided with (`round9`, `threshold_passes`) and `validate_rules`, every way a
rules document is not usable: schema first, then sense (its ``promoted-by:`` chain bounded by
`auditkit.gates.chain`). Pure; the decision itself is `auditkit.gates.engine`'s.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from enum import Enum
from typing import Collection

from auditkit.findings import Finding, json_location
from auditkit.gates.chain import ChainBound, cycle_path, parent_gate
from auditkit.package.schemas import validate_document


DECIMALS = 9
_QUANTUM = Decimal(1).scaleb(-DECIMALS)


class CheckKind(str, Enum):
    NEAR_EQUIVALENCE = "near_equivalence"
    MEAN_GAP = "mean_gap"
    RANKS_FIRST_IN_ALL_CELLS = "ranks_first_in_all_cells"

    @property
    def thresholded(self) -> bool:
        return self in (CheckKind.NEAR_EQUIVALENCE, CheckKind.MEAN_GAP)


class Better(str, Enum):
    LOWER = "lower"
    HIGHER = "higher"


CHECK_KINDS = tuple(k.value for k in CheckKind)


def round9(x: float | None) -> float | None:
    """`x` rounded half-even to 9 decimals from its shortest decimal repr (SPEC 5.9)."""
    if x is None:
        return None
    return float(Decimal(repr(float(x))).quantize(_QUANTUM, rounding=ROUND_HALF_EVEN))


def threshold_passes(kind: str, value: float | None, threshold: float) -> bool:
    """Outcome of a thresholded check with the (already rounded) `value`; False when no value
    or no finite threshold (rules validation reports the latter)."""
    if value is None or not math.isfinite(float(threshold)):
        return False
    v = Decimal(repr(float(value)))
    t = Decimal(repr(float(threshold)))
    if kind == CheckKind.NEAR_EQUIVALENCE:
        return abs(v) <= t
    if kind == CheckKind.MEAN_GAP:
        return v <= t
    raise ValueError(f"check kind {kind!r} has no threshold")


# --------------------------------------------------------------------------- validation

def validate_rules(doc: dict, path: str, *, known_configs: Collection[str] | None = None,
                   chain: ChainBound | None = None) -> list[Finding]:
    """Every way `doc` is not a usable rules file: schema first, then sense.

    Sense: `frozen_at` a real time; `always_keep` no longer than `top_k`; every config named in
    `always_keep` or a check is a candidate — of the explicit list, of the matrix
    (`known_configs`) or, for ``promoted-by:``, of what the chain (`chain`, see `chain_bound`)
    bounds; the chain ends (a cycle of ``promoted-by:`` is a finding); thresholds finite and
    not negative; known check kinds; no repeated stage, host or seed.  Each finding names its key.
    """
    findings = validate_document(doc, "rules", path)
    if findings:
        return findings

    def bad(loc, code, expected, found, message):
        findings.append(Finding(path=path, code=code, location=json_location(loc),
                                expected=expected, found=found, message=message))

    if not _is_time(doc["frozen_at"]):
        bad(["frozen_at"], "rules-bad-frozen-at", "an ISO-8601 UTC time", repr(doc["frozen_at"]),
            "a freeze time that is no time cannot show that the rules came before the data")
    inputs, promote = doc["inputs"], doc["promote"]
    for key in ("stages", "hosts", "seeds"):
        seen = set()
        for i, v in enumerate(inputs[key]):
            if v in seen:
                bad(["inputs", key, i], "rules-duplicate", "each value once", repr(v), f"a {key[:-1]} is named twice")
            seen.add(v)
    cands = inputs["candidates"]
    known: Collection[str] | None
    if isinstance(cands, list):
        known = set(cands)
        if known_configs is not None:
            for i, c in enumerate(cands):
                if c not in known_configs:
                    bad(["inputs", "candidates", i], "rules-unknown-config", "a config_id of the matrix", c,
                        "the rules name a configuration the matrix does not hold")
    elif cands == "matrix":
        known = known_configs
    else:
        known = chain.configs if chain is not None else None
        if chain is not None and chain.cycle:
            bad(["inputs", "candidates"], "rules-chain-cycle", "a promoted-by chain that ends at the matrix or a list",
                " -> ".join(chain.cycle), "gates that promote each other's candidates decide among nothing")
        elif chain is None and cycle_path((doc["gate"],), parent_gate(cands)) is not None:
            bad(["inputs", "candidates"], "rules-chain-cycle", "a promoted-by chain that ends at the matrix or a list",
                f"{doc['gate']} -> {doc['gate']}", "a gate cannot promote its own candidates")
    keep = promote.get("always_keep", [])
    if len(keep) > promote["top_k"]:
        bad(["promote", "always_keep"], "rules-always-keep-too-long", f"at most top_k={promote['top_k']} entries",
            f"{len(keep)} entries", "more configurations are always kept than top_k promotes")
    if len(set(keep)) != len(keep):
        bad(["promote", "always_keep"], "rules-duplicate", "each config once", repr(keep), "a configuration is always kept twice")
    names = [(["promote", "always_keep", i], c) for i, c in enumerate(keep)]
    for i, check in enumerate(doc["checks"]):
        kind = check["kind"]
        if kind not in CHECK_KINDS:
            bad(["checks", i, "kind"], "rules-unknown-check", f"one of {', '.join(CHECK_KINDS)}", kind,
                "SPEC.md section 5 defines no such check: it has no outcome")
            continue
        names.append((["checks", i, "candidate"], check["candidate"]))
        if "reference" in check:
            names.append((["checks", i, "reference"], check["reference"]))
        if CheckKind(kind).thresholded and not math.isfinite(check["threshold"]):
            bad(["checks", i, "threshold"], "rules-non-finite-threshold", "a finite threshold",
                repr(check["threshold"]), "a check against NaN or infinity has no outcome")
        elif CheckKind(kind).thresholded and check["threshold"] < 0:
            bad(["checks", i, "threshold"], "rules-negative-threshold", "a threshold >= 0",
                repr(check["threshold"]), "a negative bound on a gap that is compared as absolute can never be met")
        if kind != CheckKind.RANKS_FIRST_IN_ALL_CELLS and check.get("reference") == check["candidate"]:
            bad(["checks", i, "reference"], "rules-self-reference", "a reference other than the candidate",
                check["reference"], "a candidate compared with itself passes by construction")
    if known is not None:
        where = ("the gate's candidates" if not isinstance(cands, str) or cands == "matrix"
                 else f"the candidates its chain ({cands}) can bring")
        for loc, c in names:
            if c not in known:
                bad(loc, "rules-not-a-candidate", f"a configuration among {where}", c,
                    "the rules name a configuration that can never be a candidate of this gate")
    return findings


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
