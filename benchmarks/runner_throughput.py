"""Training throughput of the bundled runner on this CPU, beside the CPU's measured fp32 matmul peak.

    python benchmarks/runner_throughput.py [--matrix manifests/micro_matrix.csv] \
        [--configs bridge,greedy,d2_ar48] [--threads 1,2] [--steps 8] [--repeats 3] [--compile runner]

For each thread count the fp32 peak is measured first (median FLOP/s of a large
square torch.matmul), then each configuration trains `--steps` full optimizer
steps (forward, backward, Muon + AdamW, as runner/train.py does) after two
warm-up steps.  Figures are medians over `--repeats` rounds; peak and training
alternate within each round so both see the same machine load.  Achieved FLOP/s
use the runner's own count (6 x matmul weights + attention scores per token), so
MFU here is comparable with the `mfu_percent` a run reports (that one divides by
the best of five 1024^2 matmuls timed at start-up, within a few % of this peak).  `runner` is the runner's default
row (no matrix columns).  Configurations named by `--compile` are measured a
second time under torch.compile (the runner's `--compile`; compilation happens
in the warm-up steps and is not timed): at these widths (64-96) the fused
element-wise kernels matter as much as the matmuls.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from auditkit.runner.arch import model_config_from_row, num_params
from auditkit.runner.model import GPT
from auditkit.runner.optim import build_optimizers, lr_multiplier
from auditkit.runner.train import hyperparameters

REPO = Path(__file__).resolve().parents[1]


def matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """Median fp32 FLOP/s of an n x n matmul at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


class Trainer:
    """One configuration's model, optimizers and batch, stepped exactly as runner/train.py steps."""

    def __init__(self, row: dict, compile: bool = False):
        self.cfg = model_config_from_row(row)
        self.hp = hyperparameters(row)
        T, B = self.cfg["seq_len"], self.hp["device_batch_size"]
        self.accum = max(1, self.hp["total_batch_size"] // (B * T))
        self.tokens_per_step = self.accum * B * T
        self.model = GPT(self.cfg)
        self.model.init_weights(torch.Generator().manual_seed(0))
        self.opts = build_optimizers(self.model, self.hp)
        self.forward = torch.compile(self.model) if compile else self.model   # as runner/train.py --compile
        g = torch.Generator().manual_seed(1)
        self.x = torch.randint(0, 256, (B, T), generator=g)
        self.y = torch.randint(0, 256, (B, T), generator=g)

    def step(self) -> None:
        mult = lr_multiplier(0.0, self.hp["warmdown_ratio"])
        for opt in self.opts:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * mult
        for _ in range(self.accum):
            loss = self.forward(self.x, self.y)
            (loss / self.accum).backward()
            loss.item()
        for opt in self.opts:
            opt.step()
        self.model.zero_grad(set_to_none=True)

    def tokens_per_second(self, steps: int) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * self.tokens_per_step / (time.perf_counter() - t)


def load_rows(matrix: Path, names: list[str]) -> dict[str, dict]:
    with open(matrix, newline="", encoding="utf-8") as f:
        rows = {r["config_id"]: r for r in csv.DictReader(f)}
    rows["runner"] = {"config_id": "runner"}
    missing = [n for n in names if n not in rows]
    if missing:
        sys.exit(f"error: {matrix}: no config_id {', '.join(missing)}")
    return {n: rows[n] for n in names}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--matrix", type=Path, default=REPO / "manifests" / "micro_matrix.csv")
    p.add_argument("--configs", default="bridge,greedy,d2_ar48,runner")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", default="runner",
                   help="configs also measured under torch.compile (needs a C++ compiler; ~30 s each to "
                        "compile); '' for none")
    args = p.parse_args(argv)
    rows = load_rows(args.matrix, [c for c in args.configs.split(",") if c])
    compiled = load_rows(args.matrix, [c for c in args.compile.split(",") if c])
    table = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        trainers = {name: Trainer(row) for name, row in rows.items()}
        trainers.update({f"{name} (compiled)": Trainer(row, compile=True) for name, row in compiled.items()})
        for tr in trainers.values():
            tr.step(), tr.step()  # warm-up
        peaks, speeds = [], {name: [] for name in trainers}
        for _ in range(args.repeats):
            peaks.append(matmul_peak())
            for name, tr in trainers.items():
                speeds[name].append(tr.tokens_per_second(args.steps))
        peak = statistics.median(peaks)
        for name, tr in trainers.items():
            tps = statistics.median(speeds[name])
            flops = tps * tr.model.matmul_flops_per_token()
            c = tr.cfg
            table.append([name, threads, f"d{c['n_layer']} x {c['n_embd']}, T={c['seq_len']}",
                          f"{num_params(c) / 1e6:.3f}", tr.tokens_per_step, f"{tps:,.0f}",
                          f"{flops / 1e9:.1f}", f"{peak / 1e9:.1f}", f"{100 * flops / peak:.1f}"])
    print(f"torch {torch.__version__}, {torch.get_num_interop_threads()} interop threads; "
          f"medians of {args.repeats} rounds of {args.steps} steps")
    print(tabulate(table, headers=["config", "threads", "shape", "params_M", "tokens/step", "tokens/s",
                                   "GFLOP/s", "peak GFLOP/s", "MFU %"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
