"""A fake executor for protocol tests: deterministic summaries, no training.

val_bpb depends on (config, host, stage budget, seed) only, so every run of a
protocol gives the same rows whatever the order, and a test can tell rows apart.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

from auditkit.executors import CellResult, CellTask

RUNNER_SHA = "0" * 64


def fake_val_bpb(task: CellTask) -> float:
    h = int(hashlib.sha256(f"{task.config_id}|{task.host}|{task.seed}".encode()).hexdigest()[:6], 16)
    base = {"bridge": 1.50, "greedy": 1.53, "d8_ar48": 1.58}.get(task.config_id, 1.60)
    return round(base + (h % 1000) / 1e5 - 0.01 * task.budget.value ** 0.5, 6)


def fake_summary(task: CellTask) -> dict:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    time.sleep(0.001)
    end = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "run_id": task.run_id, "config_id": task.config_id, "seed": task.seed, "status": "ok",
        "val_bpb": fake_val_bpb(task), "training_seconds": float(task.budget.value),
        "total_seconds": float(task.budget.value) + 1, "num_steps": 10, "total_tokens_M": 0.01,
        "num_params_M": 0.1, "peak_vram_mb": 0.0, "mfu_percent": 0.0, "started_at": now,
        "finished_at": end, "runner_sha256": RUNNER_SHA,
        "budget": {"kind": task.budget.kind, "value": task.budget.value}, "device": "cpu", "dtype": "float32",
        "checkpoint": None, "checkpoint_sha256": None,
    }


class FakeExecutor:
    name = "fake"

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.ran: list[str] = []

    def run(self, tasks):
        for task in tasks:
            if self.fail_after is not None and len(self.ran) >= self.fail_after:
                raise KeyboardInterrupt("simulated crash")
            self.ran.append(task.run_id)
            yield CellResult(task, fake_summary(task), None)
