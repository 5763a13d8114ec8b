"""Text of one replayed gate, as `replay-gate -v` prints it: candidates x cells, checks, the freeze
beside the first input row, the uncertainty calls when asked for, the verdict (`render_gate`), and why
each candidate was promoted or not (`render_why`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from auditkit.gates.replay import GateReplay


def render_gate(r: GateReplay) -> str:
    """Text for one replayed gate: candidates x cells, checks, verdict."""
    from tabulate import tabulate

    from auditkit.text import printable

    lines = [f"== gate {r.gate} =="]
    doc = r.replayed_doc() or r.recorded
    if doc is not None:
        keys = [f"{h}/{s}" for h, s in doc["cells"]]
        promoted = set(doc["promoted"])
        rows = []
        for c in doc["candidates"]:
            row = [("*" if c["config_id"] in promoted else "") + c["config_id"], c.get("rank") or "-"]
            for k in keys:
                cell = (c.get("cells") or {}).get(k, {})
                v = cell.get("val_bpb")
                row.append("-" if v is None else f"{v:.6f} ({cell.get('rank') or cell.get('status', '-')})")
            row.append("-" if c.get("mean") is None else f"{c['mean']:.6f}")
            rows.append(row)
        lines += tabulate([[printable(c) for c in row] for row in rows],
                          headers=[printable(h) for h in ["candidate", "rank", *keys, "mean"]], tablefmt="simple",
                          disable_numparse=True).splitlines()
        lines.append(f"promoted (*): {', '.join(doc['promoted']) or '(none)'}")
        for ch in doc["checks"]:
            ref = f" vs {ch['reference']}" if ch.get("reference") else ""
            val = "-" if ch.get("value") is None else (f"{ch['value']:.9f}" if ch["kind"] != "ranks_first_in_all_cells"
                                                       else f"{int(ch['value'])}/{len(keys)} cells")
            thr = "" if ch.get("threshold") is None else f" (threshold {ch['threshold']})"
            outcome = "pass" if ch["passed"] else "FAIL (an outcome the study recorded, not a problem)"
            lines.append(f"check {ch['kind']} {ch['candidate']}{ref}: {val}{thr} -> {outcome}")
    summary = r.summary()
    if summary["frozen_at"] and summary["first_input_started_at"]:
        rel = {True: "before", False: "NOT before", None: "?"}[summary["frozen_before_data"]]
        lines.append(f"frozen_at {summary['frozen_at']} {rel} the first input row's start "
                     f"{summary['first_input_started_at']}")
    if r.uncertainty is not None:
        from auditkit.stats.uncertainty import render_calls

        lines.extend(render_calls(r.uncertainty))
    if r.identical:
        lines.append(f"verdict: identical — gate {r.gate} replays to its recorded decision")
    else:
        lines.append(f"verdict: DIFFERS — {len(r.findings)} difference(s), listed below")
    return "\n".join(printable(line) for line in lines)  # package text: one line each, no terminal control


def render_why(r: GateReplay) -> str | None:
    """The "why" lines of a replayed gate (`auditkit.gates.reasons`: why each candidate was promoted,
    eliminated or ineligible), from the engine's result; None when the gate was not recomputed."""
    from auditkit.gates.reasons import reasons
    from auditkit.text import printable

    if r.decision is None or r.rules is None:
        return None
    why = reasons(r.decision, r.rules)
    return "why:\n" + "\n".join(printable(f"  {c.config_id}: {why[c.config_id]}") for c in r.decision.candidates)
