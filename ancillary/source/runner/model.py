"""The GPT of the runner (design after karpathy/autoresearch): rotary embeddings,
RMSNorm without weights, QK-norm, ReLU^2 MLP, value embeddings on alternating
layers, per-layer residual and x0 scalars, logit softcap; attention via PyTorch
SDPA with full (L) or half-context sliding-window (S) layers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from .arch import expected_tensors, has_value_embedding
except ImportError:  # run as a script from runner/
    from arch import expected_tensors, has_value_embedding

SOFTCAP = 15.0


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0):
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
    return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]


def apply_rotary(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: dict, layer: int):
        super().__init__()
        d = cfg["n_embd"]
        self.n_head, self.head_dim = cfg["n_head"], cfg["head_dim"]
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)
        self.c_v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.ve_gate = nn.Parameter(torch.zeros(self.n_head)) if has_value_embedding(layer, cfg["n_layer"]) else None

    def forward(self, x, ve, cos, sin, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate)[None, None, :, None]
            v = v + gate * ve.view(B, T, self.n_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.c_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: dict, layer: int):
        super().__init__()
        self.attn = Attention(cfg, layer)
        self.mlp = MLP(cfg["n_embd"])

    def forward(self, x, ve, cos, sin, mask):
        x = x + self.attn(norm(x), ve, cos, sin, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = dict(cfg)
        v, d, n = cfg["vocab_size"], cfg["n_embd"], cfg["n_layer"]
        self.wte = nn.Embedding(v, d)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(n)])
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(v, d) for i in range(n) if has_value_embedding(i, n)})
        self.lm_head = nn.Linear(d, v, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(n))
        self.x0_lambdas = nn.Parameter(torch.zeros(n))
        cos, sin = rotary_tables(cfg["seq_len"], cfg["head_dim"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        T = cfg["seq_len"]
        window = max(1, T // 2)
        i = torch.arange(T)
        causal = i[None, :] <= i[:, None]
        self.register_buffer("short_mask", causal & (i[:, None] - i[None, :] < window), persistent=False)
        pattern = cfg.get("window_pattern", "L")
        self.windows = [pattern[j % len(pattern)] for j in range(n)]
        self.windows[-1] = "L"  # the last layer always sees the whole context
        got = {k: tuple(t.shape) for k, t in self.state_dict().items()}
        assert got == expected_tensors(cfg), "model and runner/arch.py disagree"

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        d = self.cfg["n_embd"]
        s = 3 ** 0.5 * d ** -0.5
        for name, p in self.named_parameters():
            if name.endswith(("c_q.weight", "c_k.weight", "c_v.weight", "c_fc.weight")):
                p.uniform_(-s, s, generator=generator)
            elif name.endswith("c_proj.weight"):
                p.zero_()
            elif name in ("wte.weight",) or name.startswith("value_embeds."):
                p.normal_(0.0, 1.0, generator=generator)
            elif name == "lm_head.weight":
                p.normal_(0.0, 0.001, generator=generator)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)
        for blk in self.blocks:
            if blk.attn.ve_gate is not None:
                blk.attn.ve_gate.zero_()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        T = idx.shape[1]
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.wte(idx))
        for i, blk in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            mask = None if self.windows[i] == "L" else self.short_mask[:T, :T]
            x = blk(x, ve, cos, sin, mask)
        logits = self.lm_head(norm(x)).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)

    def matmul_flops_per_token(self) -> float:
        """Training FLOPs per token: 6 x matmul weights + attention scores (autoresearch's estimate)."""
        c = self.cfg
        d, n, T = c["n_embd"], c["n_layer"], c["seq_len"]
        weights = n * (4 * d * d + 8 * d * d) + c["vocab_size"] * d
        return 6 * weights + 12 * n * d * T
