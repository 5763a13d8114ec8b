"""The runner's optimizers and schedules behave as upstream's (karpathy/autoresearch train.py)."""

from __future__ import annotations

import math

import pytest
import torch

from auditkit.runner.arch import model_config_from_row
from auditkit.runner.model import GPT
from auditkit.runner.optim import Muon, apply_schedules, build_optimizers, lr_multiplier, muon_momentum, orthogonalize
from auditkit.runner.train import HP_DEFAULTS


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread (a second one only waits on a shared machine), as the runner's default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("shape", [(64, 64), (256, 64), (64, 256)])
def test_polar_express_brings_every_singular_value_near_one(shape):
    g = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(orthogonalize(g))
    # five steps lift all but the very smallest singular values (a square Gaussian matrix has some near 0)
    assert s.max() < 1.25 and ((s > 0.7).float().mean() > 0.95), (s.min(), s.max())
    # the tall and the wide case are one computation transposed
    assert torch.allclose(orthogonalize(g.mT), orthogonalize(g).mT, atol=1e-5)


def _one_muon_step(w0, grad, weight_decay):
    p = torch.nn.Parameter(w0.clone())
    p.grad = grad.clone()
    opt = Muon([p], lr=0.1, momentum=0.0, weight_decay=weight_decay)
    opt.step()
    return p.detach()


def test_normuon_keeps_the_orthogonalised_update_norm_and_equalises_rows():
    g = torch.randn(128, 32, generator=torch.Generator().manual_seed(1))
    w0 = torch.zeros(128, 32)
    upd = (w0 - _one_muon_step(w0, g, 0.0)) / (0.1 * 2.0)  # lr x sqrt(rows/cols) = 0.1 x 2
    ortho = orthogonalize(g[None])[0]
    assert upd.norm() == pytest.approx(ortho.norm().item(), rel=1e-4)
    rows = upd.square().mean(dim=1)
    assert rows.max() / rows.min() < 1.0001  # after one step every row has the same mean square


def test_cautious_weight_decay_only_where_update_and_weight_agree():
    g = torch.randn(32, 32, generator=torch.Generator().manual_seed(2))
    w0 = torch.randn(32, 32, generator=torch.Generator().manual_seed(3))
    plain = _one_muon_step(w0, g, 0.0)
    decayed = _one_muon_step(w0, g, 0.5)
    upd = w0 - plain
    agree = upd * w0 > 0
    assert torch.allclose((plain - decayed)[agree], (0.1 * 0.5 * w0)[agree], atol=1e-6)
    assert torch.equal(plain[~agree], decayed[~agree])


def test_schedules_follow_upstream():
    assert muon_momentum(0) == pytest.approx(0.85) and muon_momentum(150) == pytest.approx(0.90)
    assert muon_momentum(300) == muon_momentum(10_000) == pytest.approx(0.95)
    # a run of upstream's length or longer warms up over 300 steps (step 150 of 3000: halfway) ...
    assert muon_momentum(150, 150 / 3000) == pytest.approx(0.90)
    # ... a short one over its first 30% (step 15 of 100: halfway; step 30 of 100: done)
    assert muon_momentum(15, 0.15) == pytest.approx(0.90) and muon_momentum(30, 0.30) == pytest.approx(0.95)
    assert muon_momentum(90, 0.9) == pytest.approx(0.95)
    assert lr_multiplier(0.2, 0.5) == 1.0 and lr_multiplier(0.75, 0.5) == pytest.approx(0.5)
    assert lr_multiplier(1.0, 0.5, final_frac=0.1) == pytest.approx(0.1)
    model = GPT(model_config_from_row({"depth": "2", "aspect_ratio": "64"}))
    opts = build_optimizers(model, HP_DEFAULTS)
    apply_schedules(opts, 0.75, 30, HP_DEFAULTS)  # step 30 of a 40-step run: warmed up by progress
    muon = next(o for o in opts if isinstance(o, Muon))
    g = muon.param_groups[0]
    assert g["weight_decay"] == pytest.approx(HP_DEFAULTS["weight_decay"] * 0.25) and g["momentum"] == pytest.approx(0.95)
    assert g["lr"] == pytest.approx(HP_DEFAULTS["matrix_lr"] * 0.5)
    apply_schedules(opts, 30 / 3000, 30, HP_DEFAULTS)  # step 30 of a 3000-step run: upstream's 300-step ramp
    assert g["momentum"] == pytest.approx(0.86) and g["lr"] == pytest.approx(HP_DEFAULTS["matrix_lr"])


def test_parameter_groups_and_width_scaled_rates_are_upstreams():
    model = GPT(model_config_from_row({"depth": "2", "aspect_ratio": "64", "head_dim": "32"}))  # d_model 128
    adam, muon = build_optimizers(model, HP_DEFAULTS)
    scale = (128 / 768) ** -0.5
    lrs = [g["lr"] for g in adam.param_groups]
    hp = HP_DEFAULTS
    assert lrs == pytest.approx([hp["unembedding_lr"] * scale, hp["embedding_lr"] * scale, hp["embedding_lr"] * scale,
                                 hp["scalar_lr"] * 0.01, hp["scalar_lr"]])
    assert adam.param_groups[4]["betas"] == (0.96, 0.95) and adam.param_groups[0]["betas"] == (0.8, 0.95)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    blocks = [(k, p) for k, p in model.named_parameters() if k.startswith("blocks.")]
    assert {id(p) for _, p in blocks} == in_muon  # every block matrix, the value-embedding gates included
    assert any(k.endswith("ve_gate.weight") for k, _ in blocks)
    assert all(len({tuple(p.shape) for p in g["params"]}) == 1 for g in muon.param_groups)  # stacked by shape


def test_value_embedding_gate_depends_on_the_input():
    cfg = model_config_from_row({"depth": "2", "aspect_ratio": "32", "head_dim": "16", "seq_len": "16"})
    model = GPT(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    attn = model.blocks[1].attn
    assert tuple(attn.ve_gate.weight.shape) == (cfg["n_head"], 32) and attn.ve_gate.weight.abs().sum() == 0
    s = 3 ** 0.5 * cfg["n_embd"] ** -0.5
    ve = model.value_embeds["1"].weight
    assert ve.abs().max() <= s and ve.std().item() == pytest.approx(s / math.sqrt(3), rel=0.1)  # uniform(-s, s)
    with torch.no_grad():
        attn.ve_gate.weight.normal_()
    x = torch.randn(1, 4, cfg["n_embd"])
    gate = torch.sigmoid(attn.ve_gate(x[..., :32]))
    assert not torch.allclose(gate[0, 0], gate[0, 1])  # one gate per head and position


def test_flops_count_sliding_windows_as_upstream():
    cfg = model_config_from_row({"depth": "4", "aspect_ratio": "32", "head_dim": "32", "seq_len": "128",
                                 "window_pattern": "SSSL"})
    model = GPT(cfg)
    assert cfg["windows"] == [64, 64, 64, 128]
    d, n, h, q = cfg["n_embd"], 4, cfg["n_head"], cfg["head_dim"]
    gates = sum(p.numel() for k, p in model.named_parameters() if "ve_gate" in k)
    matmul = n * 12 * d * d + cfg["vocab_size"] * d + gates
    assert model.flops_per_token() == 6 * matmul + 12 * h * q * (64 * 3 + 128)
