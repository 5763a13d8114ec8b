"""Replay and tables against package size, in one run.

    python benchmarks/replay_scale.py                 # ~100, 10k, 100k, 1M run rows
    python benchmarks/replay_scale.py --max-rows 100000

For each size a synthetic package (`fixtures.synth`) is generated once, then
each measured step runs in a fresh subprocess so its peak RSS is its own:
`replay_all` (every gate: hashes, freeze, chain, recompute, diff),
`generate_tables` and `check_tables`.  Goals: the reference-size package
(~100 rows) well under a second; 1 million rows under 10 s; memory growing no
faster than the rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures.synth

from tabulate import tabulate

# (configs, hosts, seeds) -> run rows (SynthShape.rows)
SHAPES = [(12, 2, 2), (250, 4, 9), (2500, 4, 9), (5000, 4, 49)]

STEP = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from auditkit.gates.replay import replay_all
from auditkit.derived.tables import check_tables, generate_tables
t1 = time.perf_counter()
step, pkg = sys.argv[1], sys.argv[2]
if step == "replay":
    rs = replay_all(pkg)
    ok = all(r.identical for r in rs)
elif step == "tables":
    generate_tables(pkg, sys.argv[3])
    ok = True
else:
    ok = check_tables(pkg).ok
t2 = time.perf_counter()
def peak_mb():
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak over exec on Linux
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": t2 - t1, "import": t1 - t0, "ok": ok, "rss_mb": peak_mb()}))
"""


def measure(step: str, pkg: Path, scratch: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", STEP, step, str(pkg), str(scratch)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main(argv=None) -> None:
    from fixtures.synth import SynthShape, make_package

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-rows", type=int, default=1_050_000)
    ap.add_argument("--workdir", help="keep packages here (default: a temporary directory)")
    a = ap.parse_args(argv)
    base = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="replay_scale-"))
    table = []
    for configs, hosts, seeds in SHAPES:
        shape = SynthShape(configs=configs, hosts=hosts, seeds=seeds)
        if shape.rows() > a.max_rows:
            continue
        pkg = base / f"pkg-{shape.rows()}"
        t = time.perf_counter()
        if not (pkg / "MANIFEST.json").exists():
            make_package(pkg, shape)
        gen = time.perf_counter() - t
        csv_mb = sum(p.stat().st_size for p in (pkg / "remote-results").iterdir()) / 1e6
        dec_mb = sum(p.stat().st_size for p in (pkg / "analysis").glob("*_decision.json")) / 1e6
        res = {s: measure(s, pkg, base / "tables-out") for s in ("replay", "tables", "check")}
        table.append([shape.rows(), f"{configs}x{hosts}x{seeds}", f"{csv_mb:.1f}", f"{dec_mb:.1f}",
                      *(f"{res[s]['seconds']:.3f}" for s in res), *(f"{res[s]['rss_mb']:.0f}" for s in res),
                      "yes" if all(r["ok"] for r in res.values()) else "NO", f"{gen:.1f}"])
        print(f"done {shape.rows()} rows", file=sys.stderr, flush=True)
    print(tabulate(table, headers=["rows", "configs x hosts x seeds", "csv MB", "decisions MB", "replay s",
                                   "tables s", "check s", "replay RSS MB", "tables RSS MB", "check RSS MB",
                                   "ok", "generate s"], disable_numparse=True))
    print(f"(python {sys.version.split()[0]}; seconds exclude interpreter start and imports; packages in {base})")


if __name__ == "__main__":
    main()
