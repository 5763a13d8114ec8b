"""Optimizers as upstream (karpathy/autoresearch's MuonAdamW), on one device.

Muon for every matrix inside the blocks, stacked by shape: Nesterov momentum,
polar-express orthogonalisation, NorMuon variance reduction and cautious weight
decay.  AdamW for the rest, in upstream's five groups, with the embedding and
head learning rates scaled by 1/sqrt(d_model / 768).  The schedules (learning
rate warmdown, Muon momentum warm-up, weight decay decaying with progress) are
the functions at the end; the training loop applies them before each step.
"""

from __future__ import annotations

import torch

# (a, b, c) of each quintic step X <- a X + b (X X^T) X + c (X X^T)^2 X, from the
# Polar Express paper as upstream uses them (the first ones widen the spectrum fast).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximate polar factor U V^T of each matrix in the stack `g` (..., rows, cols)."""
    x = g.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)
    tall = x.size(-2) > x.size(-1)
    for a, b, c in POLAR_EXPRESS[:steps]:
        if tall:  # work with the small cols x cols Gram matrix
            gram = x.mT @ x
            x = a * x + x @ (b * gram + c * (gram @ gram))
        else:
            gram = x @ x.mT
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x


class Muon(torch.optim.Optimizer):
    """Muon over groups of equally shaped matrices (one stacked update per group).

    Group keys: lr, momentum, weight_decay (set by the schedules), beta2 (NorMuon), ns_steps.
    """

    def __init__(self, params, lr: float = 0.04, momentum: float = 0.95, weight_decay: float = 0.0,
                 beta2: float = 0.95, ns_steps: int = 5, ortho_dtype: torch.dtype = torch.float32):
        groups = {}
        for p in params:
            groups.setdefault(tuple(p.shape), []).append(p)
        super().__init__([dict(params=ps) for _, ps in sorted(groups.items())],
                         dict(lr=lr, momentum=momentum, weight_decay=weight_decay, beta2=beta2, ns_steps=ns_steps))
        self.ortho_dtype = ortho_dtype

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)

    def _update(self, group: dict, params: list) -> None:
        rows, cols = params[0].shape
        state = self.state[params[0]]
        if "momentum" not in state:
            state["momentum"] = torch.zeros(len(params), rows, cols, dtype=params[0].dtype, device=params[0].device)
            # NorMuon keeps one second moment per row (tall or square) or per column (wide)
            shape = (len(params), rows, 1) if rows >= cols else (len(params), 1, cols)
            state["second_moment"] = torch.zeros(shape, dtype=params[0].dtype, device=params[0].device)
        reduce = -1 if rows >= cols else -2
        mom, grads, w = group["momentum"], torch.stack([p.grad for p in params]), torch.stack(params)
        # Nesterov: the buffer follows the gradient, the update looks one momentum step ahead
        state["momentum"].lerp_(grads, 1 - mom)
        g = orthogonalize(grads.lerp_(state["momentum"], mom), group["ns_steps"], self.ortho_dtype).float()
        # NorMuon: divide each row (column) by the root of its running mean square, then
        # restore the update's overall norm
        sq = g.square().mean(dim=reduce, keepdim=True)
        n = g.size(reduce)
        norm_before = (sq.sum(dim=(-2, -1), keepdim=True) * n).sqrt()
        state["second_moment"].lerp_(sq.to(state["second_moment"].dtype), 1 - group["beta2"])
        inv = state["second_moment"].clamp_min(1e-10).rsqrt().float()
        norm_after = (sq * n * inv.square()).sum(dim=(-2, -1), keepdim=True).sqrt()
        g = g * (inv * norm_before / norm_after.clamp_min(1e-10))
        # cautious weight decay: only where the update and the weight agree in sign
        lr = group["lr"] * max(1.0, rows / cols) ** 0.5
        decay = (g * w >= 0).to(w.dtype) * w * group["weight_decay"]
        w.sub_((g.to(w.dtype) + decay) * lr)
        torch._foreach_copy_(params, list(w.unbind(0)))


def build_optimizers(model, hp: dict, device_type: str = "cpu"):
    """[Muon over the block matrices, AdamW over the rest], as upstream's setup_optimizer.

    Every group remembers its base lr in `base_lr`.
    """
    scale = (model.cfg["n_embd"] / 768) ** -0.5  # upstream tuned its AdamW rates at d_model 768
    named = dict(model.named_parameters())
    blocks = [p for k, p in named.items() if k.startswith("blocks.")]
    embeds = [named["wte.weight"]]
    values = [p for k, p in named.items() if k.startswith("value_embeds.")]
    head = [named["lm_head.weight"]]
    if any(p.ndim != 2 for p in blocks):  # the first runner's per-head gate vectors go to AdamW
        embeds += [p for p in blocks if p.ndim != 2]
        blocks = [p for p in blocks if p.ndim == 2]
    betas = (0.8, 0.95)
    adam = torch.optim.AdamW([
        dict(params=head, lr=hp["unembedding_lr"] * scale),
        dict(params=embeds, lr=hp["embedding_lr"] * scale),
        dict(params=values, lr=hp["embedding_lr"] * scale),
        dict(params=[model.resid_lambdas], lr=hp["scalar_lr"] * 0.01),
        dict(params=[model.x0_lambdas], lr=hp["scalar_lr"], betas=(0.96, 0.95)),
    ], betas=betas, eps=1e-10, weight_decay=0.0, foreach=True)
    muon = Muon(blocks, lr=hp["matrix_lr"], weight_decay=hp["weight_decay"],
                ortho_dtype=torch.bfloat16 if device_type == "cuda" else torch.float32)
    opts = [adam, muon]
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    return opts


def lr_multiplier(progress: float, warmdown_ratio: float, final_frac: float = 0.0, warmup_ratio: float = 0.0) -> float:
    """Linear warm-up over `warmup_ratio`, 1, then linear down to `final_frac` over the last `warmdown_ratio`."""
    if progress < warmup_ratio:
        return progress / warmup_ratio
    if warmdown_ratio <= 0 or progress < 1.0 - warmdown_ratio:
        return 1.0
    left = max(0.0, (1.0 - progress) / warmdown_ratio)
    return left + (1.0 - left) * final_frac


MOMENTUM_WARMUP_STEPS = 300      # upstream's warm-up, in steps
MOMENTUM_WARMUP_FRACTION = 0.3   # the same share of upstream's run (~300 of ~950 steps in its 5 minutes)


def muon_momentum(step: int, progress: float = 0.0) -> float:
    """0.85 rising linearly to 0.95: over upstream's first 300 steps, or over the first 30% of
    the run, whichever ends first (a run of upstream's length or longer warms up as upstream;
    a short run warms up over the same share of itself instead of never finishing)."""
    t = min(1.0, max(step / MOMENTUM_WARMUP_STEPS, progress / MOMENTUM_WARMUP_FRACTION))
    return 0.85 + 0.10 * t


def apply_schedules(opts, progress: float, step: int, hp: dict) -> None:
    """Set every group's lr, and Muon's momentum and weight decay (decaying to 0 at the end)."""
    mult = lr_multiplier(progress, hp["warmdown_ratio"], hp.get("final_lr_frac", 0.0), hp.get("warmup_ratio", 0.0))
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * mult
            if isinstance(opt, Muon):
                g["momentum"] = muon_momentum(step, progress)
                g["weight_decay"] = hp["weight_decay"] * (1.0 - progress)
