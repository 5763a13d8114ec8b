"""manifests/smoke.toml end to end through the CLI: hosts run apart, merge, verify, replay,
tables and figures --check; one changed byte fails verify (signals and resume: test_signals.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.package.rows import read_csv_text

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "manifests" / "smoke.toml")


def row_keys(pkg: Path) -> list[tuple]:
    out = []
    for p in sorted((pkg / "remote-results").glob("*.csv")):
        out += [(r["config_id"], r["seed"], r["host"], r["stage"]) for r in read_csv_text(p.read_text())[1]]
    return sorted(out)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.slow
def test_hosts_apart_then_merge_then_audit(tmp_path, smoke_local_package):
    a, b, m = tmp_path / "windows", tmp_path / "linux", tmp_path / "merged"
    for host, out in (("windows", a), ("linux", b)):
        r = invoke("protocol", "run", SMOKE, "--out", out, "--host", host, "--no-wait")
        assert r.exit_code == 3, r.output
        assert "waiting:" in r.output and "auditkit protocol merge" in r.output
    r = invoke("protocol", "merge", a, b, "--into", m)
    assert r.exit_code == 0 and "new row(s)" in r.output
    r = invoke("protocol", "run", SMOKE, "--out", m, "--host", "all")
    assert r.exit_code == 0 and "complete:" in r.output, r.output
    assert row_keys(m) == row_keys(smoke_local_package)

    for args in (("verify", m), ("replay-gate", "all", "--package", m), ("tables", "--package", m, "--check"),
                 ("figures", "--package", m, "--check")):
        r = invoke(*args)
        assert r.exit_code == 0, (args, r.output)

    f = sorted((m / "remote-results").glob("linux_*.csv"))[0]
    data = bytearray(f.read_bytes())
    data[-3] = ord("9") if data[-3] != ord("9") else ord("8")
    f.write_bytes(bytes(data))
    r = invoke("verify", m)
    assert r.exit_code == 1 and f"{f.relative_to(m).as_posix()}: file-changed" in r.output


def test_readme_says_how_the_package_was_made(smoke_local_package):
    text = (smoke_local_package / "README.txt").read_text()
    n = len(row_keys(smoke_local_package))
    assert "Produced by `auditkit protocol run smoke.toml`" in text
    assert f"; {n} runs ({n} ok), from 20" in text
    for stage in ("Stages:", "Gates:", "Host profiles:", "auditkit verify ."):
        assert stage in text
