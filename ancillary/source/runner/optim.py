"""Optimizers: Muon (momentum, then Newton-Schulz orthogonalised updates) for the
2-D matrices inside the blocks, AdamW for embeddings, the head and the scalars."""

from __future__ import annotations

import torch


@torch.no_grad()
def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise `g` (quintic iteration, coefficients from the Muon write-up)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.float()
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        m = x @ x.T
        x = a * x + (b * m + c * m @ m) @ x
    return x.T if transposed else x


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                buf = state.get("momentum")
                if buf is None:
                    buf = state["momentum"] = torch.zeros_like(p)
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"])  # Nesterov
                update = newton_schulz(g)
                scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-group["lr"] * scale)


def build_optimizers(model, hp: dict):
    """(Muon over block matrices, AdamW over the rest); each group remembers its base lr."""
    matrices, embeds, head, scalars = [], [], [], []
    for name, p in model.named_parameters():
        if name.startswith("blocks.") and p.ndim == 2:
            matrices.append(p)
        elif name.startswith(("wte.", "value_embeds.")):
            embeds.append(p)
        elif name.startswith("lm_head."):
            head.append(p)
        else:
            scalars.append(p)
    muon = Muon(matrices, lr=hp["matrix_lr"], weight_decay=hp["weight_decay"])
    adam = torch.optim.AdamW(
        [dict(params=embeds, lr=hp["embedding_lr"]), dict(params=head, lr=hp["unembedding_lr"]),
         dict(params=scalars, lr=hp["scalar_lr"])],
        betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)
    opts = [muon, adam]
    for opt in opts:
        for g in opt.param_groups:
            g["base_lr"] = g["lr"]
    return opts


def lr_multiplier(progress: float, warmdown_ratio: float, final_frac: float = 0.0) -> float:
    """1 until the warmdown, then linear down to `final_frac` at progress 1."""
    if warmdown_ratio <= 0 or progress < 1.0 - warmdown_ratio:
        return 1.0
    t = min(1.0, (progress - (1.0 - warmdown_ratio)) / warmdown_ratio)
    return 1.0 - t * (1.0 - final_frac)
