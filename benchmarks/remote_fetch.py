"""How fast does auditkit fetch a package over HTTP, next to a plain streaming hashlib download?

    python benchmarks/remote_fetch.py                       # the shipped package (ancillary/)
    python benchmarks/remote_fetch.py --package DIR --repeat 5

Serves the package from a bounded server on 127.0.0.1 (tests/fixtures/httpserve.py) and times,
in alternating rounds, in this process:

- baseline: for every file of its MANIFEST, one after the other, `urllib.request.urlopen` and a
  1 MiB-read loop into hashlib.sha256 and a temporary file (what a careful script would do);
- auditkit: `auditkit.package.remote.fetch_package` into an empty cache (hashing as the bytes
  arrive, checking each against the MANIFEST, moving it into the content-addressed cache).

Prints the median wall time and MB/s of each, the ratio (auditkit / baseline throughput; the
target is >= 0.8) and the load average.  Nothing is left behind: each round's cache and the
baseline's files live in one temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.httpserve import PackageServer  # noqa: E402

from auditkit.package.fetchcache import Cache, Limits  # noqa: E402
from auditkit.package.remote import fetch_package  # noqa: E402


def baseline(url: str, entries: list[dict], work: Path) -> int:
    n = 0
    for e in entries:
        h = hashlib.sha256()
        with urllib.request.urlopen(url + e["path"], timeout=30) as resp, open(work / "f", "wb") as out:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
                n += len(chunk)
        if h.hexdigest() != e["sha256"]:
            raise SystemExit(f"baseline: {e['path']} does not match")
    return n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default=str(REPO / "ancillary"))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    pkg = Path(args.package)
    entries = json.loads((pkg / "MANIFEST.json").read_text())["files"]
    total = sum(e["bytes"] for e in entries)
    work = Path(tempfile.mkdtemp(prefix="auditkit-bench-remote-"))
    base_t, ak_t = [], []
    try:
        with PackageServer(pkg) as server:
            for i in range(args.repeat):
                t = time.perf_counter()
                assert baseline(server.url, entries, work) == total
                base_t.append(time.perf_counter() - t)
                cache = Cache(work / f"cache{i}")
                t = time.perf_counter()
                _, _, got, findings, _ = fetch_package(server.url, cache=cache, limits=Limits())
                ak_t.append(time.perf_counter() - t)
                assert not findings and len(got) == len(entries)
                shutil.rmtree(work / f"cache{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mb = total / 1e6
    b, a = statistics.median(base_t), statistics.median(ak_t)
    print(f"package: {pkg} ({len(entries)} files, {mb:.1f} MB); {args.repeat} rounds; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"baseline (urllib + hashlib, sequential): median {b:.3f} s, {mb / b:.0f} MB/s")
    print(f"auditkit fetch_package:                  median {a:.3f} s, {mb / a:.0f} MB/s")
    print(f"ratio (auditkit / baseline throughput):  {b / a:.2f}x  (target >= 0.8x)")


if __name__ == "__main__":
    main()
