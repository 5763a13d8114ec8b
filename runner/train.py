"""Train one cell of a study and write summary.json and checkpoint.safetensors.

    python -m auditkit.runner.train --matrix manifests/micro_matrix.csv --config-id bridge \
        --seed 42 --budget 30s --out runs/bridge-s42 [--device cpu|cuda] [--threads 2] \
        [--data markov:seed=0|text:PATH|parquet:PATH] [--tokenizer auto|bytes|bpe] [--vocab-size 8192] \
        [--eval-tokens 524288] [--eval-seq-len 128] [--compile] [--check] [--rng-seed N]

(also `python runner/train.py ...` from the repository root).  Budgets: `30s` of
wall-clock training (schedules follow elapsed/budget, as in autoresearch) or
`200steps` (schedules follow step/steps; on CPU the same seed and thread count
give bit-identical weights).  Every candidate is scored on the same evaluation
(`--eval-tokens` validation targets in windows of `--eval-seq-len`, whatever
its training seq_len).  Prints the autoresearch-style summary after `---`.
`--rng-seed N` seeds the generators (weights, batches) with N instead of --seed,
which stays the run's identity (an anchored stage's seed derived from the
freeze token); summary and checkpoint metadata record it as `rng_seed`.
Exit status 0 whenever a summary was written (look at its `status`: ok,
diverged, oom, failed), 2 for bad arguments or unusable data (before training).
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import math
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the sibling modules importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from arch import model_config_from_row, num_params, runner_tree_sha256  # noqa: E402
    from data import DEFAULT_DATA, load_corpus  # noqa: E402
    from evaluation import make_eval_set  # noqa: E402
    from files import atomic_write, cache_dir  # noqa: E402
    from packing import make_packer  # noqa: E402
    from tokenizer import DEFAULT_VOCAB  # noqa: E402
else:
    from .arch import model_config_from_row, num_params, runner_tree_sha256
    from .data import DEFAULT_DATA, load_corpus
    from .evaluation import make_eval_set
    from .files import atomic_write, cache_dir
    from .packing import make_packer
    from .tokenizer import DEFAULT_VOCAB

HP_DEFAULTS = {
    "total_batch_size": 4096,     # tokens per optimizer step
    "device_batch_size": 16,      # sequences per forward pass
    # upstream's values; the AdamW rates are scaled by 1/sqrt(d_model/768) (runner/optim.py)
    "matrix_lr": 0.04,
    "embedding_lr": 0.6,
    "unembedding_lr": 0.004,
    "scalar_lr": 0.5,
    "weight_decay": 0.2,          # Muon's cautious weight decay, decaying linearly to 0
    "warmup_ratio": 0.0,
    "warmdown_ratio": 0.5,
    "final_lr_frac": 0.0,
}
EVAL_TOKENS = 524288   # validation targets scored (whole windows); runner/README.md gives the standard error
EVAL_SEQ_LEN = 128     # the evaluation context, the same for every candidate (upstream: MAX_SEQ_LEN)
COMPILE_WARMUP_STEPS = 2  # with --compile, the first steps (compilation) are left off the training clock
FLOOR_VERSION = 1  # bump when MarkovChain.protocol_floor_bpb changes
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


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for reuse, as a caching allocator would, instead of giving
    every large block back to the system: otherwise each activation of a CPU step is a fresh
    mapping whose pages fault in one by one (about 15% of a step's CPU time at the micro sizes).
    Numbers are unchanged; a no-op where there is no glibc."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: blocks up to 32 MiB come from the heap
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap
    except (OSError, AttributeError):
        pass


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


def floor_for(corpus, es) -> float | None:
    """The exact floor under this evaluation (Markov corpus read as bytes), cached on disk; else None."""
    if corpus.chain is None or corpus.tokenizer.name != "bytes":
        return None
    key = hashlib.sha256(f"{corpus.spec}|{es.sha256}|{es.seq_len}|{FLOOR_VERSION}".encode()).hexdigest()[:24]
    path = cache_dir() / f"floor-{key}.json"
    try:
        return float(json.loads(path.read_text())["floor_bpb"])
    except (OSError, ValueError, KeyError):
        pass
    floor = corpus.chain.protocol_floor_bpb(es.tokens, es.seq_len)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"floor_bpb": floor}).encode())
    except OSError:
        pass
    return floor


def prepare(args, row: dict):
    """Everything read before training: model config, hyperparameters, corpus, evaluation set.

    Raises ValueError (or OSError, ImportError) for arguments or data the run cannot use,
    so that such a run exits 2 before it starts.
    """
    budget = parse_budget(args.budget)
    hp = hyperparameters(row)
    model_config_from_row(row)  # a bad matrix value is reported before any data is read
    corpus = load_corpus(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size)
    cfg = model_config_from_row(row, vocab_size=corpus.tokenizer.vocab_size)
    if args.eval_seq_len > 10 * cfg["seq_len"]:
        raise ValueError(f"eval_seq_len {args.eval_seq_len} is over ten times the training seq_len "
                         f"{cfg['seq_len']} (the model's rotary tables end there)")
    es = make_eval_set(corpus.val, corpus.tokenizer.token_bytes, args.eval_tokens, args.eval_seq_len)
    if len(corpus.train) < cfg["seq_len"] + 2:
        raise ValueError(f"data {args.data!r}: {len(corpus.train)} training tokens, fewer than one "
                         f"sequence of {cfg['seq_len']}")
    return budget, hp, cfg, corpus, es


def train(args, row: dict, prepared) -> dict:
    import torch

    try:
        from .evaluation import bpb_and_se, eval_docs_csv, per_document, position_nats
        from .model import GPT
        from .optim import apply_schedules, build_optimizers
    except ImportError:
        from evaluation import bpb_and_se, eval_docs_csv, per_document, position_nats
        from model import GPT
        from optim import apply_schedules, build_optimizers

    t_start = args.t_start
    started_at = args.started_at
    budget, hp, cfg, corpus, es = prepared
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # bf16 autocast: always on CUDA (as upstream); on CPU when asked (--dtype bfloat16)
    bf16 = device.type == "cuda" or args.dtype == "bfloat16"
    dtype = "bfloat16" if bf16 else "float32"
    T, B = cfg["seq_len"], hp["device_batch_size"]
    accum = max(1, hp["total_batch_size"] // (B * T))
    summary = {
        "run_id": args.run_id, "config_id": row["config_id"], "seed": args.seed, "status": "ok",
        "val_bpb": None, "val_bpb_se": None, "training_seconds": 0.0, "total_seconds": 0.0, "num_steps": 0,
        "total_tokens_M": 0.0, "num_params_M": round(num_params(cfg) / 1e6, 6), "peak_vram_mb": 0.0,
        "mfu_percent": 0.0, "started_at": started_at, "finished_at": started_at,
        "runner_sha256": runner_tree_sha256(), "budget": budget, "device": device.type,
        "dtype": dtype, "threads": args.threads,
        "data": corpus.spec, "tokenizer": corpus.tokenizer.label(), "tokenizer_sha256": corpus.tokenizer.sha256,
        "floor_bpb": floor_for(corpus, es), "entropy_rate_bpb": corpus.floor_bpb,
        **es.record(), "model_config": cfg, "hyperparameters": hp, "checkpoint": None, "checkpoint_sha256": None,
    }
    rng_seed = args.seed if args.rng_seed is None else args.rng_seed
    if args.rng_seed is not None:
        summary["rng_seed"] = args.rng_seed
    torch.manual_seed(rng_seed)
    gen = torch.Generator().manual_seed(rng_seed)
    model = GPT(cfg)
    model.init_weights(gen)
    model.to(device)
    opts = build_optimizers(model, hp, device.type)
    step_fn = torch.compile(model, dynamic=False) if args.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else _null()
    packer = make_packer(corpus.train, corpus.tokenizer.bos, T + 1, rng_seed + 1_000_003)
    summary["batching"] = "best-fit" if type(packer).__name__ == "BestFitPacker" else "random-windows"
    peak = (CUDA_BF16_PEAK.get(next((k for k in CUDA_BF16_PEAK if k in torch.cuda.get_device_name()), "H100"))
            if device.type == "cuda" else measure_cpu_peak(torch))

    def batch():
        idx = torch.from_numpy(packer.next_rows(B))
        return idx[:, :-1].to(device), idx[:, 1:].to(device)

    step, train_time, smooth = 0, 0.0, None
    try:
        while True:
            progress = (train_time / budget["value"] if budget["kind"] == "seconds" else step / budget["value"])
            if progress >= 1.0:
                break
            t0 = time.perf_counter()
            apply_schedules(opts, progress, step, hp)
            loss_sum = 0.0
            for _ in range(accum):
                x, y = batch()
                with autocast:
                    loss = step_fn(x, y)
                (loss / accum).backward()
                loss_sum += loss.item() / accum
            if not math.isfinite(loss_sum) or loss_sum > diverged_loss(cfg):
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
            if step == 0:  # as upstream: no garbage-collector pauses once the first step has run
                gc.collect()
                gc.freeze()
                gc.disable()
            step += 1
            smooth = loss_sum if smooth is None else 0.9 * smooth + 0.1 * loss_sum
            if args.verbose and step % 10 == 0:
                print(f"step {step} loss {loss_sum:.4f} progress {progress:.2f}", file=sys.stderr)
        gc.enable()
        if summary["status"] == "ok":
            bad = [k for k, t in model.state_dict().items() if not bool(torch.isfinite(t).all())]
            t_eval = time.perf_counter()
            pos = position_nats(model, es, device, autocast) if not bad else None
            if pos is not None:
                nbytes = es.token_bytes[es.tokens[1:]].reshape(es.n_windows, es.seq_len).sum(axis=1)
                val_bpb, se = bpb_and_se(pos.sum(axis=1), nbytes)
            else:
                val_bpb, se = math.nan, math.nan
            summary["eval_seconds"] = round(time.perf_counter() - t_eval, 3)
            if math.isfinite(val_bpb):
                docs = eval_docs_csv(*per_document(es, pos, corpus.tokenizer.bos))
                summary["eval_docs_csv"] = docs
                summary["eval_docs_sha256"] = hashlib.sha256(docs.encode()).hexdigest()
                atomic_write(Path(args.out) / "eval_docs.csv", docs.encode())
                summary["val_bpb"] = round(val_bpb, 6)
                summary["val_bpb_se"] = round(se, 6) if math.isfinite(se) else None
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
    summary["cropped_tokens"] = int(packer.cropped_tokens)
    summary.update(
        training_seconds=round(train_time, 3), num_steps=step, total_tokens_M=round(tokens / 1e6, 6),
        mfu_percent=round(100 * model.flops_per_token() * timed_steps * accum * B * T / train_time / peak, 3)
        if train_time > 0 else 0.0, peak_flops=peak,
        peak_vram_mb=round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else 0.0)
    if summary["status"] == "ok":
        meta = {"run_id": args.run_id, "config_id": row["config_id"], "seed": str(args.seed), "step": str(step),
                "model_config": json.dumps(cfg, sort_keys=True), "data": corpus.spec,
                "tokenizer": corpus.tokenizer.name, "tokenizer_vocab": str(args.vocab_size),
                "tokenizer_sha256": corpus.tokenizer.sha256,
                "eval_tokens": str(es.n_windows * es.seq_len), "eval_seq_len": str(es.seq_len),
                "eval_bytes": str(es.n_bytes), "eval_sha256": es.sha256,
                "runner_sha256": summary["runner_sha256"], "val_bpb": f"{summary['val_bpb']:.6f}",
                "val_bpb_se": "" if summary["val_bpb_se"] is None else f"{summary['val_bpb_se']:.6f}",
                "dtype": "float32", "device": device.type,  # the stored weights: always fp32
                "autocast": "bfloat16" if bf16 else ""}       # what the row's val_bpb was computed under
        if args.rng_seed is not None:
            meta["rng_seed"] = str(args.rng_seed)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
        data = safetensors_bytes(state, meta)
        atomic_write(Path(args.out) / "checkpoint.safetensors", data)
        summary["checkpoint"] = "checkpoint.safetensors"
        summary["checkpoint_sha256"] = hashlib.sha256(data).hexdigest()
    summary["finished_at"] = utc_now()
    summary["total_seconds"] = round(time.time() - t_start, 3)
    return summary


def diverged_loss(cfg: dict) -> float:
    """Twice the loss of a uniform guess over the vocabulary."""
    return 2 * math.log(cfg["vocab_size"])


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


def eval_set_for(data: str, tokenizer: str, vocab_size: int, eval_tokens: int, eval_seq_len: int, read=None):
    """The evaluation set a run with these settings scored (for `verify --deep`; `read(path)`
    reads a text file, as runner/data.py's read_documents)."""
    corpus = load_corpus(data, tokenizer=tokenizer, vocab_size=vocab_size, read=read)
    return make_eval_set(corpus.val, corpus.tokenizer.token_bytes, eval_tokens, eval_seq_len)


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
    print(f"val_bpb_se:       {num('val_bpb_se', '.6f')}")
    if s.get("floor_bpb") is not None:
        print(f"floor_bpb:        {num('floor_bpb', '.6f')}")
    print(f"eval_seq_len:     {s.get('eval_seq_len')}")
    print(f"eval_tokens:      {s.get('eval_tokens')}")
    print(f"eval_bytes:       {s.get('eval_bytes')}")
    print(f"eval_sha256:      {s.get('eval_sha256')}")
    print(f"tokenizer:        {s.get('tokenizer')}")
    print(f"seed:             {s.get('seed')}")
    if s.get("rng_seed") is not None:
        print(f"rng_seed:         {s.get('rng_seed')}")
    print(f"device:           {s.get('device')}")
    print(f"dtype:            {s.get('dtype')}")
    print(f"budget_mode:      {s.get('budget', {}).get('kind')}")
    print(f"budget_value:     {s.get('budget', {}).get('value')}")
    print(f"runner_sha256:    {s.get('runner_sha256')}")


def main(argv=None) -> int:
    t_start, started_at = time.time(), utc_now()
    p = argparse.ArgumentParser(prog="runner/train.py", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--matrix", help="candidate matrix CSV (with --config-id)")
    src.add_argument("--config-json", help="the matrix row as a JSON object")
    p.add_argument("--config-id")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--rng-seed", type=int, help="seed the generators with this instead of --seed (kept as identity)")
    p.add_argument("--budget", required=True, help="30s or 200steps")
    p.add_argument("--out", help="run directory to write (required unless --check)")
    p.add_argument("--run-id")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="CPU: bfloat16 trains and evaluates under bf16 autocast (CUDA always does)")
    p.add_argument("--data", default=DEFAULT_DATA, help="markov:seed=N (default), text:PATH[,val=F], parquet:PATH[,val=F] (F: the fraction of documents held out, 0.1 by default)")
    p.add_argument("--tokenizer", default="auto", choices=["auto", "bytes", "bpe"],
                   help="auto: bytes for markov data, BPE for text")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB, help="BPE vocabulary size (with specials)")
    p.add_argument("--eval-tokens", type=int, default=EVAL_TOKENS, help="validation targets scored")
    p.add_argument("--eval-seq-len", type=int, default=EVAL_SEQ_LEN,
                   help="evaluation context length, the same for every candidate")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--check", action="store_true",
                   help="read the arguments and the data (tokenizer, evaluation set) and exit: 0 usable, 2 not")
    args = p.parse_args(argv)
    if not args.out and not args.check:
        p.error("--out is required")
    args.t_start, args.started_at = t_start, started_at
    keep_freed_memory()
    try:
        if args.matrix:
            if not args.config_id:
                raise ValueError("--matrix needs --config-id")
            row = read_matrix_row(args.matrix, args.config_id)
        else:
            row = json.loads(args.config_json)
            if "config_id" not in row:
                raise ValueError("--config-json needs a config_id")
        if args.rng_seed is not None and not 0 <= args.rng_seed < 2 ** 62:
            raise ValueError(f"--rng-seed {args.rng_seed} is outside 0 .. 2**62-1")
        prepared = prepare(args, row)
    except (OSError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        es = prepared[4]
        print(f"ok: data {args.data!r}, {prepared[3].tokenizer.label()}, evaluation of {es.n_tokens} tokens "
              f"({es.n_bytes} bytes) in windows of {es.seq_len}")
        return 0
    args.run_id = args.run_id or f"{row['config_id']}-s{args.seed}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = train(args, row, prepared)
    except Exception as exc:  # noqa: BLE001 - a crashed run still gets a summary
        traceback.print_exc()
        now = utc_now()
        summary = {"run_id": args.run_id, "config_id": row["config_id"], "seed": args.seed, "status": "failed",
                   "val_bpb": None, "training_seconds": 0.0, "total_seconds": 0.0, "num_steps": 0,
                   "total_tokens_M": 0.0, "num_params_M": 0.0, "peak_vram_mb": 0.0, "mfu_percent": 0.0,
                   "started_at": started_at, "finished_at": now, "runner_sha256": runner_tree_sha256(),
                   "budget": parse_budget(args.budget), "device": args.device, "dtype": "",
                   "checkpoint": None, "checkpoint_sha256": None, "error": f"{type(exc).__name__}: {exc}"}
        if args.rng_seed is not None:
            summary["rng_seed"] = args.rng_seed
    atomic_write(out / "summary.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    print_block(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
