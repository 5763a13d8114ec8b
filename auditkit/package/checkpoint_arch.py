"""A checkpoint's tensors against the architecture its metadata names (`model_config`, as the
runner reads it): missing, unexpected and mis-shaped tensors, and the parameter count the
architecture implies.  The runner's torch-free `runner.arch` is imported only when asked.
"""

from __future__ import annotations

import json

from auditkit.package.checkpoint import CheckpointScan
from auditkit.package.checkpoint_header import clip, tensor_location


def model_config(scan: CheckpointScan):
    """The metadata's model_config as the runner reads it; ValueError (with why) when it names none.

    A config whose layer count implies far more tensors than the file holds is refused
    before the runner enumerates them (a hostile `n_layer` of 10**9 would take hours)."""
    try:
        cfg = json.loads((scan.metadata or {}).get("model_config", ""))
    except RecursionError:
        raise ValueError("model_config nested too deeply") from None
    n = cfg.get("n_layer") if isinstance(cfg, dict) else None
    if type(n) is int and n > max(64, len(scan.tensors)):
        raise ValueError(f"n_layer {n} implies at least {6 * n + 4} tensors; the file holds {len(scan.tensors)}")
    return cfg


def architecture_problems(scan: CheckpointScan) -> list[tuple[str, str, str, str]]:
    """Names and shapes against the architecture the metadata's model_config implies."""
    out = []
    try:
        cfg = model_config(scan)
        from auditkit.runner.arch import expected_tensors

        want = expected_tensors(cfg)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [("checkpoint-model-config", "__metadata__.model_config", "a model_config the runner knows",
                 clip(f"{type(exc).__name__}: {exc}"))]
    got = {k: shape for k, (_, shape) in scan.tensors.items()}
    for name in sorted(set(want) - set(got)):
        out.append(("checkpoint-tensor-missing", tensor_location(name), f"shape {list(want[name])}", "absent"))
    for name in sorted(set(got) - set(want)):
        out.append(("checkpoint-tensor-unexpected", tensor_location(name), "no such tensor in this architecture",
                    f"shape {list(got[name])}"))
    for name in sorted(set(got) & set(want)):
        if tuple(got[name]) != tuple(want[name]):
            out.append(("checkpoint-shape", tensor_location(name), f"shape {list(want[name])}", f"shape {list(got[name])}"))
    return out


def expected_num_params(scan: CheckpointScan) -> int | None:
    """`num_params` of the architecture the metadata names, or None when it names none the runner knows."""
    try:
        cfg = model_config(scan)
        from auditkit.runner.arch import num_params

        return int(num_params(cfg))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def param_count(scan: CheckpointScan) -> int:
    n = 0
    for _, shape in scan.tensors.values():
        k = 1
        for s in shape:
            k *= s
        n += k
    return n
