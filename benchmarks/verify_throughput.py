"""How fast is `auditkit verify` next to the tools a reviewer already has?

    python benchmarks/verify_throughput.py               # ~2 GiB package, medians of 3 rounds
    python benchmarks/verify_throughput.py --size-gib 0.25 --repeat 1   # quick look
    python benchmarks/verify_throughput.py --targets-only --repeat 9   # only the loops and verify --jobs 1/2
    python benchmarks/verify_throughput.py --shipped --size-gib 1.8 --targets-only --compare OLD_CHECKOUT
        # the shipped package (ancillary/: evidence, per-document files, checkpoints) plus 1.8 GiB of bulk

Builds a synthetic package (a study from `fixtures.synth`, many small JSON/CSV
files under `source/`, two large safetensors checkpoints whose tensors are
exactly what their `model_config` implies, and large binary blobs), then times
on the same, page-cache-warm bytes, each as a child process:

- a plain single-thread hashlib loop (1 MiB reads): the per-core limit;
- `auditkit verify --jobs 1` and `--jobs 2` (every check, not only hashes; a large package is read
  in forked reader processes), and the same two with reader threads (`processes=False`);
- `sha256sum -c` over the manifest's lines;
- `bagit.py --validate` on an equivalent bag (hard links, sha256 manifest).

With `--shipped` the package is a copy of the shipped one (`ancillary/`) with `--size-gib` of
random bulk files added under `bulk/` and its MANIFEST rebuilt: every check runs, the freeze
evidence too (whose package attestation then finds the rebuilt MANIFEST.json and MANIFEST.csv
changed: two findings, exit 1, expected).

Prints wall time, GB/s (10^9 bytes of payload per second), the ratio to the
hashlib loop and each child's peak RSS (GNU time's maxrss; `time` is a tiny C
program, so nothing of this Python process is counted).  Targets on a 2-core
machine: --jobs 1 >= 0.9x the hashlib loop, --jobs 2 >= 1.6x, peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures.synth

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TIME = shutil.which("time") or "/usr/bin/time"

HASH_LOOP = r"""
import hashlib, sys
buf = bytearray(1 << 20); view = memoryview(buf); n = 0
for rel in open(sys.argv[2]).read().splitlines():
    h = hashlib.sha256()
    with open(sys.argv[1] + "/" + rel, "rb", buffering=0) as f:
        while k := f.readinto(view):
            h.update(view[:k]); n += k
print(n)
"""

# The machine's two-core limit right now: two hashlib loops as two processes, files dealt
# largest-first to the less loaded one (what --jobs 2 does with threads).
HASH_LOOP_2 = r"""
import hashlib, os, sys
from concurrent.futures import ProcessPoolExecutor
def run(rels):
    buf = bytearray(1 << 20); view = memoryview(buf); n = 0
    for rel in rels:
        h = hashlib.sha256()
        with open(sys.argv[1] + "/" + rel, "rb", buffering=0) as f:
            while k := f.readinto(view):
                h.update(view[:k]); n += k
    return n
if __name__ == "__main__":
    rels = sorted(open(sys.argv[2]).read().splitlines(), key=lambda r: -os.path.getsize(sys.argv[1] + "/" + r))
    parts, load = ([], []), [0, 0]
    for r in rels:
        i = load.index(min(load)); parts[i].append(r); load[i] += os.path.getsize(sys.argv[1] + "/" + r)
    with ProcessPoolExecutor(2) as pool:
        print(sum(pool.map(run, parts)))
"""


# `auditkit verify` with its readers as threads of the one process (the way before reader processes)
THREADS = r"""
import functools, sys
import auditkit.verify
auditkit.verify.verify_package = functools.partial(auditkit.verify.verify_package, processes=False)
from auditkit.cli import main
sys.argv = ["auditkit", "verify", sys.argv[1], "--jobs", sys.argv[2]]
main()
"""


def big_checkpoint(path: Path, target_bytes: int, run_id: str, rng: np.random.Generator) -> int:
    """A float32 safetensors file of about `target_bytes`, streamed to disk tensor by tensor."""
    from auditkit.runner.arch import expected_tensors

    d = 512
    per_layer = 12 * d * d * 4
    cfg = {"vocab_size": 256, "n_layer": max(1, target_bytes // per_layer), "n_embd": d, "n_head": 4,
           "head_dim": d // 4, "seq_len": 256, "window_pattern": "L"}
    shapes = expected_tensors(cfg)
    header, off = {}, 0
    for name, shape in shapes.items():
        size = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    header["__metadata__"] = {"run_id": run_id, "config_id": "bench", "seed": "0", "step": "1",
                              "model_config": json.dumps(cfg, sort_keys=True)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for shape in shapes.values():
            f.write(rng.standard_normal(int(np.prod(shape)), dtype=np.float32).tobytes())
    return path.stat().st_size


def random_blob(path: Path, size: int, rng: np.random.Generator) -> None:
    """`size` random bytes at `path`, written 64 MiB at a time."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            k = min(left, 64 << 20)
            f.write(rng.integers(0, 256, k, dtype=np.uint8).tobytes())
            left -= k


def build_shipped(root: Path, size: int, large_files: int) -> None:
    """A copy of the shipped package with `size` bytes of random bulk in `large_files` files, MANIFEST rebuilt."""
    from auditkit.package.manifest import build_manifest

    shutil.copytree(REPO / "ancillary", root)
    rng = np.random.default_rng(0)
    (root / "bulk").mkdir()
    each = size // max(1, large_files)
    for i in range(max(1, large_files)):
        random_blob(root / f"bulk/blob{i}.bin", each, rng)
    build_manifest(root)


def build(root: Path, size: int, small_files: int, large_files: int) -> None:
    from auditkit.package.manifest import build_manifest
    from fixtures.synth import SynthShape, make_package

    make_package(root, SynthShape(configs=24, hosts=2, seeds=2), manifest=False)
    rng = np.random.default_rng(0)
    src = root / "source" / "snapshot"
    small_total = 0
    for i in range(small_files):
        d = src / f"part{i % 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        n = int(rng.integers(20, 400))
        if i % 2:
            rows = "\n".join(f"{j},{rng.random():.6f},{rng.integers(1e6)}" for j in range(n))
            p = d / f"table{i:05d}.csv"
            p.write_text("step,loss,tokens\n" + rows + "\n")
        else:
            p = d / f"log{i:05d}.json"
            p.write_text(json.dumps({"step": i, "loss": rng.random(n).round(6).tolist()}) + "\n")
        small_total += p.stat().st_size
    remaining = max(0, size - small_total)
    each = remaining // max(1, large_files)
    (root / "checkpoints").mkdir(exist_ok=True)
    (root / "blobs").mkdir(exist_ok=True)
    for i in range(large_files):
        if i < 2:
            big_checkpoint(root / f"checkpoints/bench-{i}.safetensors", each, f"bench-{i}", rng)
        else:
            random_blob(root / f"blobs/blob{i}.bin", each, rng)
    build_manifest(root)


# Children run as Python runs by default, with bytecode caching (a warm-up run writes the .pyc
# files): an environment that sets PYTHONDONTWRITEBYTECODE would have every run compile
# auditkit's modules from source, a cost no installed copy pays.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS MB, exit code, output) of `cmd` as a child process."""
    t = time.perf_counter()
    p = subprocess.run([TIME, "-f", "bench=%M %U %S", *cmd], cwd=cwd, capture_output=True, text=True,
                       env={**CHILD_ENV, **(env or {})})
    wall = time.perf_counter() - t
    line = [x for x in p.stderr.splitlines() if x.startswith("bench=")]
    if not line:
        return wall, float("nan"), float("nan"), p.returncode, p.stdout + p.stderr
    kb, user, sys_ = line[-1].removeprefix("bench=").split()
    return wall, float(user) + float(sys_), int(kb) / 1024, p.returncode, p.stdout + p.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=2.0, help="payload size (default 2)")
    ap.add_argument("--small-files", type=int, default=2000)
    ap.add_argument("--large-files", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3, help="rounds over every tool; medians are reported")
    ap.add_argument("--workdir", help="where to build (default: a temporary directory, removed at the end)")
    ap.add_argument("--compare", metavar="CHECKOUT",
                    help="also time `verify` of another checkout of auditkit (e.g. a `git worktree` of an "
                         "earlier commit), in the same rounds")
    ap.add_argument("--shipped", action="store_true",
                    help="the shipped package (ancillary/) plus --size-gib of bulk, instead of a synthetic study")
    ap.add_argument("--targets-only", action="store_true",
                    help="time only what the targets compare: the hashlib loops and verify --jobs 1/2")
    ap.add_argument("--python", metavar="PY",
                    help="the interpreter every timed tool runs with (default: this one); e.g. that of a virtual "
                         "environment where only auditkit and its runtime dependencies are installed, as a reviewer's "
                         "install is (`pip install --force-reinstall --no-deps .` there first: auditkit is then "
                         "imported as installed there, not from this checkout)")
    a = ap.parse_args(argv)

    work = Path(a.workdir or tempfile.mkdtemp(prefix="verify-bench-"))
    pkg = work / "pkg"
    try:
        t = time.perf_counter()
        if not (pkg / "MANIFEST.json").exists():
            if a.shipped:
                build_shipped(pkg, int(a.size_gib * 2 ** 30), a.large_files)
            else:
                build(pkg, int(a.size_gib * 2 ** 30), a.small_files, a.large_files)
        files = [e["path"] for e in json.loads((pkg / "MANIFEST.json").read_text())["files"]]
        payload = sum((pkg / f).stat().st_size for f in files)
        lines = "".join(f"{e['sha256']}  {e['path']}\n"
                        for e in json.loads((pkg / "MANIFEST.json").read_text())["files"])
        (work / "SHA256SUMS").write_text(lines)
        (work / "files.txt").write_text("\n".join(files) + "\n")
        bag = work / "bag"
        if not bag.exists() and not a.targets_only:
            import bagit

            bag.mkdir()
            for f in files:
                (bag / f).parent.mkdir(parents=True, exist_ok=True)
                os.link(pkg / f, bag / f)
            bagit.make_bag(str(bag), checksums=["sha256"], processes=2)
        print(f"package: {pkg}  {len(files)} files, {payload / 1e9:.3f} GB payload "
              f"(built in {time.perf_counter() - t:.1f}s)")

        py = a.python or sys.executable
        home = work if a.python else None       # `-m auditkit` from the checkout would import the checkout
        tools = [
            ("hashlib loop (1 thread)", [py, "-c", HASH_LOOP, str(pkg), str(work / "files.txt")], None, None),
            ("hashlib loop (2 processes)", [py, "-c", HASH_LOOP_2, str(pkg), str(work / "files.txt")], None, None),
            ("auditkit verify --jobs 1", [py, "-m", "auditkit", "verify", str(pkg), "--jobs", "1"], home, None),
            ("auditkit verify --jobs 2", [py, "-m", "auditkit", "verify", str(pkg), "--jobs", "2"], home, None),
            ("verify --jobs 1, threads", [py, "-c", THREADS, str(pkg), "1"], None, None),
            ("verify --jobs 2, threads", [py, "-c", THREADS, str(pkg), "2"], None, None),
            ("sha256sum -c", ["sha256sum", "-c", "--quiet", "--strict", str(work / "SHA256SUMS")], pkg, None),
            ("bagit.py --validate", [shutil.which("bagit.py") or str(Path(py).parent / "bagit.py"), "--validate",
                                     str(bag)], None, None),
        ]
        if a.targets_only:
            tools = tools[:4]
        if a.compare:
            other = {"PYTHONPATH": str(Path(a.compare).resolve())}
            # run from `work`: `python -m` puts the working directory first on sys.path, before PYTHONPATH
            tools[4:4] = [(f"--compare verify --jobs {j}", [py, "-m", "auditkit", "verify", str(pkg), "--jobs", str(j)],
                           work, other) for j in (1, 2)]
        run(tools[0][1])  # warm the page cache
        for name, cmd, cwd, env in tools:
            if "verify" in name:
                run(cmd, cwd, env)   # and write each checkout's bytecode
        load_before = os.getloadavg()[0]
        samples: dict[str, list[tuple[float, float, float, int]]] = {name: [] for name, *_ in tools}
        for _ in range(a.repeat):  # rounds over every tool, so that a busy moment hits all of them alike
            for name, cmd, cwd, env in tools:
                wall, cpu, rss, rc, out = run(cmd, cwd, env)
                expected = a.shipped and rc == 1 and "verify" in name   # the findings --shipped expects
                if rc != 0 and not (expected and samples[name]):
                    print(f"{name}: exit {rc}\n{out[-(300 if expected else 2000):]}")
                samples[name].append((wall, cpu, rss, rc))
        # median wall and CPU time over the rounds; the highest peak RSS seen; the worst exit status
        results = {name: (statistics.median(s[0] for s in runs), statistics.median(s[1] for s in runs),
                          max(s[2] for s in runs), max(s[3] for s in runs))
                   for name, runs in samples.items()}
        load_after = os.getloadavg()[0]
        print(f"\n/proc/loadavg at the end: {Path('/proc/loadavg').read_text().strip()}")
        base = results["hashlib loop (1 thread)"][0]
        print(f"\n{'tool':28} {'wall s':>8} {'GB/s':>7} {'x hashlib':>10} {'CPU s':>7} {'peak RSS MB':>12} {'exit':>5}")
        for name, (wall, cpu, rss, rc) in results.items():
            print(f"{name:28} {wall:8.3f} {payload / wall / 1e9:7.3f} {base / wall:10.2f} {cpu:7.2f} {rss:12.1f} {rc:5d}")
        j1 = base / results["auditkit verify --jobs 1"][0]
        j2 = base / results["auditkit verify --jobs 2"][0]
        two = base / results["hashlib loop (2 processes)"][0]
        print(f"\nload average {load_before:.2f} before, {load_after:.2f} after (other work on the machine "
              f"slows every tool; two hashlib processes reach {two:.2f}x one, the two-core limit now)")
        peak = max(results["auditkit verify --jobs 1"][2], results["auditkit verify --jobs 2"][2])
        if a.compare:
            c1 = base / results["--compare verify --jobs 1"][0]
            c2 = base / results["--compare verify --jobs 2"][0]
            print(f"\n--compare {a.compare}: --jobs 1 {c1:.2f}x, --jobs 2 {c2:.2f}x (this checkout: {j1:.2f}x, {j2:.2f}x)")
        if a.shipped:
            print("(--shipped: verify's exit 1 is expected: the package attestation covers the MANIFEST before "
                  "the bulk was added)")
        print(f"\ntargets: --jobs 1 {j1:.2f}x (>= 0.9) {'ok' if j1 >= 0.9 else 'MISSED'}; "
              f"--jobs 2 {j2:.2f}x (>= 1.6) {'ok' if j2 >= 1.6 else 'MISSED'}; "
              f"peak RSS {peak:.0f} MB (< 200) {'ok' if peak < 200 else 'MISSED'}")
        return 0
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
