"""Train one cell of a study and write summary.json and checkpoint.safetensors.

    python -m auditkit.runner.train --matrix manifests/micro_matrix.csv --config-id bridge \
        --seed 42 --budget 30s --out runs/bridge-s42 [--device cpu|cuda] [--threads 2] \
        [--data markov:seed=0|text:PATH|parquet:PATH] [--eval-tokens 32768] [--compile] [--rng-seed N]

(also `python runner/train.py ...` from the repository root).  Budgets: `30s` of
wall-clock training (schedules follow elapsed/budget, as in autoresearch) or
`200steps` (schedules follow step/steps; on CPU the same seed and thread count
give bit-identical weights).  `--rng-seed N` seeds the generators (weights,
batches) with N instead of --seed, which stays the run's identity (an anchored
stage's seed derived from the freeze token); summary and checkpoint metadata
record it as `rng_seed`.  Prints the autoresearch-style summary after `---`.
Exit status 0 whenever a summary was written (look at its `status`: ok,
diverged, oom, failed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the sibling modules importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arch import model_config_from_row, num_params, runner_tree_sha256  # noqa: E402
    from data import DEFAULT_DATA, load_corpus  # noqa: E402
else:
    from .arch import model_config_from_row, num_params, runner_tree_sha256
    from .data import DEFAULT_DATA, load_corpus

HP_DEFAULTS = {
    "total_batch_size": 4096,     # tokens per optimizer step
    "device_batch_size": 16,      # sequences per forward pass
    # Tuned for the micro models (d_model ~100): autoresearch's 0.004 for the head
    # suits d_model 768; at d_model 96 a 10x larger head lr halves val_bpb after 50 steps.
    "matrix_lr": 0.04,
    "embedding_lr": 0.3,
    "unembedding_lr": 0.04,
    "scalar_lr": 0.02,
    "weight_decay": 0.0,
    "warmdown_ratio": 0.5,
}
COMPILE_WARMUP_STEPS = 2  # with --compile, the first steps (compilation) are left off the training clock
DIVERGED_LOSS = 2 * math.log(256)  # twice the loss of a uniform guess
CUDA_BF16_PEAK = {"H100": 989.5e12, "H200": 989.5e12, "A100": 312e12, "L40S": 362e12}


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_budget(text: str) -> dict:
    t = text.strip().lower()
    try:
        if t.endswith("steps"):
            v = int(t[:-5])
            kind = "steps"
        elif t.endswith("s"):
            v = float(t[:-1])
            kind = "seconds"
        else:
            v = float(t)
            kind = "seconds"
    except ValueError:
        raise ValueError(f"budget {text!r}: write it as 30s (seconds) or 200steps") from None
    if v <= 0:
        raise ValueError(f"budget {text!r} must be positive")
    return {"kind": kind, "value": int(v) if float(v).is_integer() else v}


def hyperparameters(row: dict) -> dict:
    hp = {}
    for key, default in HP_DEFAULTS.items():
        v = row.get(key, "")
        try:
            hp[key] = type(default)(float(v)) if v not in ("", None) else default
        except ValueError:
            raise ValueError(f"matrix column {key}: {v!r} is not a number") from None
    return hp


def read_matrix_row(path: str, config_id: str) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("config_id") == config_id:
                return row
    raise ValueError(f"{path}: no row with config_id {config_id!r}")


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def measure_cpu_peak(torch) -> float:
    """fp32 FLOP/s of a large square matmul on this CPU with the current thread count."""
    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def train(args, row: dict) -> dict:
    import torch

    try:
        from .model import GPT
        from .optim import build_optimizers, lr_multiplier
    except ImportError:
        from model import GPT
        from optim import build_optimizers, lr_multiplier

    t_start = time.time()
    started_at = utc_now()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    budget = parse_budget(args.budget)
    cfg = model_config_from_row(row)
    hp = hyperparameters(row)
    T, B = cfg["seq_len"], hp["device_batch_size"]
    accum = max(1, hp["total_batch_size"] // (B * T))
    corpus = load_corpus(args.data)
    summary = {
        "run_id": args.run_id, "config_id": row["config_id"], "seed": args.seed, "status": "ok",
        "val_bpb": None, "training_seconds": 0.0, "total_seconds": 0.0, "num_steps": 0,
        "total_tokens_M": 0.0, "num_params_M": round(num_params(cfg) / 1e6, 6), "peak_vram_mb": 0.0,
        "mfu_percent": 0.0, "started_at": started_at, "finished_at": started_at,
        "runner_sha256": runner_tree_sha256(), "budget": budget, "device": device.type,
        "dtype": "bfloat16" if device.type == "cuda" else "float32", "threads": args.threads,
        "data": corpus.spec, "floor_bpb": corpus.floor_bpb, "eval_tokens": args.eval_tokens,
        "model_config": cfg, "hyperparameters": hp, "checkpoint": None, "checkpoint_sha256": None,
        "eval_sha256": eval_bytes_sha256(corpus.val, T, args.eval_tokens),
    }
    rng_seed = args.seed if args.rng_seed is None else args.rng_seed
    if args.rng_seed is not None:
        summary["rng_seed"] = args.rng_seed
    torch.manual_seed(rng_seed)
    gen = torch.Generator().manual_seed(rng_seed)
    model = GPT(cfg)
    model.init_weights(gen)
    model.to(device)
    opts = build_optimizers(model, hp)
    step_fn = torch.compile(model) if args.compile else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    train_tokens = torch.from_numpy(corpus.train.astype("int64"))
    batch_gen = torch.Generator().manual_seed(rng_seed + 1_000_003)
    peak = (CUDA_BF16_PEAK.get(next((k for k in CUDA_BF16_PEAK if k in torch.cuda.get_device_name()), "H100"))
            if device.type == "cuda" else measure_cpu_peak(torch))

    def batch():
        starts = torch.randint(0, len(train_tokens) - T - 1, (B,), generator=batch_gen)
        idx = torch.stack([train_tokens[s:s + T + 1] for s in starts.tolist()])
        return idx[:, :-1].to(device), idx[:, 1:].to(device)

    step, train_time, smooth = 0, 0.0, None
    try:
        while True:
            progress = (train_time / budget["value"] if budget["kind"] == "seconds" else step / budget["value"])
            if progress >= 1.0:
                break
            t0 = time.perf_counter()
            mult = lr_multiplier(progress, hp["warmdown_ratio"])
            for opt in opts:
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * mult
            loss_sum = 0.0
            for _ in range(accum):
                x, y = batch()
                with autocast:
                    loss = step_fn(x, y)
                (loss / accum).backward()
                loss_sum += loss.item() / accum
            if not math.isfinite(loss_sum) or loss_sum > DIVERGED_LOSS:
                summary["status"] = "diverged"
                summary["error"] = f"training loss {loss_sum} at step {step}"
                break
            for opt in opts:
                opt.step()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if args.compile and step < COMPILE_WARMUP_STEPS:  # compilation is not training time
                summary["warmup_seconds"] = round(summary.get("warmup_seconds", 0.0) + time.perf_counter() - t0, 3)
            else:
                train_time += time.perf_counter() - t0
            step += 1
            smooth = loss_sum if smooth is None else 0.9 * smooth + 0.1 * loss_sum
            if args.verbose and step % 10 == 0:
                print(f"step {step} loss {loss_sum:.4f} progress {progress:.2f}", file=sys.stderr)
        if summary["status"] == "ok":
            bad = [k for k, t in model.state_dict().items() if not bool(torch.isfinite(t).all())]
            val_bpb = evaluate_bpb(model, corpus.val, T, args.eval_tokens, device, autocast) if not bad else math.nan
            if math.isfinite(val_bpb):
                summary["val_bpb"] = round(val_bpb, 6)
                summary["train_loss"] = round(smooth, 6) if smooth is not None else None
            else:
                summary["status"] = "diverged"
                summary["error"] = f"non-finite weights ({', '.join(bad[:3])})" if bad else "non-finite val_bpb"
    except torch.OutOfMemoryError as exc:
        summary.update(status="oom", val_bpb=None, error=str(exc).splitlines()[0])
    except (RuntimeError, MemoryError) as exc:  # CPU allocators say "can't allocate memory"
        text = str(exc).lower()
        if not isinstance(exc, MemoryError) and "out of memory" not in text and "allocate memory" not in text:
            raise
        summary.update(status="oom", val_bpb=None, error=(str(exc).splitlines() or [type(exc).__name__])[0])
    tokens = step * accum * B * T
    timed_steps = step - min(step, COMPILE_WARMUP_STEPS) if args.compile else step
    summary.update(
        training_seconds=round(train_time, 3), num_steps=step, total_tokens_M=round(tokens / 1e6, 6),
        mfu_percent=round(100 * model.matmul_flops_per_token() * timed_steps * accum * B * T / train_time / peak, 3)
        if train_time > 0 else 0.0,
        peak_vram_mb=round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else 0.0)
    if summary["status"] == "ok":
        meta = {"run_id": args.run_id, "config_id": row["config_id"], "seed": str(args.seed), "step": str(step),
                "model_config": json.dumps(cfg, sort_keys=True), "data": corpus.spec,
                "eval_tokens": str(args.eval_tokens), "runner_sha256": summary["runner_sha256"],
                "val_bpb": f"{summary['val_bpb']:.6f}", "dtype": "float32", "device": device.type,
                "eval_sha256": summary["eval_sha256"]}
        if args.rng_seed is not None:
            meta["rng_seed"] = str(args.rng_seed)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        data = safetensors_bytes(state, meta)
        atomic_write(Path(args.out) / "checkpoint.safetensors", data)
        import hashlib

        summary["checkpoint"] = "checkpoint.safetensors"
        summary["checkpoint_sha256"] = hashlib.sha256(data).hexdigest()
    summary["finished_at"] = utc_now()
    summary["total_seconds"] = round(time.time() - t_start, 3)
    return summary


def safetensors_bytes(state: dict, metadata: dict) -> bytes:
    """A safetensors file with sorted header keys, so equal weights give equal bytes.

    (safetensors' own writer orders `__metadata__` arbitrarily between processes.)
    """
    import torch

    dtypes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}
    header, chunks, offset = {"__metadata__": dict(sorted(metadata.items()))}, [], 0
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), sort_keys=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def eval_slice(val, seq_len: int, eval_tokens: int):
    """The validation bytes scored: `eval_tokens` rounded down to whole sequences (at least one), plus one."""
    n_seq = max(1, eval_tokens // seq_len)
    need = n_seq * seq_len + 1
    if len(val) < need:
        raise ValueError(f"validation data holds {len(val)} bytes; eval needs {need}")
    return val[:need], n_seq


def eval_bytes_sha256(val, seq_len: int, eval_tokens: int) -> str:
    """sha256 of the exact validation bytes scored, recorded so `verify --deep` can tell data drift apart."""
    import hashlib

    return hashlib.sha256(eval_slice(val, seq_len, eval_tokens)[0].tobytes()).hexdigest()


def evaluate_bpb(model, val, seq_len: int, eval_tokens: int, device, autocast=None) -> float:
    """Bits per byte on the first `eval_tokens` validation targets (independent of training batch size)."""
    import torch

    chunk, n_seq = eval_slice(val, seq_len, eval_tokens)
    v = torch.from_numpy(chunk.astype("int64"))
    x = v[:-1].view(n_seq, seq_len)
    y = v[1:].view(n_seq, seq_len)
    total_nats = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, n_seq, 32):
            with (autocast or _null()):
                nats = model(x[i:i + 32].to(device), y[i:i + 32].to(device), reduction="sum")
            total_nats += float(nats.double())
    model.train()
    return total_nats / (math.log(2) * n_seq * seq_len)


def print_block(s: dict) -> None:
    """The autoresearch summary block (same keys and formats), then what makes the run auditable."""
    def num(key, fmt):
        v = s.get(key)
        return "null" if v is None else format(v, fmt)

    print("---")
    print(f"val_bpb:          {num('val_bpb', '.6f')}")
    print(f"training_seconds: {num('training_seconds', '.1f')}")
    print(f"total_seconds:    {num('total_seconds', '.1f')}")
    print(f"peak_vram_mb:     {num('peak_vram_mb', '.1f')}")
    print(f"mfu_percent:      {num('mfu_percent', '.2f')}")
    print(f"total_tokens_M:   {num('total_tokens_M', '.3f')}")
    print(f"num_steps:        {s.get('num_steps')}")
    print(f"num_params_M:     {num('num_params_M', '.3f')}")
    print(f"depth:            {s.get('model_config', {}).get('n_layer')}")
    print(f"status:           {s.get('status')}")
    print(f"floor_bpb:        {num('floor_bpb', '.6f')}")
    print(f"seed:             {s.get('seed')}")
    if s.get("rng_seed") is not None:
        print(f"rng_seed:         {s.get('rng_seed')}")
    print(f"device:           {s.get('device')}")
    print(f"dtype:            {s.get('dtype')}")
    print(f"budget_mode:      {s.get('budget', {}).get('kind')}")
    print(f"budget_value:     {s.get('budget', {}).get('value')}")
    print(f"runner_sha256:    {s.get('runner_sha256')}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="runner/train.py", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--matrix", help="candidate matrix CSV (with --config-id)")
    src.add_argument("--config-json", help="the matrix row as a JSON object")
    p.add_argument("--config-id")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--rng-seed", type=int, help="seed the generators with this instead of --seed (kept as identity)")
    p.add_argument("--budget", required=True, help="30s or 200steps")
    p.add_argument("--out", required=True)
    p.add_argument("--run-id")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=DEFAULT_DATA, help="markov:seed=N (default), text:PATH, parquet:PATH")
    p.add_argument("--eval-tokens", type=int, default=32768)
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.matrix:
            if not args.config_id:
                raise ValueError("--matrix needs --config-id")
            row = read_matrix_row(args.matrix, args.config_id)
        else:
            row = json.loads(args.config_json)
            if "config_id" not in row:
                raise ValueError("--config-json needs a config_id")
        parse_budget(args.budget)
        if args.rng_seed is not None and not 0 <= args.rng_seed < 2 ** 62:
            raise ValueError(f"--rng-seed {args.rng_seed} is outside 0 .. 2**62-1")
        model_config_from_row(row)
        hyperparameters(row)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.run_id = args.run_id or f"{row['config_id']}-s{args.seed}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = train(args, row)
    except Exception as exc:  # noqa: BLE001 - a crashed run still gets a summary
        traceback.print_exc()
        now = utc_now()
        summary = {"run_id": args.run_id, "config_id": row["config_id"], "seed": args.seed, "status": "failed",
                   "val_bpb": None, "training_seconds": 0.0, "total_seconds": 0.0, "num_steps": 0,
                   "total_tokens_M": 0.0, "num_params_M": 0.0, "peak_vram_mb": 0.0, "mfu_percent": 0.0,
                   "started_at": now, "finished_at": now, "runner_sha256": runner_tree_sha256(),
                   "budget": parse_budget(args.budget), "device": args.device, "dtype": "",
                   "checkpoint": None, "checkpoint_sha256": None, "error": f"{type(exc).__name__}: {exc}"}
        if args.rng_seed is not None:
            summary["rng_seed"] = args.rng_seed
    atomic_write(out / "summary.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    print_block(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
