"""Architecture arithmetic without torch: what a checkpoint must hold.

`auditkit verify` imports this module (never torch) to check that a checkpoint's
tensor names and shapes are exactly those its `model_config` implies, and that
its parameter count matches the run row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

VOCAB_SIZE = 256  # byte-level tokens (the default): one token is one byte
VE_GATE_CHANNELS = 32  # the value-embedding gate reads this many leading channels (as upstream)

DEFAULTS = {
    "depth": 2, "aspect_ratio": 32, "head_dim": 32, "seq_len": 128, "window_pattern": "L",
}


def _int(row: dict, key: str) -> int:
    v = row.get(key, "")
    if v in ("", None):
        return int(DEFAULTS[key])
    try:
        return int(float(v))
    except (TypeError, ValueError):
        raise ValueError(f"matrix column {key}: {v!r} is not an integer") from None


def model_config_from_row(row: dict, vocab_size: int = VOCAB_SIZE) -> dict:
    """The architecture a matrix row implies (model_dim = depth * aspect_ratio, rounded up to head_dim).

    `windows` holds each layer's attention window as upstream's flash-attention
    `window_size[0]`: a query at position i sees keys i-w .. i.  `L` is the training
    `seq_len`, `S` half of it, and the last layer is always `L`.
    """
    depth = _int(row, "depth")
    aspect = _int(row, "aspect_ratio")
    head_dim = _int(row, "head_dim")
    seq_len = _int(row, "seq_len")
    if min(depth, aspect, head_dim, seq_len) <= 0:
        raise ValueError("depth, aspect_ratio, head_dim and seq_len must be positive")
    n_embd = -(-depth * aspect // head_dim) * head_dim
    pattern = str(row.get("window_pattern") or DEFAULTS["window_pattern"]).upper()
    if not pattern or set(pattern) - {"S", "L"}:
        raise ValueError(f"matrix column window_pattern: {pattern!r} must be letters S and L")
    letters = [pattern[i % len(pattern)] for i in range(depth - 1)] + ["L"]
    return {"vocab_size": int(vocab_size), "n_layer": depth, "n_embd": n_embd, "n_head": n_embd // head_dim,
            "head_dim": head_dim, "seq_len": seq_len, "window_pattern": pattern,
            "windows": [seq_len if c == "L" else seq_len // 2 for c in letters],
            "ve_gate_channels": min(VE_GATE_CHANNELS, n_embd)}


def layer_windows(model_config: dict) -> list[int]:
    """Each layer's attention window (keys i-w .. i).

    A model_config without `windows` or `ve_gate_channels` was written by the
    first runner (before issue 14): there `S` saw seq_len//2 keys and `L` the
    whole training context; such checkpoints still load and re-evaluate.
    """
    if "windows" in model_config:
        return [int(w) for w in model_config["windows"]]
    T, n, pattern = model_config["seq_len"], model_config["n_layer"], model_config.get("window_pattern", "L")
    letters = [pattern[i % len(pattern)] for i in range(n - 1)] + ["L"]
    return [T - 1 if c == "L" else max(1, T // 2) - 1 for c in letters]


def has_value_embedding(layer: int, n_layer: int) -> bool:
    """Value embeddings on alternating layers, the last layer always included."""
    return layer % 2 == (n_layer - 1) % 2


def expected_tensors(model_config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a checkpoint of this architecture."""
    v, d, n = model_config["vocab_size"], model_config["n_embd"], model_config["n_layer"]
    out: dict[str, tuple[int, ...]] = {
        "wte.weight": (v, d),
        "lm_head.weight": (v, d),
        "resid_lambdas": (n,),
        "x0_lambdas": (n,),
    }
    for i in range(n):
        p = f"blocks.{i}."
        for name in ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj"):
            out[p + name + ".weight"] = (d, d)
        out[p + "mlp.c_fc.weight"] = (4 * d, d)
        out[p + "mlp.c_proj.weight"] = (d, 4 * d)
        if has_value_embedding(i, n):
            out[f"value_embeds.{i}.weight"] = (v, d)
            if model_config.get("ve_gate_channels"):  # input-dependent gate, as upstream
                out[p + "attn.ve_gate.weight"] = (model_config["n_head"], model_config["ve_gate_channels"])
            else:  # the first runner: one learned gate per head
                out[p + "attn.ve_gate"] = (model_config["n_head"],)
    return dict(sorted(out.items()))


def num_params(model_config: dict) -> int:
    total = 0
    for shape in expected_tensors(model_config).values():
        k = 1
        for s in shape:
            k *= s
        total += k
    return total


def runner_tree_sha256(root: str | Path | None = None) -> str:
    """sha256 of the runner source tree: lines "<sha256>  <name>\\n" of its *.py files, sorted."""
    root = Path(root) if root else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.glob("*.py")):
        h.update(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n".encode())
    return h.hexdigest()
