"""Figures: generated from the package, listed in figure_manifest.json, checked by regenerating."""

from __future__ import annotations

import json

from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.derived.figures import check_figures, generate_figures, png_size
from auditkit.package.schemas import schema_errors


def test_smoke_figures_are_listed_and_check(smoke_copy):
    doc = json.loads((smoke_copy / "figure_manifest.json").read_text())
    assert schema_errors(doc, "figure-manifest") == []
    kinds = {f["kind"] for f in doc["figures"]}
    assert kinds == {"rank_across_gates", "val_bpb_vs_budget", "host_scatter"}
    for f in doc["figures"]:
        assert png_size((smoke_copy / f["path"]).read_bytes()) is not None
    assert check_figures(smoke_copy).ok


def test_check_catches_changed_data_and_missing_figure(smoke_copy):
    csv = sorted((smoke_copy / "remote-results").glob("*stage2_final*.csv"))[0]
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    i = header.index("val_bpb")
    cells = lines[1].split(",")
    cells[i] = f"{float(cells[i]) + 0.5:.6f}"
    lines[1] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    (smoke_copy / "figures/rank_across_gates.png").unlink()
    report = check_figures(smoke_copy)
    codes = {f.code for f in report.findings}
    assert "figure-data-differs" in codes and "figure-missing" in codes
    assert report.exit_code == 1


def test_figures_cli(smoke_copy, tmp_path):
    r = CliRunner().invoke(cli, ["figures", "--package", str(smoke_copy), "--check"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["figures", "--package", str(smoke_copy), "--out", str(tmp_path / "f")])
    assert r.exit_code == 0 and (tmp_path / "f/figure_manifest.json").is_file()
    r = CliRunner().invoke(cli, ["figures", "--package", str(tmp_path / "nothing"), "--check"])
    assert r.exit_code == 2 and "no such file or directory" in r.output   # missing, not "no protocol.json"


def test_regenerating_gives_the_same_data(smoke_copy, tmp_path):
    a = generate_figures(smoke_copy, tmp_path / "a")
    b = generate_figures(smoke_copy, tmp_path / "b")
    assert [x["data_sha256"] for x in a] == [x["data_sha256"] for x in b]


def test_check_catches_an_image_of_another_pixel_size(smoke_copy):
    import struct

    doc = json.loads((smoke_copy / "figure_manifest.json").read_text())
    path = smoke_copy / doc["figures"][0]["path"]
    data = path.read_bytes()
    w, h = png_size(data)
    path.write_bytes(data[:16] + struct.pack(">II", w + 1, h) + data[24:])   # the same PNG, its header a pixel wider
    report = check_figures(smoke_copy)
    found = [f for f in report.findings if f.code == "figure-size-differs"]
    assert [f.path for f in found] == [doc["figures"][0]["path"]]
    assert found[0].expected == str((w, h)) and found[0].found == str((w + 1, h))
