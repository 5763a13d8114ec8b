"""Why each candidate of a gate was promoted or not: a pure function over the engine's decision.

`reasons(decision, rules)` reads a `rules.Decision` (what `decide` returns);
`reasons_of_document(doc, rules)` reads a decision document (SPEC section 6, what
a package records or `replay` recomputes). Both give the same sentences:

- ``promoted: rank 2 of 4 eligible, within top_k=3``
- ``promoted by always_keep: rank 4 of 4 eligible, below the cut top_k=3``
- ``eliminated: rank 2 of 4 eligible is within top_k=3, but always_keep took the slot: bridge (rank 4)``
- ``eliminated: rank 5 of 9 eligible, below the cut top_k=4``
- ``ineligible: windows/46 missing; linux/47 diverged``

No I/O; the result depends only on the candidates' eligibility, overall ranks, the
promoted list and the rules' ``promote`` block.
"""

from __future__ import annotations

from typing import NamedTuple

from auditkit.gates.engine import Decision


class _Candidate(NamedTuple):
    config_id: str
    eligible: bool
    rank: int | None
    ineligible: str   # why ineligible, as the engine words it


def reasons(decision: Decision, rules: dict) -> dict[str, str]:
    """config_id -> why it was promoted, eliminated or ineligible at this gate."""
    cands = [_Candidate(c.config_id, c.eligible, c.rank, c.reason) for c in decision.candidates]
    return _reasons(cands, decision.promoted, rules)


def reasons_of_document(doc: dict, rules: dict) -> dict[str, str]:
    """`reasons` for a decision document (SPEC section 6). A writer other than auditkit may
    leave out ``ineligible``; the cells' statuses (or their absence) then say why."""
    keys = [f"{h}/{s}" for h, s in doc.get("cells", [])]
    cands = []
    for c in doc.get("candidates", []):
        why = c.get("ineligible") or ""
        if not c.get("eligible") and not why:
            cells = c.get("cells") or {}
            parts = []
            for k in keys:
                cell = cells.get(k)
                if cell is None:
                    parts.append(f"{k} missing")
                elif cell.get("status", "ok") != "ok":
                    parts.append(f"{k} {cell['status']}")
                elif cell.get("val_bpb") is None:
                    parts.append(f"{k} metric not finite")
            why = "; ".join(parts) or "recorded as ineligible"
        cands.append(_Candidate(c["config_id"], bool(c.get("eligible")), c.get("rank"), why))
    return _reasons(cands, tuple(doc.get("promoted", [])), rules)


def _reasons(cands: list[_Candidate], promoted: tuple[str, ...], rules: dict) -> dict[str, str]:
    top_k = int(rules["promote"]["top_k"])
    keep = list(rules["promote"].get("always_keep", []))
    eligible = sorted((c for c in cands if c.eligible), key=lambda c: (c.rank, c.config_id))
    n = len(eligible)
    chosen = set(promoted)
    # always_keep members that took a slot the ranking alone would not have given them
    kept_below = [c for c in eligible if c.config_id in keep and c.config_id in chosen and c.rank > top_k]
    out = {}
    for c in cands:
        cid = c.config_id
        if not c.eligible:
            text = f"ineligible: {c.ineligible or 'not every cell has an ok run'}"
            if cid in keep:
                text += " (always_keep promotes only eligible candidates)"
        elif cid in chosen:
            if cid in keep and c.rank > top_k:
                text = f"promoted by always_keep: rank {c.rank} of {n} eligible, below the cut top_k={top_k}"
            else:
                text = f"promoted: rank {c.rank} of {n} eligible, within top_k={top_k}"
                if cid in keep:
                    text += " (also in always_keep)"
        elif c.rank <= top_k:
            who = ", ".join(f"{k.config_id} (rank {k.rank})" for k in kept_below)
            text = (f"eliminated: rank {c.rank} of {n} eligible is within top_k={top_k}, but always_keep took "
                    f"the slot: {who or 'see the rules'}")
        else:
            text = f"eliminated: rank {c.rank} of {n} eligible, below the cut top_k={top_k}"
            if kept_below:
                text += f" ({len(kept_below)} slot(s) held by always_keep: " \
                        + ", ".join(k.config_id for k in kept_below) + ")"
        out[cid] = text
    return out
