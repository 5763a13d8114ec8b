"""The reviewer's report: data, Markdown, and the HTML page loaded in a real headless Chromium with
the network cut — key elements present, no request leaves the file, the screenshot is not blank.

Needs Debian's `chromium` (scripts/bootstrap.sh installs it when run as root) and the `playwright`
Python package (the `test` extra); the test fails, never skips, when either is missing.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest

from auditkit.package.manifest import build_manifest
from auditkit.report.build import build_report
from auditkit.report.html import render_html
from auditkit.report.markdown import render_markdown
from fixtures.paperpkg import build_paper_package
from fixtures.pkgbuild import set_cell

DATA = Path(__file__).resolve().parent / "data"
CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def paper_pkg(tmp_path_factory) -> Path:
    p = build_paper_package(tmp_path_factory.mktemp("report") / "pkg", figures=True)
    shutil.copy(DATA / "paper06_claims.json", p / "claims.json")
    build_manifest(p)
    return p


@pytest.fixture(scope="module")
def report(paper_pkg) -> dict:
    evidence = {"stage3": {"level": "timestamped", "time": "2026-04-29T08:00:00Z", "authority": "test TSA"}}
    return build_report(paper_pkg, generated_at="2026-05-03T10:00:00Z", freeze_evidence=evidence)


def test_report_data(report, paper_pkg):
    assert report["ok"] is True
    assert [(v["check"], v["status"]) for v in report["verdicts"]] == [
        ("verify", "OK"), ("re-evaluation", "not run"), ("replay", "OK"), ("tables", "OK"), ("figures", "OK"),
        ("claims", "OK")]
    assert "--deep" in report["verdicts"][1]["summary"]
    root = json.loads((paper_pkg / "MANIFEST.json").read_text())["root"]
    assert report["root"] == {"recorded": root, "computed": root}
    stage2 = next(g for g in report["gates"] if g["gate"] == "stage2")
    states = {c["config_id"]: c["state"] for c in stage2["candidates"]}
    assert states == {"bridge": "promoted", "greedy": "promoted", "d8_ar48": "promoted", "s01_d8_ar64": "eliminated"}
    s01 = next(c for c in stage2["candidates"] if c["config_id"] == "s01_d8_ar64")
    assert s01["reason"] == "eliminated: rank 4 of 4 eligible, below the cut top_k=3"
    assert s01["robustness"] is None   # 2 cells per host: P(promoted) is refused, with the reason
    assert stage2["robustness"]["note"].startswith("refused: 2 cell(s) per host")
    # the page leads with what the data support: every check's call, a forest plot per gate with a gap
    sup = report["support"]
    assert sup["level"] == 0.95 and len(sup["checks"]) == sum(len(g["checks"]) for g in report["gates"])
    assert {c["call"] for c in sup["checks"]} <= {"pass", "fail", "undetermined"}
    assert [f["gate"] for f in sup["forests"]] == ["stage3"]   # the paper puts its thresholded checks at the final gate
    assert all(c["call"] in ("held", "not_held", "undetermined") for c in report["claims"])
    assert stage2["cells"] == ["linux/44", "linux/45", "windows/44", "windows/45"]
    assert stage2["frozen_at"] == "2026-04-27T08:00:00Z" and stage2["first_input_started_at"] > stage2["frozen_at"]
    assert [g["freeze_evidence"] for g in report["gates"]][-1]["level"] == "timestamped"
    assert len(report["claims"]) == 12 and {c["outcome"] for c in report["claims"]} == {"held"}
    assert len(report["figures"]) == 10 and all(f["data_uri"].startswith("data:image/png;base64,")
                                                for f in report["figures"])
    assert set(report["environment"]) >= {"auditkit", "python", "platform", "numpy", "scipy"}
    json.dumps(report)   # JSON-ready


def test_a_broken_package_is_reported_with_findings_and_reasons(paper_pkg, tmp_path):
    pkg = Path(shutil.copytree(paper_pkg, tmp_path / "pkg"))
    (pkg / "figure_manifest.json").unlink()   # the figures are checked in test_report_data
    rel = "remote-results/windows_stage2_60min_seed44_gate4_summary.csv"
    lines = (pkg / rel).read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if ",greedy," in line)
    set_cell(pkg / rel, row, "status", "diverged")
    set_cell(pkg / rel, row, "val_bpb", "")
    data = build_report(pkg, figures=False)
    assert data["ok"] is False
    verdicts = {v["check"]: v["status"] for v in data["verdicts"]}
    assert verdicts["verify"] == "FAILED" and verdicts["replay"] == "FAILED" and verdicts["figures"] == "FAILED"
    # greedy has no 60-minute mean now, so the near-equivalence check FAILs as the paper says
    assert verdicts["claims"] == "OK"
    stage2 = next(g for g in data["gates"] if g["gate"] == "stage2")
    greedy = next(c for c in stage2["candidates"] if c["config_id"] == "greedy")
    assert greedy["state"] == "ineligible" and greedy["reason"] == "ineligible: windows/44 diverged"
    assert not stage2["identical"]
    html = render_html(data)
    assert "ineligible: windows/44 diverged" in html and "FAILED" in html
    md = render_markdown(data)
    assert "**Overall: FAILED**" in md and "ineligible: windows/44 diverged" in md


def test_markdown(report):
    md = render_markdown(report)
    assert md.startswith("# auditkit report: paper06\n")
    assert re.search(r"\| verify +\| OK ", md) and re.search(r"\| re-evaluation +\| not run ", md)
    assert "**bridge-first-all-cells-60min**" in md
    assert md.index("## What the data support (at 0.95)") < md.index("## Verdicts")
    assert "### gate stage2 — replays identically" in md
    assert "Freeze evidence: **timestamped**: timestamped 2026-04-29T08:00:00Z by test TSA" in md
    assert "data:image" not in md


def test_html_escapes_what_it_shows(report):
    data = json.loads(json.dumps(report))
    data["name"] = "<script>alert(1)</script>"
    html = render_html(data)
    assert "<script>" not in html and "&lt;script&gt;" in html


def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]' (it drives the system chromium)")
    if not CHROMIUM.is_file():
        pytest.fail("chromium is missing (not on PATH, not at /usr/bin/chromium): run scripts/bootstrap.sh as root, or "
                    "apt-get install chromium (Debian); this test is not skipped")
    return sync_playwright


def test_html_in_headless_chromium_with_the_network_cut(report, tmp_path):
    sync_playwright = _browser()
    page_path = tmp_path / "report.html"
    page_path.write_text(render_html(report), encoding="utf-8")
    shot = tmp_path / "report.png"
    requests, blocked = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            ctx = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = ctx.new_page()

            def route(r):
                requests.append(r.request.url)
                if r.request.url == page_path.as_uri():
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("request", lambda req: None if req.url.startswith(("data:", "file:")) else blocked.append(req.url))
            page.goto(page_path.as_uri(), wait_until="load")
            assert page.title() == "auditkit report: paper06"
            assert page.inner_text("#overall").startswith("Overall:")
            assert "OK" in page.inner_text("#overall")
            assert page.locator("tr.verdict").count() == 6   # the five checks, and --deep said not run
            # what the data support comes first, with a decoded forest plot
            assert page.eval_on_selector("#support", "e => e.compareDocumentPosition(document.querySelector("
                                         "'#verdicts')) & Node.DOCUMENT_POSITION_FOLLOWING") != 0
            assert page.locator("#support table.support-claims tr[data-call]").count() == 12
            assert page.eval_on_selector("#forest-stage3 img", "e => e.naturalWidth") > 300
            assert page.locator("tr.claim[data-outcome=held]").count() == 12
            assert page.locator("article.gate").count() == 4
            stage2 = page.locator("#gate-stage2")
            assert stage2.locator("tr.promoted").count() == 3
            assert stage2.locator("tr.eliminated").count() == 1
            assert "below the cut top_k=3" in stage2.locator("tr.eliminated .reason").inner_text()
            assert page.locator("#gate-stage3 .freeze-level").inner_text() == "timestamped"
            # the 0.010/0.020 rules sit at the final gate (manifests/paper06_transcription.toml)
            assert "near_equivalence" not in stage2.locator("table.checks").inner_text()
            final_checks = page.locator("#gate-stage3").locator("table.checks").inner_text()
            assert "near_equivalence\tgreedy\tbridge" in final_checks and "mean_gap\td8_ar48\tbridge" in final_checks
            assert page.locator("#root-hash").inner_text().count(report["root"]["computed"]) == 2
            imgs = page.locator("#figures img")
            assert imgs.count() == 10
            widths = page.eval_on_selector_all("#figures img", "els => els.map(e => e.naturalWidth)")
            assert all(w > 100 for w in widths), widths   # decoded from their data: URIs
            assert "python" in page.inner_text("#environment")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert requests == [page_path.as_uri()], requests
    assert blocked == []
    from matplotlib import image

    pixels = image.imread(io.BytesIO(shot.read_bytes()))
    assert pixels.shape[0] > 2000 and pixels.shape[1] == 1280
    assert pixels.std() > 0.05                     # not a blank page
    assert len({tuple(p) for p in pixels[::25, ::25, :3].reshape(-1, 3).round(2).tolist()}) > 20
