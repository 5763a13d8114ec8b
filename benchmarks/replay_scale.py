"""Replay and tables against package size, in one run: medians, peak memory, the load average.

    python benchmarks/replay_scale.py                          # ~100, 10k, 100k, 1M run rows
    python benchmarks/replay_scale.py --max-rows 100000 --repeat 5
    python benchmarks/replay_scale.py --min-rows 1000000 --steps replay --baseline /tmp/auditkit-old

For each size a synthetic package (`fixtures.synth`) is generated once, then each measured
step runs `--repeat` times, each in a fresh subprocess so its peak RSS is its own:
`replay_all` (every gate: hashes, freeze, chain, recompute, compare), `uncertainty` (`replay_all`
and every check's interval and call, as `replay-gate --json` does), `generate_tables` and
`check_tables` (`tables --check`). Reported: the median seconds (imports excluded), the median
CPU seconds of the process (what a loaded machine changes least) and the largest peak RSS.
With `--baseline DIR` (the root of another auditkit source tree, e.g. `git archive <commit>`
unpacked there) every step also runs from that tree, interleaved with this one, and the ratio
of the medians is printed: both measured in the same minutes, under the same load.

Goals: 1,001,372 rows replayed in at most 5 s with peak RSS at most 500 MB (issue 10), and
`tables --check` of them in at most 10 s and 1 GB (issue 21), on the project's 2-core machine. Timings depend on what else runs: the load averages at the
start and the end are printed; compare only numbers taken at a low load, or ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures.synth

from tabulate import tabulate

# (configs, hosts, seeds) -> run rows (SynthShape.rows): 100, 10,008, 100,008, 1,001,372
SHAPES = [(12, 2, 2), (250, 4, 9), (2500, 4, 9), (5000, 4, 49)]
STEPS = ("replay", "uncertainty", "tables", "check")

STEP = r"""
import json, resource, sys, time
t0 = time.perf_counter()
c0 = time.process_time()
from auditkit.gates.replay import replay_all
t1 = time.perf_counter()
c1 = time.process_time()
step, pkg = sys.argv[1], sys.argv[2]
if step == "replay":
    rs = replay_all(pkg)
    ok = all(r.identical for r in rs)
elif step == "uncertainty":   # what `replay-gate all --json` does: replay, then every check's interval and call
    from auditkit.gates.replay import attach_uncertainty
    rs = replay_all(pkg)
    attach_uncertainty(pkg, rs, 0.95)
    ok = all(r.identical for r in rs)
elif step == "tables":
    from auditkit.derived.tables import generate_tables
    t1, c1 = time.perf_counter(), time.process_time()
    generate_tables(pkg, sys.argv[3])
    ok = True
else:
    from auditkit.derived.tables import check_tables
    t1, c1 = time.perf_counter(), time.process_time()
    ok = check_tables(pkg).ok
t2, c2 = time.perf_counter(), time.process_time()
def peak_mb():
    # VmHWM starts afresh at exec; ru_maxrss would carry the parent's peak over exec on Linux
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": t2 - t1, "cpu": c2 - c1, "import": t1 - t0, "ok": ok, "rss_mb": peak_mb()}))
"""


def measure(step: str, pkg: Path, scratch: Path, source: Path | None = None) -> dict:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", STEP, step, str(pkg), str(scratch)], check=True,
                         capture_output=True, text=True, env=env, cwd=str(source or Path.cwd()))
    return json.loads(out.stdout)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-rows", type=int, default=1_050_000)
    ap.add_argument("--min-rows", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each step (median reported)")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated, of: " + ", ".join(STEPS))
    ap.add_argument("--baseline", type=Path, help="another auditkit source tree: its replay runs beside this one")
    ap.add_argument("--workdir", help="keep packages here (default: a temporary directory)")
    a = ap.parse_args(argv)
    steps = [s for s in a.steps.split(",") if s]
    base = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="replay_scale-"))
    try:
        run(a, steps, base)
    finally:
        if not a.workdir:            # a temporary directory this run made: removed, packages and all
            shutil.rmtree(base, ignore_errors=True)


def run(a, steps: list[str], base: Path) -> None:
    from fixtures.synth import SynthShape, make_package

    print(f"load average (1/5/15 min) at the start: {load()}", flush=True)
    table = []
    for configs, hosts, seeds in SHAPES:
        shape = SynthShape(configs=configs, hosts=hosts, seeds=seeds)
        if not a.min_rows <= shape.rows() <= a.max_rows:
            continue
        pkg = base / f"pkg-{shape.rows()}"
        t = time.perf_counter()
        if not (pkg / "MANIFEST.json").exists():
            make_package(pkg, shape)
        gen = time.perf_counter() - t
        csv_mb = sum(p.stat().st_size for p in (pkg / "remote-results").iterdir()) / 1e6
        dec_mb = sum(p.stat().st_size for p in (pkg / "analysis").glob("*_decision.json")) / 1e6
        runs: dict[str, list[dict]] = {s: [] for s in steps}
        old: dict[str, list[dict]] = {s: [] for s in steps}
        for _ in range(a.repeat):
            for s in steps:
                runs[s].append(measure(s, pkg, base / "tables-out"))
                if a.baseline is not None:
                    old[s].append(measure(s, pkg, base / "tables-out", a.baseline))
        row = [f"{shape.rows():,}", f"{configs}x{hosts}x{seeds}", f"{csv_mb:.1f}", f"{dec_mb:.1f}"]
        for s in steps:
            secs = [r["seconds"] for r in runs[s]]
            row += [f"{statistics.median(secs):.3f}", f"{statistics.median(r['cpu'] for r in runs[s]):.3f}",
                    f"{max(r['rss_mb'] for r in runs[s]):.0f}"]
            if a.baseline is not None:
                new_med = statistics.median(secs)
                old_med = statistics.median(r["seconds"] for r in old[s])
                old_cpu = statistics.median(r.get("cpu", float("nan")) for r in old[s])
                row += [f"{old_med:.3f}", f"{old_cpu:.3f}", f"{max(r['rss_mb'] for r in old[s]):.0f}",
                        f"{old_med / new_med:.2f}x"]
        ok = all(r["ok"] for rs in runs.values() for r in rs) and all(r["ok"] for rs in old.values() for r in rs)
        row += ["yes" if ok else "NO", f"{gen:.1f}"]
        table.append(row)
        print(f"done {shape.rows():,} rows (load {load()})", file=sys.stderr, flush=True)
    headers = ["rows", "configs x hosts x seeds", "csv MB", "decisions MB"]
    for s in steps:
        headers += [f"{s} s (median)", f"{s} CPU s", f"{s} peak RSS MB"]
        if a.baseline is not None:
            headers += [f"baseline {s} s", f"baseline {s} CPU s", f"baseline {s} RSS MB", f"{s} speed-up"]
    headers += ["ok", "generate s"]
    print(tabulate(table, headers=headers, disable_numparse=True))
    print(f"(python {sys.version.split()[0]}; {a.repeat} run(s) a step; seconds exclude interpreter start and "
          f"imports; load average at the end {load()}; packages in {a.workdir or 'a temporary directory, removed'})")


if __name__ == "__main__":
    main()
