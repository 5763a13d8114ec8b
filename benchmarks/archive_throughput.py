"""How fast does `auditkit verify` read an archive, next to reading the same stream with hashlib?

    python benchmarks/archive_throughput.py --size-gib 0.5 --repeat 3
    python benchmarks/archive_throughput.py --baseline-rev main   # another revision's code side by side

Builds the synthetic package of `verify_throughput.py`, writes it as `pkg.tar`
and `pkg.tgz` (gzip level 1), then times as child processes, in rounds:

- a hashlib loop over the archive file (the .tar) and over its decompressed
  stream (`gzip.open`, 1 MiB reads, the .tgz): the per-core limit of one pass;
- `auditkit verify pkg.tar` and `auditkit verify pkg.tgz`;
- with `--baseline-rev REV` (a git revision of this repository, unpacked
  with `git archive` into the work directory and imported instead of this
  tree), the same two commands with that code: before/after from one run.

Prints median wall time, GB/s of payload, the ratio to the matching hashlib
loop and peak RSS.  The archive's budget (member count, inflated bytes,
inflation ratio) is checked once per read of up to 1 MiB, never per byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from verify_throughput import build, run  # noqa: E402

# Runs `auditkit` from the source tree argv[1] (installed layout: auditkit/{runner,schemas}), not from the
# editable install of this tree, whose import hook would otherwise win.
BOOT = r"""
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in (getattr(f, "__module__", "") or "")
                    and "editable" not in type(f).__name__.lower()]
sys.path.insert(0, sys.argv.pop(1))
sys.argv[0] = "auditkit"
runpy.run_module("auditkit", run_name="__main__", alter_sys=True)
"""


def unpack_revision(rev: str, dest: Path) -> Path:
    """`rev`'s auditkit, runner and schemas in the installed layout under `dest`."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", rev, "auditkit", "runner", "schemas"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for part in ("runner", "schemas"):
        shutil.rmtree(dest / "auditkit" / part, ignore_errors=True)
        (dest / part).rename(dest / "auditkit" / part)
    return dest


HASH_FILE = r"""
import hashlib, sys
buf = bytearray(1 << 20); view = memoryview(buf); h = hashlib.sha256(); n = 0
with open(sys.argv[1], "rb", buffering=0) as f:
    while k := f.readinto(view):
        h.update(view[:k]); n += k
print(n)
"""

HASH_GZIP = r"""
import gzip, hashlib, sys
buf = bytearray(1 << 20); view = memoryview(buf); h = hashlib.sha256(); n = 0
with gzip.open(sys.argv[1], "rb") as f:
    while k := f.readinto(view):
        h.update(view[:k]); n += k
print(n)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=0.5, help="payload size (default 0.5)")
    ap.add_argument("--small-files", type=int, default=2000)
    ap.add_argument("--large-files", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over every tool; medians are reported")
    ap.add_argument("--baseline-rev", help="a git revision whose auditkit is timed side by side")
    ap.add_argument("--workdir", help="where to build (default: a temporary directory, removed at the end)")
    a = ap.parse_args(argv)

    work = Path(a.workdir or tempfile.mkdtemp(prefix="archive-bench-"))
    pkg = work / "pkg"
    try:
        t = time.perf_counter()
        if not (pkg / "MANIFEST.json").exists():
            build(pkg, int(a.size_gib * 2 ** 30), a.small_files, a.large_files)
        for name, mode, kw in (("pkg.tar", "w", {}), ("pkg.tgz", "w:gz", {"compresslevel": 1})):
            if not (work / name).exists():
                with tarfile.open(work / name, mode, **kw) as tar:
                    tar.add(pkg, arcname="pkg")
        payload = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file())
        print(f"package: {pkg}  {payload / 1e9:.3f} GB payload; pkg.tar {(work / 'pkg.tar').stat().st_size / 1e9:.3f}"
              f" GB, pkg.tgz {(work / 'pkg.tgz').stat().st_size / 1e9:.3f} GB (built in {time.perf_counter() - t:.1f}s)")

        py = sys.executable
        verify = [py, "-m", "auditkit", "verify"]
        tools = [
            ("hashlib over pkg.tar", [py, "-c", HASH_FILE, str(work / "pkg.tar")], None),
            ("hashlib over gunzip(pkg.tgz)", [py, "-c", HASH_GZIP, str(work / "pkg.tgz")], None),
            ("auditkit verify pkg.tar", verify + [str(work / "pkg.tar")], None),
            ("auditkit verify pkg.tgz", verify + [str(work / "pkg.tgz")], None),
        ]
        if a.baseline_rev:
            src = unpack_revision(a.baseline_rev, work / "baseline")
            old = [py, "-c", BOOT, str(src), "verify"]
            tools += [(f"{a.baseline_rev} verify pkg.tar", old + [str(work / "pkg.tar")], None),
                      (f"{a.baseline_rev} verify pkg.tgz", old + [str(work / "pkg.tgz")], None)]
        run(tools[0][1])  # warm the page cache
        load_before = os.getloadavg()[0]
        samples: dict[str, list] = {name: [] for name, _, _ in tools}
        for _ in range(a.repeat):
            for name, cmd, cwd in tools:
                wall, cpu, rss, rc, out = run(cmd, cwd)
                if rc != 0:
                    print(f"{name}: exit {rc}\n{out[-2000:]}")
                samples[name].append((wall, cpu, rss, rc))
        results = {name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs),
                          max(s[2] for s in runs), max(s[3] for s in runs)) for name, runs in samples.items()}
        load_after = os.getloadavg()[0]
        base = {"tar": results["hashlib over pkg.tar"][0], "tgz": results["hashlib over gunzip(pkg.tgz)"][0]}
        print(f"\n{'tool':30} {'wall s':>8} {'GB/s':>7} {'x hashlib':>10} {'CPU s':>7} {'peak RSS MB':>12} {'exit':>5}")
        for name, (wall, cpu, rss, rc) in results.items():
            ref = base["tgz" if "tgz" in name else "tar"]
            print(f"{name:30} {wall:8.3f} {payload / wall / 1e9:7.3f} {ref / wall:10.2f} {cpu:7.2f} {rss:12.1f} {rc:5d}")
        if a.baseline_rev:
            for kind in ("tar", "tgz"):
                now, then = results[f"auditkit verify pkg.{kind}"][0], results[f"{a.baseline_rev} verify pkg.{kind}"][0]
                print(f"pkg.{kind}: this tree {now:.3f} s, {a.baseline_rev} {then:.3f} s: "
                      f"{then / now:.2f}x {a.baseline_rev}'s speed")
        print(f"\nload average {load_before:.2f} before, {load_after:.2f} after")
        return 0
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
