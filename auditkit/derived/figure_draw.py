"""Drawing a figure: its matplotlib `Figure` (`draw`) laid out from the figure's data, its PNG bytes
(`render`), one colour and marker per candidate (`candidate_styles`), a PNG's pixel size (`png_size`) and the one `render` gives
(`rendered_size`).
matplotlib is imported only when a figure is drawn (it is an extra)."""

from __future__ import annotations

import importlib.util
import io
import struct

from auditkit.errors import AuditError

DPI = 100
SIZE = (7.0, 4.5)


_MARKERS = "os^Dv<>pPX*h"


def plotted_candidates(fig: dict) -> list[str]:
    d = fig["data"]
    if fig["kind"] == "rank_across_gates":
        return sorted(d["ranks"])
    if fig["kind"] == "val_bpb_vs_budget":
        return sorted(d["series"])
    return sorted(p[0] for p in d.get("points", []))


# tab20's ten dark hues first, then their light partners: neighbours in the legend never share a hue
_COLOUR_ORDER = tuple(range(0, 20, 2)) + tuple(range(1, 20, 2))


def candidate_styles(candidates: list[str]) -> dict[str, dict]:
    """A colour and a marker per candidate: twenty colours (ten hues, dark then light), and markers
    that change with every candidate and shift every twenty, so no two candidates of a figure look
    alike and no two neighbours share a hue or a marker."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return {cid: {"color": cmap(_COLOUR_ORDER[i % 20]), "marker": _MARKERS[(i // 20 + i) % len(_MARKERS)],
                  "markersize": 5}
            for i, cid in enumerate(candidates)}


def render(fig: dict) -> bytes:
    """PNG bytes of one figure."""
    import matplotlib.pyplot as plt

    f = draw(fig)
    buf = io.BytesIO()
    f.savefig(buf, format="png", metadata={"Software": None})
    plt.close(f)
    return buf.getvalue()


def draw(fig: dict):
    """The matplotlib Figure of one figure's data, laid out (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "auditkit"
    f, ax = plt.subplots(figsize=SIZE, dpi=DPI)
    d = fig["data"]
    styles = candidate_styles(plotted_candidates(fig))
    if fig["kind"] == "rank_across_gates":
        gates = d["gates"]
        promoted = d.get("promoted", {})
        out_x, out_y = [], []
        for cid, by_gate in d["ranks"].items():
            xs = [i for i, g in enumerate(gates) if by_gate.get(g) is not None]
            ax.plot(xs, [by_gate[gates[i]] for i in xs], label=cid, **styles[cid])
            for i in xs:
                if gates[i] in promoted and cid not in promoted[gates[i]]:
                    out_x.append(i)
                    out_y.append(by_gate[gates[i]])
        if out_x:
            ax.scatter(out_x, out_y, s=130, facecolors="none", edgecolors="black", linewidths=1.0, zorder=4,
                       label="eliminated at this gate")
        long = max((len(g) for g in gates), default=0) > 10
        ax.set_xticks(range(len(gates)), gates, rotation=20 if long else 0, ha="right" if long else "center")
        ax.invert_yaxis()
        ax.set_ylabel("overall rank at gate (1 = best)")
        ax.set_title("Rank of each candidate across gates")
    elif fig["kind"] == "val_bpb_vs_budget":
        budgets = sorted({p[2] for pts in d["series"].values() for p in pts})
        kinds = sorted({p[1] for pts in d["series"].values() for p in pts})
        for cid, pts in d["series"].items():
            ax.plot([p[2] for p in pts], [p[3] for p in pts], label=cid, **styles[cid])
        floors = d.get("floor_bpb", [])
        for floor in floors:
            ax.axhline(floor, color="black", linestyle=":", linewidth=1.0, label=f"data floor {floor:.3f} (floor_bpb)")
        if floors:
            lo, hi = ax.get_ylim()
            ax.set_ylim(min(lo, min(floors) - 0.03 * (hi - lo)), hi)
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])   # the stages' budgets, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel("stage budget (" + " / ".join(kinds) + ", log scale)")
        ax.set_ylabel("mean val_bpb (lower is better)")
        ax.set_title("val_bpb against budget")
    elif fig["kind"] == "host_scatter":
        xs = [p[1] for p in d["points"]]
        ys = [p[2] for p in d["points"]]
        promoted = d.get("promoted")
        for cid, x, y in d["points"]:
            st = styles[cid]
            hollow = promoted is not None and cid not in promoted
            ax.scatter([x], [y], marker=st["marker"], zorder=3, s=40,
                       facecolors="none" if hollow else st["color"], edgecolors=st["color"], linewidths=1.2,
                       label=cid + (" (eliminated)" if hollow else ""))
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], linestyle="--", linewidth=0.8, color="0.5", label="equal on both hosts")
        names = d.get("host_labels", d["hosts"])
        ax.set_xlabel(f"{names[0]}: mean val_bpb")
        ax.set_ylabel(f"{names[1]}: mean val_bpb")
        title = f"Host against host, {d['stage']}"
        if promoted is not None:
            title += f"\nfilled: promoted at gate {d['gate']}; hollow: eliminated there"
        ax.set_title(title, fontsize=10)
    else:
        raise AuditError(f"unknown figure kind {fig['kind']!r}")
    n = len(ax.get_legend_handles_labels()[1])
    ax.legend(fontsize=7, ncol=1 if n <= 16 else 2, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(True, linewidth=0.3, alpha=0.5)
    f.tight_layout()
    return f


def rendered_size() -> tuple[int, int]:
    """The pixel size (width, height) `render` gives every figure: `SIZE` inches at `DPI` (it saves the
    whole canvas, without a tight bounding box, so no layout changes it), known without drawing.
    ModuleNotFoundError without matplotlib, as `render` raises."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")
    return round(SIZE[0] * DPI), round(SIZE[1] * DPI)


def png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])
