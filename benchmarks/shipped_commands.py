"""Whole-process times of the commands a reviewer runs on one package, in one run: medians, peak RSS, load.

    python benchmarks/shipped_commands.py                              # ancillary/, 5 runs each
    python benchmarks/shipped_commands.py --repeat 7 --baseline /tmp/auditkit-main

Each command runs as its own `python -m auditkit.cli.main ...` process (interpreter start and
imports included, as a user sees it): `tables --check`, `report` (HTML, to a scratch file) and
`replay-gate all --json` (with every check's interval and call). With `--baseline DIR` (the root
of another auditkit source tree, e.g. `git worktree add /tmp/auditkit-main main`) every command
also runs from that tree, interleaved with this one, and the ratio of the medians is printed:
both measured in the same minutes, under the same load.

Goal (issue 21): each of the three under 2 s on the shipped package. Timings depend on what
else runs: the load averages at the start and the end are printed; compare ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "tables --check": ["tables", "--package", "{pkg}", "--check"],
    "report": ["report", "{pkg}", "--out", "{scratch}/report.html", "--force"],
    "replay-gate all --json": ["replay-gate", "all", "--package", "{pkg}", "--json"],
}

WRAP = r"""
import resource, runpy, sys
sys.argv = ["auditkit"] + sys.argv[1:]
try:
    runpy.run_module("auditkit.cli.main", run_name="__main__")
finally:
    kids = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\nPEAK_RSS_KB {kids}", file=sys.stderr)
"""


def run_once(args: list[str], source: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS MB, exit code) of one whole process."""
    env = dict(os.environ, PYTHONPATH=str(source) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WRAP, *args], capture_output=True, text=True, env=env, cwd=str(source))
    secs = time.perf_counter() - t
    rss = next((int(line.split()[1]) / 1024 for line in p.stderr.splitlines() if line.startswith("PEAK_RSS_KB")), 0.0)
    return secs, rss, p.returncode


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=ROOT / "ancillary")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each command (median reported)")
    ap.add_argument("--baseline", type=Path, help="another auditkit source tree, run interleaved with this one")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, of: " + ", ".join(COMMANDS))
    a = ap.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="shipped_commands-"))   # the report's output; removed at the end
    try:
        _measure(a, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(a, scratch: Path) -> None:
    pkg = a.package.resolve()
    print(f"load average (1/5/15 min) at the start: {load()}", flush=True)
    names = [c for c in a.commands.split(",") if c]
    trees = [("this tree", ROOT)] + ([("baseline", a.baseline.resolve())] if a.baseline else [])
    results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
    for _ in range(a.repeat):
        for name in names:
            args = [x.format(pkg=pkg, scratch=scratch) for x in COMMANDS[name]]
            for label, tree in trees:
                results.setdefault((name, label), []).append(run_once(args, tree))
    rows = []
    for name in names:
        row = [name]
        meds = []
        for label, _tree in trees:
            rs = results[(name, label)]
            med = statistics.median(r[0] for r in rs)
            meds.append(med)
            row += [f"{med:.2f}", f"{max(r[1] for r in rs):.0f}", ",".join(sorted({str(r[2]) for r in rs}))]
        if len(meds) == 2:
            row.append(f"{meds[1] / meds[0]:.2f}x")
        rows.append(row)
    headers = ["command"]
    for label, _tree in trees:
        headers += [f"{label} s (median)", f"{label} peak RSS MB", f"{label} exit"]
    if len(trees) == 2:
        headers.append("speed-up")
    print(tabulate(rows, headers=headers, disable_numparse=True))
    print(f"(python {sys.version.split()[0]}; {a.repeat} run(s) each, whole processes; package {pkg}; "
          f"load average at the end {load()})")


if __name__ == "__main__":
    main()
