"""The GPT of the runner, after karpathy/autoresearch's train.py: rotary embeddings,
RMSNorm without weights, QK-norm, ReLU^2 MLP, value embeddings on alternating
layers mixed in through an input-dependent gate, per-layer residual and x0
scalars, logit softcap.  Attention is PyTorch SDPA (FlashAttention-3 upstream)
with each layer's window as upstream's `window_size[0]`: full (L, the training
seq_len) or half (S).  Any length up to ten times the training seq_len can be
fed, so every candidate is evaluated at the protocol's `eval_seq_len`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from .arch import expected_tensors, has_value_embedding, layer_windows
except ImportError:  # run as a script from runner/
    from arch import expected_tensors, has_value_embedding, layer_windows

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


def window_mask(T: int, window: int, device) -> torch.Tensor | None:
    """Boolean SDPA mask letting query i see keys i-window .. i; None when that is plain causal."""
    if window >= T - 1:
        return None
    i = torch.arange(T, device=device)
    d = i[:, None] - i[None, :]
    return (d >= 0) & (d <= window)


class Attention(nn.Module):
    def __init__(self, cfg: dict, layer: int):
        super().__init__()
        d = cfg["n_embd"]
        self.n_head, self.head_dim = cfg["n_head"], cfg["head_dim"]
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)
        self.c_v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.gate_channels = int(cfg.get("ve_gate_channels", 0))
        self.ve_gate = None
        if has_value_embedding(layer, cfg["n_layer"]):
            # upstream: a linear map of the first 32 channels, one gate per head; the first
            # runner's checkpoints (no ve_gate_channels) hold one learned scalar per head
            self.ve_gate = (nn.Linear(self.gate_channels, self.n_head, bias=False) if self.gate_channels
                            else nn.Parameter(torch.zeros(self.n_head)))

    def forward(self, x, ve, cos, sin, mask):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            if self.gate_channels:
                gate = 2 * torch.sigmoid(self.ve_gate(x[..., :self.gate_channels])).unsqueeze(-1)
            else:
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
        self.max_seq_len = 10 * cfg["seq_len"]  # as upstream's rotary_seq_len
        cos, sin = rotary_tables(self.max_seq_len, cfg["head_dim"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.windows = layer_windows(cfg)
        got = {k: tuple(t.shape) for k, t in self.state_dict().items()}
        assert got == expected_tensors(cfg), "model and runner/arch.py disagree"

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Upstream's initialisation, drawn from `generator` in parameter order."""
        d = self.cfg["n_embd"]
        s = 3 ** 0.5 * d ** -0.5
        for name, p in self.named_parameters():
            if name.endswith(("c_q.weight", "c_k.weight", "c_v.weight", "c_fc.weight")):
                p.uniform_(-s, s, generator=generator)
            elif name.endswith("c_proj.weight") or ".ve_gate" in name:
                p.zero_()  # a zero gate is sigmoid(0) * 2 = 1: neutral
            elif name == "wte.weight":
                p.normal_(0.0, 1.0, generator=generator)
            elif name.startswith("value_embeds."):
                p.uniform_(-s, s, generator=generator)
            elif name == "lm_head.weight":
                p.normal_(0.0, 0.001, generator=generator)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        T = idx.shape[1]
        if T > self.max_seq_len:
            raise ValueError(f"sequence of {T} tokens; this model takes at most {self.max_seq_len}")
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        masks = {w: window_mask(T, w, idx.device) for w in set(self.windows)}
        x = x0 = norm(self.wte(idx))
        for i, blk in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = blk(x, ve, cos, sin, masks[self.windows[i]])
        logits = self.lm_head(norm(x)).float()
        # SOFTCAP * tanh(logits / SOFTCAP), written with sigmoid (tanh z = 2 sigmoid(2z) - 1): PyTorch's
        # CPU tanh kernel is ten times slower than its sigmoid (1.2 ms against 0.11 ms on 512K floats)
        logits = (2 * SOFTCAP) * torch.sigmoid(logits * (2 / SOFTCAP)) - SOFTCAP
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)

    def flops_per_token(self) -> float:
        """Training FLOPs per token, counted as upstream's estimate_flops: 6 x the parameters
        that multiply (all but the embedding tables and the scalars) plus 12 x heads x head_dim
        x the keys each layer attends to, min(window, seq_len)."""
        c = self.cfg
        skip = {"wte.weight", "resid_lambdas", "x0_lambdas"}
        matmul = sum(p.numel() for k, p in self.named_parameters()
                     if k not in skip and not k.startswith("value_embeds."))
        T = c["seq_len"]
        attn = sum(12 * c["n_head"] * c["head_dim"] * min(w if w >= 0 else T, T) for w in self.windows)
        return 6 * matmul + attn
