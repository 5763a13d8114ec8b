"""`verify --deep`: rebuild each checkpoint's model and re-evaluate the val_bpb its row claims.

Torch is imported here only, lazily; `verify` without `--deep` never needs it.
A checkpoint is read with safetensors (no pickle).  The metadata names the
architecture (`model_config`), the data spec, the tokenizer and the evaluation
protocol (`eval_tokens`, `eval_seq_len`), so the very validation tokens the
runner scored are regenerated; checkpoints of the first runner (no
`eval_seq_len`) were scored at their own training seq_len.

A relative text data path (`text:data/kjv.txt`) is read from the package when
the package carries that file (`protocol run` puts it there), through the
package store; otherwise from the working directory, as the run read it.
"""

from __future__ import annotations

import json
import os
import struct
import contextlib
from functools import lru_cache
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.findings import Finding

# The row prints 6 decimals: allow the rounding (5e-7) plus 1e-6 of float noise
# between thread counts on the same kind of device.
TOLERANCE = 1e-6 + 5e-7
# A CUDA (bf16) run re-evaluated in fp32 on a CPU: only a gross mismatch is detectable.
CROSS_DEVICE_TOLERANCE = 2e-2
# A CPU run under bf16 autocast re-evaluated on another CPU: bf16 matrix products are computed by
# different kernels on different instruction sets (native AVX512-BF16 or AMX, or emulated in
# fp32), so the last digits move. Measured: 3e-6 bpb between the AMD EPYC that re-evaluated the
# shipped package's bf16 checkpoints and the machine that trained them. 1e-4 bpb is a hundredth
# of one score's standard error and of the rules' thresholds: any edit that matters is caught.
CPU_BF16_TOLERANCE = 1e-4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """The cores not busy with other work: usable cores minus the 1-minute load average, at least
    one (a loaded machine gets one thread: OpenMP threads that wait for busy cores stall each
    other, so two threads on a half-busy 2-core machine run many times slower than one)."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def use_threads(requested: int | None) -> str:
    """Set torch's thread count for re-evaluation (`requested`, else the free cores) and say
    which was chosen and why (one line for stderr)."""
    import torch

    cores = usable_cores()
    if requested is not None:
        n, why = requested, "as --threads asked"
    else:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
        n = free_cores(cores, load)
        why = (f"{cores} core(s), load {load:.1f}" + (": the machine is busy" if n == 1 and cores > 1 else "")
               + "; choose with --threads N")
    torch.set_num_threads(n)
    return f"verify --deep: {n} torch thread(s) ({why})"


class DeepProgress:
    """`checkpoint 3/12 ...` lines for stderr: every checkpoint on a terminal, else at most one
    per `interval` seconds (and the last), so a log stays short and stdout/JSON stay clean."""

    def __init__(self, total: int, say, *, tty: bool, interval: float = 30.0, clock=None):
        import time

        self.total, self.say, self.tty, self.interval = total, say, tty, interval
        self.clock = clock or time.monotonic
        self.last: float | None = None

    def __call__(self, i: int, path: str) -> None:
        now = self.clock()
        if self.tty or self.last is None or i == self.total or now - self.last >= self.interval:
            self.last = now
            self.say(f"verify --deep: checkpoint {i}/{self.total} {path}")



def _close(got: float, claimed: str, tolerance: float) -> bool:
    try:
        return abs(got - float(claimed)) <= tolerance
    except ValueError:
        return False

def checkpoint_metadata(data: bytes) -> dict:
    if len(data) < 8:
        raise ValueError("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError("header length runs past the end of the file")
    return json.loads(data[8:8 + n]).get("__metadata__") or {}


DATA_CAP = 1 << 30  # a carried corpus larger than this is not read whole


class DataUnavailable(ValueError):
    """The data a run scored cannot be read here: --deep cannot check, which is no finding (exit 2)."""


def package_data_reader(package, files):
    """read(rel) -> bytes: a data file the directory package carries, read through the store, or
    else the working directory's (where the run read it).  One reader per verify run (it keys
    the cache of evaluation sets)."""
    root = Path(package)
    from auditkit.errors import PackageDefect
    from auditkit.package.store import PackageStore

    store = PackageStore(root) if root.is_dir() else None

    def read(rel: str) -> bytes:
        if store is None or rel not in files:
            try:
                return Path(rel).read_bytes()
            except OSError as exc:
                why = ("the archive carries it, but --deep reads a carried data file from a package directory "
                       "only: extract the archive and verify the directory") if rel in files else \
                      "the package does not carry it, so it is read from the working directory"
                raise DataUnavailable(f"{rel}: cannot read the data file ({exc.strerror}); {why}") from None
        try:
            return store.read_bytes(rel, cap=DATA_CAP)
        except PackageDefect as exc:
            raise ValueError(f"{rel}: {exc.finding.found or exc.finding.code}") from None
    return read


@lru_cache(maxsize=4)
def _eval_set(data, tokenizer, vocab, eval_tokens, eval_seq_len, read):
    from auditkit.runner.train import eval_set_for

    return eval_set_for(data, tokenizer, vocab, eval_tokens, eval_seq_len, read=read)


def reevaluate_checkpoint(data: bytes, row: dict[str, str], path: str, read=None) -> list[Finding]:
    """Findings for a checkpoint whose identity or re-evaluated val_bpb disagrees with its run row."""
    try:
        import torch
        from safetensors.torch import load

        from auditkit.runner.evaluation import evaluate
        from auditkit.runner.model import GPT
    except ImportError as exc:
        raise AuditError(f"--deep needs torch: {exc}", hint="pip install torch==2.13.0 (or pretrain-auditkit[runner])") from exc
    where = f"row {row.get('run_id', '?')}"
    try:
        meta = checkpoint_metadata(data)
        cfg = json.loads(meta["model_config"])
    except (ValueError, KeyError) as exc:
        return [Finding(path, "deep-unreadable", where, "a safetensors file with model_config metadata", str(exc),
                        "the checkpoint cannot be re-evaluated: its metadata names no readable model_config")]
    findings = []
    for key in ("run_id", "config_id", "seed"):
        if str(meta.get(key)) != str(row.get(key)):
            findings.append(Finding(path, "deep-checkpoint-mismatch", f"{where}, metadata {key}",
                                    str(row.get(key)), str(meta.get(key)),
                                    "this checkpoint belongs to another run than the row that names it"))
    # Re-evaluate on the kind of device the run used (bf16 autocast on CUDA, fp32 on CPU); a
    # CUDA checkpoint checked on a CPU-only machine gets the cross-device tolerance.
    ran_on = meta.get("device", "cpu")
    same_kind = ran_on == "cpu" or (ran_on == "cuda" and torch.cuda.is_available())
    device = torch.device(ran_on if same_kind else "cpu")
    tolerance = TOLERANCE if same_kind else CROSS_DEVICE_TOLERANCE
    try:
        model = GPT(cfg)
        model.load_state_dict(load(data), strict=True)
        model.to(device)
        es = _eval_set(meta.get("data", "markov:seed=0"), meta.get("tokenizer", "bytes"),
                       int(meta.get("tokenizer_vocab", 8192)), int(meta.get("eval_tokens", 32768)),
                       int(meta.get("eval_seq_len", cfg["seq_len"])), read)
        recorded = meta.get("eval_sha256")
        if recorded and es.sha256 != recorded:
            findings.append(Finding(path, "deep-data-mismatch", f"{where}, metadata data {meta.get('data')!r}",
                                    recorded, es.sha256,
                                    "the regenerated validation tokens differ from those the run scored"))
            return findings
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
        got, _ = evaluate(model, es, device, autocast)
        bf16_cpu = None
        if device.type == "cpu" and not _close(got, row.get("val_bpb", ""), tolerance):
            # a CPU run may have trained and evaluated under bf16 autocast (the runner's --dtype
            # bfloat16, a host profile's dtype): its checkpoint stores fp32 weights either way
            bf16_cpu, _ = evaluate(model, es, device, torch.autocast("cpu", dtype=torch.bfloat16))
            # a checkpoint that says it was scored under bf16 autocast (runner metadata `autocast`)
            # gets the bf16 tolerance; one that does not say (older runners) only the strict one
            loose = max(tolerance, CPU_BF16_TOLERANCE) if meta.get("autocast") == "bfloat16" else tolerance
            if _close(bf16_cpu, row.get("val_bpb", ""), loose):
                got, tolerance = bf16_cpu, loose
    except DataUnavailable as exc:
        raise AuditError(f"--deep cannot re-evaluate {path}: {exc}",
                         hint="give the data where the run read it (its metadata names the spec), or verify the "
                              "package directory that carries it") from None
    except Exception as exc:  # noqa: BLE001 - any failure to rebuild is a finding about this file
        findings.append(Finding(path, "deep-rebuild-failed", where, "a model that loads and evaluates",
                                f"{type(exc).__name__}: {exc}", "the checkpoint does not match its architecture"))
        return findings
    claimed = row.get("val_bpb", "")
    try:
        claimed_f = float(claimed)
    except ValueError:
        claimed_f = None
    if claimed_f is None or not abs(got - claimed_f) <= tolerance:
        note = "" if same_kind else f" (trained on {ran_on}, re-evaluated on cpu; tolerance {tolerance})"
        if bf16_cpu is not None:
            note += f" (under CPU bf16 autocast it scores {bf16_cpu:.6f})"
            if _close(bf16_cpu, claimed, CPU_BF16_TOLERANCE) and meta.get("autocast") != "bfloat16":
                note += (f"; that is within {CPU_BF16_TOLERANCE:g} of the row: a bf16 run re-evaluated on a CPU whose "
                         "bf16 kernels differ from the training CPU's moves the last digits, and this checkpoint "
                         "does not record that it was scored under bf16 (a runner older than its `autocast` "
                         "metadata): re-evaluate on the kind of CPU that trained it")
        findings.append(Finding(path, "deep-val-bpb-mismatch", f"{where}, column val_bpb", claimed,
                                f"{got:.6f}", "the checkpoint does not score what its row claims" + note))
    return findings
