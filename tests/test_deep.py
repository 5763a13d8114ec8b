"""`verify --deep`'s engine: rebuild a checkpoint, re-evaluate val_bpb, compare with the row."""

from __future__ import annotations

import json

import pytest

from auditkit.verify.deep import checkpoint_metadata, reevaluate_checkpoint
from auditkit.package.protocol import Budget
from auditkit.study.runs import run_cell, summary_to_row

TINY = {"config_id": "tiny", "role": "screened", "depth": "1", "aspect_ratio": "32", "head_dim": "16",
        "seq_len": "64", "total_batch_size": "512", "device_batch_size": "8", "matrix_lr": "0.03"}
SETTINGS = {"data": "markov:seed=1", "eval_tokens": 4096}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deep")
    out = {}
    for name, seed in (("x", 1), ("y", 2)):
        s = run_cell(matrix_row=TINY, seed=seed, budget=Budget("steps", 12), out_dir=tmp / name,
                     run_id=f"linux-tiny-s{seed}", timeout=300, settings=SETTINGS)
        assert s["status"] == "ok"
        row = summary_to_row(s, host="linux", stage="st", budget=Budget("steps", 12),
                             checkpoint_relpath=f"checkpoints/{s['run_id']}.safetensors",
                             checkpoint_sha256=s["checkpoint_sha256"])
        out[name] = (row, (tmp / name / "checkpoint.safetensors").read_bytes())
    return out


def codes(findings):
    return sorted({f.code for f in findings})


def test_recorded_val_bpb_is_reproduced(two_runs):
    for row, data in two_runs.values():
        assert reevaluate_checkpoint(data, row, row["checkpoint"]) == []


def test_rounding_to_six_decimals_is_tolerated_but_not_more(two_runs):
    row, data = two_runs["x"]
    v = float(row["val_bpb"])
    assert reevaluate_checkpoint(data, dict(row, val_bpb=f"{v + 1e-6:.6f}"), "c") == []
    found = reevaluate_checkpoint(data, dict(row, val_bpb=f"{v + 3e-6:.6f}"), "c")
    assert codes(found) == ["deep-val-bpb-mismatch"] and found[0].location.endswith("column val_bpb")
    assert codes(reevaluate_checkpoint(data, dict(row, val_bpb=""), "c")) == ["deep-val-bpb-mismatch"]


def test_a_checkpoint_swapped_between_runs_is_caught(two_runs):
    row_x, _ = two_runs["x"]
    _, data_y = two_runs["y"]
    found = reevaluate_checkpoint(data_y, row_x, row_x["checkpoint"])
    assert "deep-checkpoint-mismatch" in codes(found) and "deep-val-bpb-mismatch" in codes(found)
    assert any("seed" in f.location for f in found) and any("run_id" in f.location for f in found)


def _rewrite(data: bytes, change_state=None, change_meta=None) -> bytes:
    from safetensors.torch import load

    from auditkit.runner.train import safetensors_bytes

    state, meta = load(data), dict(checkpoint_metadata(data))
    if change_state:
        change_state(state)
    if change_meta:
        change_meta(meta)
    return safetensors_bytes(state, meta)


def test_retouched_weights_with_the_same_metadata_are_caught(two_runs):
    row, data = two_runs["x"]

    def nudge(state):
        state["lm_head.weight"][ord("e")] *= 1.01  # a 1% retouch of one output row

    assert _rewrite(data) == data  # the writer is byte-stable, so only the nudge differs
    assert codes(reevaluate_checkpoint(_rewrite(data, nudge), row, "c")) == ["deep-val-bpb-mismatch"]


def test_changed_data_spec_is_reported_as_data_drift(two_runs):
    row, data = two_runs["x"]
    other = _rewrite(data, change_meta=lambda m: m.update(data="markov:seed=7"))
    found = reevaluate_checkpoint(other, row, "c")
    assert codes(found) == ["deep-data-mismatch"] and "markov:seed=7" in found[0].location


def test_broken_checkpoints_are_findings_not_exceptions(two_runs):
    row, data = two_runs["x"]
    assert codes(reevaluate_checkpoint(b"garbage", row, "c")) == ["deep-unreadable"]

    def wider(meta):
        cfg = json.loads(meta["model_config"])
        meta["model_config"] = json.dumps(dict(cfg, n_embd=cfg["n_embd"] * 2, n_head=cfg["n_head"] * 2))

    assert codes(reevaluate_checkpoint(_rewrite(data, change_meta=wider), row, "c")) == ["deep-rebuild-failed"]


@pytest.mark.slow
def test_a_compiled_run_trains_and_its_checkpoint_re_evaluates(tmp_path, monkeypatch):
    """`compile = true` (torch.compile; needs a C++ compiler, ~30 s the first time): the
    compilation steps are kept off the training clock, and val_bpb is scored by the eager
    model, so --deep reproduces it exactly as for an eager run."""
    # inductor keeps its precompiled headers under tempfile.gettempdir() whatever its cache dir:
    # the runner's temporary directory is this test's, so nothing is left in the system's
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    s = run_cell(matrix_row=TINY, seed=3, budget=Budget("steps", 4), out_dir=tmp_path, run_id="linux-tiny-s3",
                 timeout=600, settings=dict(SETTINGS, compile=True))
    assert s["status"] == "ok", s.get("error")
    assert s["num_steps"] == 4 and s["warmup_seconds"] > 0
    row = summary_to_row(s, host="linux", stage="st", budget=Budget("steps", 4),
                         checkpoint_relpath="checkpoints/linux-tiny-s3.safetensors",
                         checkpoint_sha256=s["checkpoint_sha256"])
    assert reevaluate_checkpoint((tmp_path / "checkpoint.safetensors").read_bytes(), row, row["checkpoint"]) == []
