"""The bundled runner: learning, determinism, summaries, divergence, architecture arithmetic."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from auditkit.package.hashing import sha256_file
from auditkit.study.spec import Budget
from auditkit.runner.arch import expected_tensors, model_config_from_row, num_params, runner_tree_sha256
from auditkit.study.runs import run_cell, summary_to_row
from auditkit.package.schemas import schema_errors

REPO = Path(__file__).resolve().parents[1]
TINY = {"config_id": "tiny", "role": "screened", "depth": "1", "aspect_ratio": "32", "head_dim": "16",
        "seq_len": "64", "total_batch_size": "512", "device_batch_size": "8", "matrix_lr": "0.03"}
SETTINGS = {"data": "markov:seed=0", "eval_tokens": 4096}


def train(tmp, name, steps=30, seed=1, row=TINY, run_id=None):
    return run_cell(matrix_row=row, seed=seed, budget=Budget("steps", steps), out_dir=tmp / name,
                    run_id=run_id or name, threads=1, timeout=300, settings=SETTINGS)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return tmp, {"a": train(tmp, "a", run_id="same"), "b": train(tmp, "b", run_id="same"),
                 "short": train(tmp, "short", steps=2), "seed2": train(tmp, "seed2", seed=2)}


def test_loss_falls_and_summary_validates(runs):
    tmp, r = runs
    a = r["a"]
    assert a["status"] == "ok" and a["num_steps"] == 30
    assert schema_errors(a, "run-summary") == []
    assert a["val_bpb"] < r["short"]["val_bpb"] - 0.2
    assert a["val_bpb"] < 8.0  # better than a uniform guess over 256 bytes
    assert 0 < a["floor_bpb"] < a["val_bpb"]
    assert a["total_tokens_M"] == pytest.approx(30 * 512 / 1e6)
    assert a["num_params_M"] == pytest.approx(num_params(model_config_from_row(TINY)) / 1e6, abs=1e-6)
    assert a["runner_sha256"] == runner_tree_sha256()
    assert a["finished_at"].endswith("Z") and a["started_at"] <= a["finished_at"]
    assert a["budget"] == {"kind": "steps", "value": 30} and a["device"] == "cpu" and a["dtype"] == "float32"


def test_steps_mode_is_bit_identical(runs):
    tmp, r = runs
    assert r["a"]["val_bpb"] == r["b"]["val_bpb"]
    assert sha256_file(tmp / "a/checkpoint.safetensors") == sha256_file(tmp / "b/checkpoint.safetensors")
    assert r["a"]["checkpoint_sha256"] == sha256_file(tmp / "a/checkpoint.safetensors")
    assert r["seed2"]["checkpoint_sha256"] != r["a"]["checkpoint_sha256"]


def test_checkpoint_holds_the_section_8_metadata(runs):
    from safetensors import safe_open

    tmp, r = runs
    with safe_open(str(tmp / "a/checkpoint.safetensors"), "np") as f:
        meta = f.metadata()
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        finite = all(bool(abs(f.get_tensor(k)).max() < math.inf) for k in f.keys())
    assert {"run_id", "config_id", "seed", "step", "model_config", "data", "eval_tokens", "eval_sha256"} <= set(meta)
    assert all(isinstance(v, str) for v in meta.values())
    assert (meta["run_id"], meta["config_id"], meta["seed"], meta["step"]) == ("same", "tiny", "1", "30")
    cfg = json.loads(meta["model_config"])
    assert cfg == model_config_from_row(TINY)
    assert shapes == expected_tensors(cfg) and finite
    assert meta["eval_sha256"] == r["a"]["eval_sha256"]


def test_absurd_learning_rate_ends_diverged_with_a_summary(tmp_path):
    bad = dict(TINY, config_id="hot", matrix_lr="1e6", embedding_lr="1e6", unembedding_lr="1e6")
    s = train(tmp_path, "hot", steps=30, row=bad)
    assert s["status"] == "diverged" and s["val_bpb"] is None and "error" in s
    assert schema_errors(s, "run-summary") == []
    assert not (tmp_path / "hot/checkpoint.safetensors").exists()
    row = summary_to_row(s, host="h", stage="s", budget=Budget("steps", 30))
    assert row["status"] == "diverged" and row["val_bpb"] == ""


@pytest.mark.parametrize("row", [
    {"depth": "1", "aspect_ratio": "32", "head_dim": "16", "seq_len": "64"},
    {"depth": "3", "aspect_ratio": "24", "head_dim": "32", "seq_len": "32", "window_pattern": "SL"},
    {"depth": "4", "aspect_ratio": "16", "head_dim": "16", "seq_len": "16", "window_pattern": "SSSL"},
    {},  # every default
])
def test_arch_matches_the_real_model(row):
    from auditkit.runner.model import GPT

    cfg = model_config_from_row(row)
    model = GPT(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected_tensors(cfg)
    assert num_params(cfg) == sum(p.numel() for p in model.parameters())
    assert cfg["n_embd"] % cfg["head_dim"] == 0 and cfg["n_embd"] >= cfg["n_layer"] * int(row.get("aspect_ratio", 32))


def test_arch_is_torch_free():
    code = ("import sys; import auditkit.runner.arch as a; a.runner_tree_sha256(); "
            "a.expected_tensors(a.model_config_from_row({})); assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_runner_tree_hash_covers_every_source_file(tmp_path):
    for p in (REPO / "runner").glob("*.py"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    assert runner_tree_sha256(tmp_path) == runner_tree_sha256()
    (tmp_path / "optim.py").write_text((tmp_path / "optim.py").read_text() + "\n# edit\n")
    assert runner_tree_sha256(tmp_path) != runner_tree_sha256()


def test_bad_matrix_values_are_clean_errors():
    with pytest.raises(ValueError, match="depth"):
        model_config_from_row({"depth": "two"})
    with pytest.raises(ValueError, match="window_pattern"):
        model_config_from_row({"window_pattern": "XL"})


def test_markov_floor_is_the_entropy_rate():
    """The closed-form floor agrees with the empirical -log2 likelihood of generated text under the chain."""
    import numpy as np

    from auditkit.runner.data import MarkovChain

    chain = MarkovChain(seed=3, n_words=50, fanout=4)
    text = chain.generate(200_000, seed=9).tobytes().split(b" ")[1:-1]
    index = {w: i for i, w in enumerate(chain.words)}
    ids = [index[w] for w in text]
    bits = 0.0
    for a, b in zip(ids, ids[1:]):
        bits -= math.log2(chain.prob[a][list(chain.succ[a]).index(b)])
    nbytes = sum(len(chain.words[i]) + 1 for i in ids[1:])
    assert bits / nbytes == pytest.approx(chain.floor_bpb(), rel=0.03)
    assert np.isclose(chain.stationary().sum(), 1.0)


def test_text_data_and_standalone_script(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(",".join(TINY) + "\n" + ",".join(TINY.values()) + "\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    p = subprocess.run([sys.executable, str(REPO / "runner" / "train.py"), "--matrix", str(m), "--config-id", "tiny",
                        "--seed", "1", "--budget", "3steps", "--out", str(tmp_path / "o"), "--eval-tokens", "1024",
                        "--data", f"text:{corpus}"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    block = p.stdout.split("---", 1)[1]
    for key in ("val_bpb:", "num_steps:", "depth:", "runner_sha256:", "budget_mode:", "seed:", "device:", "dtype:"):
        assert key in block
    s = json.loads((tmp_path / "o/summary.json").read_text())
    assert s["status"] == "ok" and s["floor_bpb"] is None and s["data"] == f"text:{corpus}"
    assert schema_errors(s, "run-summary") == []
    bad = subprocess.run([sys.executable, str(REPO / "runner" / "train.py"), "--matrix", str(m), "--config-id", "x",
                          "--seed", "1", "--budget", "3steps", "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no row with config_id 'x'" in bad.stderr and "Traceback" not in bad.stderr


def test_seconds_budget_follows_the_wall_clock(tmp_path):
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("seconds", 1.5), out_dir=tmp_path, run_id="sec",
                 timeout=120, settings=SETTINGS)
    assert s["status"] == "ok" and s["budget"] == {"kind": "seconds", "value": 1.5}
    assert 1.5 <= s["training_seconds"] < 2.5 and s["num_steps"] > 3
    assert s["total_seconds"] >= s["training_seconds"] and s["mfu_percent"] > 0


def test_parquet_text_column_is_read_and_trains(tmp_path):
    import pandas as pd

    from auditkit.runner.data import load_corpus

    docs = [f"document {i}: the quick brown fox jumps over the lazy dog. " * 8 for i in range(40)]
    pq = tmp_path / "docs.parquet"
    pd.DataFrame({"id": range(len(docs)), "text": docs}).to_parquet(pq)
    corpus = load_corpus(f"parquet:{pq}")
    joined = "\n".join(docs).encode()
    assert bytes(corpus.train) + bytes(corpus.val) == joined
    assert len(corpus.val) == len(joined) - int(len(joined) * 0.9) and corpus.floor_bpb is None
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("steps", 2), out_dir=tmp_path / "o", run_id="pq",
                 timeout=120, settings={"data": f"parquet:{pq}", "eval_tokens": 1024})
    assert s["status"] == "ok" and s["data"] == f"parquet:{pq}", s.get("error")
    missing = tmp_path / "nocol.parquet"
    pd.DataFrame({"body": docs}).to_parquet(missing)
    with pytest.raises(ValueError, match=r"nocol.parquet: parquet file has no .text. column \(it has: body\)"):
        load_corpus(f"parquet:{missing}")
