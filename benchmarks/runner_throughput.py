"""Training throughput and MFU of the bundled runner on this CPU, eager and compiled.

    python benchmarks/runner_throughput.py [--configs runner] [--threads 1,2] [--steps 6] [--repeats 3] \
        [--modes eager,compiled] [--batching windows,packed] [--data SPEC --vocab-size V] \
        [--flops-per-cycle 32] [--ghz G] [--no-cache-timing]

Batching: `windows` draws every micro-batch as uniform random windows of the
training stream (the runner before issue 22), `packed` packs whole documents
best-fit so every row starts at BOS (runner/packing.py, the runner now); both
are drawn inside the timed steps, as runner/train.py draws them, so the table
shows what packing costs per token (MFU before and after, in one run).  With
`--data` (a runner data spec, e.g. `text:data/kjv.txt,docs=lines,val=0.3`)
the rows come from that corpus and the model has its vocabulary; without it,
from the Markov corpus read as bytes (no BOS: packing falls back to windows
there, so give a text corpus to compare).

For each thread count: the fp32 matmul peak is measured in the same run
(median FLOP/s of a 2048^2 torch.matmul, alternating with the training
rounds so both see the same machine load) and printed beside the nominal peak
(threads x the clock /proc/cpuinfo reports, or `--ghz`, x `--flops-per-cycle`,
32 by default: two 256-bit FMA pipes, as on AMD Zen 4; 64 for two 512-bit FMA
units).  A virtual machine reports its base clock, so a boosting CPU's matmul
can beat this nominal figure: MFU is given against both.  Times are taken on
the wall clock and on the process's CPU clock (CPU seconds / threads, what an
otherwise idle machine would give: a shared machine's wall figures mostly
measure the other tenants).  Each configuration then trains full optimizer steps as
runner/train.py does (forward, backward, Muon + AdamW, schedules) after
warm-up steps; tokens/s are medians over `--repeats` rounds of `--steps`.
FLOPs per token are the runner's own count, upstream's `estimate_flops`
(6 x the multiplying parameters + 12 x heads x head_dim x min(window, seq_len)
per layer, so sliding-window layers count half), hence MFU here is comparable
with the `mfu_percent` a run reports.  `runner` is the runner's default row.

Compiled: `torch.compile(model, dynamic=False)` as `--compile` does; its
compilation happens in the warm-up steps and is not timed here.  Last, unless
`--no-cache-timing`: how long the first compiled step takes in a fresh process
with an empty inductor cache, and again in a later process that finds the
on-disk cache (TORCHINDUCTOR_CACHE_DIR pointed at one temporary directory).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def nominal_peak(threads: int, flops_per_cycle: int, ghz: float = 0.0) -> tuple[float, float]:
    """(FLOP/s, GHz): threads x clock x fp32 FLOPs per cycle per core."""
    if ghz:
        return threads * ghz * 1e9 * flops_per_cycle, ghz
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                ghz = max(ghz, float(line.split(":")[1]) / 1000)
    except OSError:
        pass
    return threads * ghz * 1e9 * flops_per_cycle, ghz


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds)."""
    return time.perf_counter(), time.process_time()


def rates(work: float, start: tuple[float, float], threads: int) -> tuple[float, float]:
    """work per wall second, and per CPU second x threads (what an otherwise idle machine would give)."""
    wall, cpu = clocks()
    return work / (wall - start[0]), work * threads / max(cpu - start[1], 1e-9)


def matmul_peak(torch, threads: int, n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """Median fp32 FLOP/s of an n x n matmul at the current thread count (wall clock, CPU clock)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    got = []
    for _ in range(reps):
        t = clocks()
        a @ b
        got.append(rates(2 * n ** 3, t, threads))
    return statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)


class Trainer:
    """One configuration's model, optimizers and batches, stepped exactly as runner/train.py steps."""

    def __init__(self, row: dict, compiled: bool, corpus=None, batching: str = "fixed"):
        import torch

        from auditkit.runner.arch import model_config_from_row
        from auditkit.runner.model import GPT
        from auditkit.runner.optim import build_optimizers
        from auditkit.runner.train import hyperparameters

        self.torch = torch
        self.cfg = model_config_from_row(row, **({"vocab_size": corpus.tokenizer.vocab_size} if corpus else {}))
        self.hp = hyperparameters(row)
        T, B = self.cfg["seq_len"], self.hp["device_batch_size"]
        self.accum = max(1, self.hp["total_batch_size"] // (B * T))
        self.tokens_per_step = self.accum * B * T
        self.model = GPT(self.cfg)
        self.model.init_weights(torch.Generator().manual_seed(0))
        self.opts = build_optimizers(self.model, self.hp)
        self.forward = torch.compile(self.model, dynamic=False) if compiled else self.model
        g = torch.Generator().manual_seed(1)
        self.batches = [(torch.randint(0, 256, (B, T), generator=g), torch.randint(0, 256, (B, T), generator=g))
                        for _ in range(self.accum)]
        self.source = None
        if batching != "fixed":
            from auditkit.runner.packing import BestFitPacker, RandomWindows

            self.source = (BestFitPacker(corpus.train, corpus.tokenizer.bos, T + 1, 0) if batching == "packed"
                           else RandomWindows(corpus.train, T + 1, 0))
        self.B = B
        self.n = 0

    def step(self) -> None:
        from auditkit.runner.optim import apply_schedules

        apply_schedules(self.opts, 0.1, self.n, self.hp)
        batches = self.batches
        if self.source is not None:  # drawn inside the step, as runner/train.py draws them
            batches = []
            for _ in range(self.accum):
                idx = self.torch.from_numpy(self.source.next_rows(self.B))
                batches.append((idx[:, :-1], idx[:, 1:]))
        for x, y in batches:
            loss = self.forward(x, y)
            (loss / self.accum).backward()
            loss.item()
        for opt in self.opts:
            opt.step()
        self.model.zero_grad(set_to_none=True)
        self.n += 1

    def tokens_per_second(self, steps: int, threads: int) -> tuple[float, float]:
        t = clocks()
        for _ in range(steps):
            self.step()
        return rates(steps * self.tokens_per_step, t, threads)


def load_rows(matrix: Path, names: list[str]) -> dict[str, dict]:
    with open(matrix, newline="", encoding="utf-8") as f:
        rows = {r["config_id"]: r for r in csv.DictReader(f)}
    rows["runner"] = {"config_id": "runner"}
    missing = [n for n in names if n not in rows]
    if missing:
        sys.exit(f"error: {matrix}: no config_id {', '.join(missing)}")
    return {n: rows[n] for n in names}


_FIRST_STEP = """
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
sys.path.insert(0, {bench!r})
from runner_throughput import Trainer
from auditkit.runner.train import keep_freed_memory
keep_freed_memory()
tr = Trainer({{"config_id": "runner"}}, compiled=True)
t1 = time.perf_counter()
tr.step()
t2 = time.perf_counter()
tr.step()
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_step_s": t2 - t1, "second_step_s": t3 - t2}}))
"""


def compile_cache_timing() -> list[dict]:
    """The first compiled step in a process with an empty inductor cache, then in a later one."""
    out = []
    with tempfile.TemporaryDirectory(prefix="inductor-bench-") as cache:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, OMP_NUM_THREADS="1")
        code = _FIRST_STEP.format(bench=str(Path(__file__).resolve().parent))
        for label in ("empty cache", "later process, same cache"):
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
            wall = time.perf_counter() - t
            if p.returncode != 0:
                raise SystemExit(f"error: the compile-timing process failed:\n{p.stderr[-2000:]}")
            out.append(dict(json.loads(p.stdout.strip().splitlines()[-1]), process=label, wall_s=wall))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--matrix", type=Path, default=REPO / "manifests" / "micro_matrix.csv")
    p.add_argument("--configs", default="runner")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--modes", default="eager,compiled")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--flops-per-cycle", type=int, default=32)
    p.add_argument("--ghz", type=float, default=0.0, help="clock for the nominal peak (default: /proc/cpuinfo)")
    p.add_argument("--no-cache-timing", action="store_true")
    p.add_argument("--batching", default="windows,packed",
                   help="windows (random windows, the runner before issue 22), packed (best-fit, BOS-aligned)")
    p.add_argument("--data", default="markov:seed=0", help="runner data spec the rows come from")
    p.add_argument("--vocab-size", type=int, default=8192)
    args = p.parse_args(argv)

    import torch
    from tabulate import tabulate

    from auditkit.runner.train import keep_freed_memory

    from auditkit.runner.data import load_corpus

    rows = load_rows(args.matrix, [c for c in args.configs.split(",") if c])
    modes = [m for m in args.modes.split(",") if m]
    batchings = [b for b in args.batching.split(",") if b]
    corpus = load_corpus(args.data, vocab_size=args.vocab_size)
    keep_freed_memory()  # as runner/train.py does
    table = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        trainers = {(name, mode, b): Trainer(row, compiled=mode == "compiled", corpus=corpus, batching=b)
                    for name, row in rows.items() for mode in modes for b in batchings}
        for tr in trainers.values():
            for _ in range(3):  # warm-up (and compilation)
                tr.step()
        peaks, speeds = [], {k: [] for k in trainers}
        for _ in range(args.repeats):
            peaks.append(matmul_peak(torch, threads))
            for k, tr in trainers.items():
                speeds[k].append(tr.tokens_per_second(args.steps, threads))
        peak_wall = statistics.median(p[0] for p in peaks)
        peak_cpu = statistics.median(p[1] for p in peaks)
        nominal, ghz = nominal_peak(threads, args.flops_per_cycle, args.ghz)
        for (name, mode, b), tr in trainers.items():
            wall = statistics.median(s[0] for s in speeds[(name, mode, b)])
            cpu = statistics.median(s[1] for s in speeds[(name, mode, b)])
            fpt = tr.model.flops_per_token()
            c = tr.cfg
            table.append([name, mode, b, threads, f"d{c['n_layer']} x {c['n_embd']}, T={c['seq_len']}, V={c['vocab_size']}",
                          f"{wall:,.0f}", f"{100 * wall * fpt / peak_wall:.1f}", f"{cpu:,.0f}",
                          f"{cpu * fpt / 1e9:.1f}", f"{peak_cpu / 1e9:.1f}", f"{100 * cpu * fpt / peak_cpu:.1f}",
                          f"{nominal / 1e9:.1f}", f"{100 * cpu * fpt / nominal:.1f}" if nominal else "-"])
    print(f"torch {torch.__version__}; clock {ghz:.2f} GHz (/proc/cpuinfo), nominal peak = threads x clock x "
          f"{args.flops_per_cycle} FLOP/cycle; measured peak = median 2048^2 fp32 matmul; medians of "
          f"{args.repeats} rounds of {args.steps} steps; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs.  'cpu clock' figures divide by the process's CPU time / threads, "
          f"what an otherwise idle machine gives; 'wall' ones by wall time")
    print(f"data {corpus.spec} ({corpus.tokenizer.label()})")
    print(tabulate(table, headers=["config", "mode", "batching", "threads", "shape", "tokens/s wall", "MFU % wall",
                                   "tokens/s cpu clock", "GFLOP/s", "measured peak GFLOP/s",
                                   "MFU % (measured peak)", "nominal peak GFLOP/s", "MFU % (nominal)"],
                   tablefmt="github"))
    if not args.no_cache_timing and "compiled" in modes:
        timing = compile_cache_timing()
        print("\nfirst compiled step of the default config (1 thread), inductor cache on disk:")
        print(tabulate([[t["process"], f"{t['first_step_s']:.1f}", f"{t['second_step_s']:.2f}", f"{t['wall_s']:.1f}"]
                        for t in timing],
                       headers=["process", "first step s (compiles)", "second step s", "process wall s"],
                       tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
