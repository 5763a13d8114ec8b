"""Figures a reviewer reads at a glance: promoted vs eliminated marked, the data floor drawn, hosts
labelled with their profile, one colour+marker per candidate, no label over another."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from auditkit.derived.figure_draw import candidate_styles as _styles
from auditkit.derived.figure_draw import png_size, render, rendered_size
from auditkit.derived.figure_draw import draw
from auditkit.derived.figures import figure_data, host_labels
from fixtures.paperpkg import build_paper_package


@pytest.fixture(scope="module")
def paper_pkg(tmp_path_factory) -> Path:
    return build_paper_package(tmp_path_factory.mktemp("figs") / "pkg")


def figs(pkg: Path) -> dict[str, dict]:
    return {f["id"]: f for f in figure_data(pkg)}


def test_promoted_and_eliminated_are_in_the_plotted_data(paper_pkg):
    f = figs(paper_pkg)
    assert f["rank_across_gates"]["data"]["promoted"]["stage2"] == ["bridge", "greedy", "d8_ar48"]
    hs = f["host_scatter_stage2_60min_seed44_gate4"]["data"]
    assert hs["gate"] == "stage2" and hs["promoted"] == ["bridge", "greedy", "d8_ar48"]
    assert "gate" not in f["host_scatter_stage0"]["data"]   # no gate reads the smoke stage


def test_eliminated_points_are_drawn_hollow_and_ringed(paper_pkg):
    import matplotlib.pyplot as plt

    fig = draw(figs(paper_pkg)["host_scatter_stage2_60min_seed44_gate4"])
    try:
        ax = fig.axes[0]
        faces = {}
        for coll in ax.collections:
            label = coll.get_label()
            faces[label] = coll.get_facecolors()
        assert faces["s01_d8_ar64 (eliminated)"].size == 0 or faces["s01_d8_ar64 (eliminated)"][0][3] == 0
        assert faces["bridge"][0][3] == 1.0
    finally:
        plt.close(fig)
    fig = draw(figs(paper_pkg)["rank_across_gates"])
    try:
        rings = [c for c in fig.axes[0].collections if c.get_label() == "eliminated at this gate"]
        assert len(rings) == 1 and len(rings[0].get_offsets()) == 3 + 5 + 1 + 2   # top9, stage1, stage2, stage3
    finally:
        plt.close(fig)


def test_hosts_are_labelled_with_their_profile(paper_pkg, tmp_path):
    assert host_labels(paper_pkg, ["windows", "linux"]) == {"windows": "windows (cuda, A100)",
                                                            "linux": "linux (cuda, L40S)"}
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    proto = json.loads((pkg / "protocol.json").read_text())
    proto["host_profiles"] = {"windows": {"device": "cpu", "threads": 2}, "linux": {"device": "cpu", "threads": 1}}
    (pkg / "protocol.json").write_text(json.dumps(proto))
    assert host_labels(pkg, ["windows", "linux", "mac"]) == {"windows": "windows (2 threads)",
                                                             "linux": "linux (1 thread)", "mac": "mac"}
    assert figs(pkg)["host_scatter_stage1_5min"]["data"]["host_labels"] == ["windows (2 threads)", "linux (1 thread)"]
    (pkg / "README.txt").write_text("nothing about hosts\n")
    proto.pop("host_profiles")
    (pkg / "protocol.json").write_text(json.dumps(proto))
    assert host_labels(pkg, ["windows"]) == {"windows": "windows"}


def test_the_data_floor_is_drawn_where_rows_report_one(paper_pkg, tmp_path):
    import matplotlib.pyplot as plt

    assert "floor_bpb" not in figs(paper_pkg)["val_bpb_vs_budget"]["data"]
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    for p in (pkg / "remote-results").glob("*.csv"):
        lines = p.read_text().splitlines()
        p.write_text("\n".join([lines[0] + ",floor_bpb"] + [x + ",0.912345" for x in lines[1:]]) + "\n")
    f = figs(pkg)["val_bpb_vs_budget"]
    assert f["data"]["floor_bpb"] == [0.912345]
    fig = draw(f)
    try:
        ax = fig.axes[0]
        floor = [ln for ln in ax.get_lines() if ln.get_label().startswith("data floor")]
        assert len(floor) == 1 and floor[0].get_ydata()[0] == 0.912345
        assert ax.get_ylim()[0] < 0.912345   # inside the plot, not on its edge
    finally:
        plt.close(fig)


def test_one_colour_and_marker_per_candidate_and_neighbours_differ():
    ids = [f"c{i:02d}" for i in range(30)]
    st = _styles(ids)
    looks = [(s["color"], s["marker"]) for s in st.values()]
    assert len(set(looks)) == len(ids)
    for a, b in zip(ids, ids[1:]):
        ca, cb = st[a]["color"], st[b]["color"]
        assert st[a]["marker"] != st[b]["marker"]
        assert max(abs(x - y) for x, y in zip(ca, cb)) > 0.15, (a, b)   # not the same hue's light twin


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_no_label_overlaps_another_or_the_plot(paper_pkg):
    import matplotlib.pyplot as plt

    wanted = {"rank_across_gates", "val_bpb_vs_budget", "host_scatter_stage1_10min_seed43_top9"}  # longest labels
    for f in (f for f in figure_data(paper_pkg) if f["id"] in wanted):
        fig = draw(f)
        try:
            fig.canvas.draw()
            r = fig.canvas.get_renderer()
            ax = fig.axes[0]
            legend = ax.get_legend().get_window_extent(r)
            assert not _boxes_overlap(legend, ax.get_window_extent(r)), f["id"]
            fw, fh = fig.bbox.width, fig.bbox.height
            assert legend.x1 <= fw + 1 and legend.y0 >= -1 and legend.y1 <= fh + 1, f["id"]
            ticks = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()]
            for a, b in itertools.combinations(ticks, 2):
                assert not _boxes_overlap(a, b), (f["id"], "x tick labels overlap")
            title = ax.title.get_window_extent(r)
            assert title.x0 >= -1 and title.x1 <= fw + 1, (f["id"], "title leaves the image")
        finally:
            plt.close(fig)


def test_every_kind_renders_at_the_size_check_figures_expects_without_drawing(paper_pkg):
    # `figures --check` compares a recorded PNG's pixel size with `rendered_size()` instead of drawing
    # the figure again: that holds only while no figure's layout changes the canvas size
    by_kind = {}
    for f in figure_data(paper_pkg):
        by_kind.setdefault(f["kind"], f)
    assert set(by_kind) == {"rank_across_gates", "val_bpb_vs_budget", "host_scatter"}
    for f in by_kind.values():
        assert png_size(render(f)) == rendered_size(), f["kind"]
