"""A minimal valid package, written in milliseconds (no training): the fixture of the verify tests.

    protocol.json, matrices/mini.csv (2 configs), preanalysis/s1.rules.json,
    remote-results/{linux,windows}_s1_summary.csv (2 rows each), analysis/s1_decision.json
    (hashes of the rules and inputs), checkpoints/linux-s1-*.safetensors (tiny, tensor
    names and shapes exactly as `auditkit.runner.arch` implies), README.txt, MANIFEST.

Helpers edit it in the ways the tests need (set a CSV cell, rebuild the manifest,
rewrite a safetensors header).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from auditkit.manifest import build_manifest
from auditkit.rows import RUN_COLUMNS, write_csv_text
from auditkit.runner.arch import expected_tensors, num_params

MODEL_CONFIG = {"vocab_size": 256, "n_layer": 1, "n_embd": 8, "n_head": 1, "head_dim": 8,
                "seq_len": 16, "window_pattern": "L"}
CONFIGS = ("a", "b")
HOSTS = ("linux", "windows")
RUNNER_SHA = "c" * 64


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_bytes(run_id: str, config_id: str, seed: int = 1, *, model_config: dict | None = None,
                     dtype=np.float32, fill: float | None = None) -> bytes:
    cfg = model_config or MODEL_CONFIG
    rng = np.random.default_rng(int(sha(run_id.encode())[:8], 16))
    tensors = {}
    for name, shape in expected_tensors(cfg).items():
        a = rng.standard_normal(shape).astype(dtype) if fill is None else np.full(shape, fill, dtype=dtype)
        tensors[name] = a
    meta = {"run_id": run_id, "config_id": config_id, "seed": str(seed), "step": "10",
            "model_config": json.dumps(cfg, sort_keys=True)}
    return save(tensors, metadata=meta)


def _row(host: str, cid: str, i: int, ckpt: bytes | None) -> dict:
    run_id = f"{host}-s1-{cid}-s1"
    return {
        "run_id": run_id, "host": host, "stage": "s1", "seed": "1", "config_id": cid,
        "budget_kind": "steps", "budget_value": "10", "status": "ok", "val_bpb": f"{1.5 + 0.01 * i:.6f}",
        "training_seconds": "1.000", "total_seconds": "2.000", "num_steps": "10", "total_tokens_M": "0.001000",
        "num_params_M": f"{num_params(MODEL_CONFIG) / 1e6:.6f}", "peak_vram_mb": "0.0", "mfu_percent": "0.000",
        "started_at": f"2026-05-01T10:0{i}:00Z", "finished_at": f"2026-05-01T10:0{i}:30Z",
        "runner_sha256": RUNNER_SHA,
        "checkpoint": f"checkpoints/{run_id}.safetensors" if ckpt is not None else "",
        "checkpoint_sha256": sha(ckpt) if ckpt is not None else "",
    }


def build(root: str | Path, *, checkpoints: bool = True) -> Path:
    """Write the minimal package under `root` (created) with its MANIFEST; return `root`."""
    root = Path(root)
    for d in ("matrices", "preanalysis", "remote-results", "analysis", "checkpoints"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "README.txt").write_text("A minimal auditkit package for tests.\nAudit: auditkit verify .\n")
    protocol = {"schema": "auditkit/protocol/v1", "name": "mini", "matrix": "matrices/mini.csv",
                "hosts": list(HOSTS),
                "stages": [{"stage": "s1", "budget": {"kind": "steps", "value": 10}, "seeds": [1],
                            "hosts": list(HOSTS), "candidates": "matrix"}],
                "gates": [{"gate": "s1", "rules": "preanalysis/s1.rules.json"}]}
    (root / "protocol.json").write_text(json.dumps(protocol, indent=2) + "\n")
    (root / "matrices/mini.csv").write_text("config_id,role,depth\na,reference,1\nb,greedy,1\n")
    rules = {"schema": "auditkit/rules/v1", "gate": "s1", "frozen_at": "2026-05-01T09:00:00Z",
             "inputs": {"stages": ["s1"], "hosts": list(HOSTS), "seeds": [1], "candidates": "matrix"},
             "metric": {"column": "val_bpb", "better": "lower"},
             "promote": {"top_k": 1, "always_keep": []},
             "checks": [{"kind": "near_equivalence", "candidate": "b", "reference": "a", "threshold": 0.05}]}
    rules_text = json.dumps(rules, indent=2) + "\n"
    (root / "preanalysis/s1.rules.json").write_text(rules_text)
    inputs = []
    i = 0
    for host in HOSTS:
        rows = []
        for cid in CONFIGS:
            ckpt = None
            if checkpoints and host == "linux":
                ckpt = checkpoint_bytes(f"{host}-s1-{cid}-s1", cid)
                (root / f"checkpoints/{host}-s1-{cid}-s1.safetensors").write_bytes(ckpt)
            rows.append(_row(host, cid, i, ckpt))
            i += 1
        text = write_csv_text(list(RUN_COLUMNS), rows)
        rel = f"remote-results/{host}_s1_summary.csv"
        (root / rel).write_text(text)
        inputs.append({"path": rel, "sha256": sha(text.encode())})
    decision = {
        "schema": "auditkit/decision/v1", "gate": "s1",
        "rules": {"path": "preanalysis/s1.rules.json", "sha256": sha(rules_text.encode())},
        "inputs": inputs, "cells": [["linux", 1], ["windows", 1]],
        "candidates": [
            {"config_id": "a", "eligible": True, "rank": 1, "mean": 1.51, "min": 1.5, "max": 1.52, "std": 0.014142136,
             "wins": 2, "cells": {"linux/1": {"val_bpb": 1.5, "rank": 1}, "windows/1": {"val_bpb": 1.52, "rank": 1}}},
            {"config_id": "b", "eligible": True, "rank": 2, "mean": 1.52, "min": 1.51, "max": 1.53, "std": 0.014142136,
             "wins": 0, "cells": {"linux/1": {"val_bpb": 1.51, "rank": 2}, "windows/1": {"val_bpb": 1.53, "rank": 2}}},
        ],
        "promoted": ["a"],
        "checks": [{"kind": "near_equivalence", "candidate": "b", "reference": "a", "value": 0.01,
                    "threshold": 0.05, "passed": True}],
        "decided_at": "2026-05-01T12:00:00Z",
    }
    (root / "analysis/s1_decision.json").write_text(json.dumps(decision, indent=2) + "\n")
    build_manifest(root)
    return root


# -- edits -------------------------------------------------------------------------

def set_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set data row `row` (1-based), `column` of a simple (unquoted) CSV file."""
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def header_of(data: bytes) -> tuple[int, dict]:
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8:8 + n])


def with_header(data: bytes, n: int, header: dict) -> bytes:
    """The same tensor data behind a new JSON header."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def raw_safetensors(header: dict, data: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data
