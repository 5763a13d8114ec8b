"""The bundled runner: learning, determinism, summaries, divergence, architecture arithmetic."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from auditkit.package.hashing import sha256_file
from auditkit.package.protocol import Budget
from auditkit.runner.arch import expected_tensors, model_config_from_row, num_params, runner_tree_sha256
from auditkit.evalproto import gate_eval_findings
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
                 "short": train(tmp, "short", steps=2), "seed2": train(tmp, "seed2", seed=2),
                 "t32": train(tmp, "t32", steps=30, row=dict(TINY, config_id="t32", seq_len="32"))}


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


def paragraphs(n: int = 120) -> str:
    """Text of `n` distinct paragraphs (documents), deterministic."""
    words = "the quick brown fox jumps over lazy dog while seven wizards quietly hex one jovial judge".split()
    out = []
    for i in range(n):
        out.append(" ".join(words[(i * 7 + k * k) % len(words)] for k in range(12 + i % 9)) + f" ({i}).")
    return "\n\n".join(out) + "\n"


def test_text_data_and_standalone_script(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text(",".join(TINY) + "\n" + ",".join(TINY.values()) + "\n")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(paragraphs())
    p = subprocess.run([sys.executable, str(REPO / "runner" / "train.py"), "--matrix", str(m), "--config-id", "tiny",
                        "--seed", "1", "--budget", "3steps", "--out", str(tmp_path / "o"), "--eval-tokens", "128",
                        "--eval-seq-len", "64", "--data", f"text:{corpus}", "--tokenizer", "bytes"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    block = p.stdout.split("---", 1)[1]
    for key in ("val_bpb:", "val_bpb_se:", "eval_seq_len:", "eval_sha256:", "num_steps:", "depth:", "runner_sha256:",
                "budget_mode:", "seed:", "device:", "dtype:"):
        assert key in block
    assert "floor_bpb:" not in block  # no floor is known for text
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


def test_parquet_documents_are_split_by_document(tmp_path):
    import pandas as pd

    from auditkit.runner.data import is_validation, load_corpus

    docs = [f"document {i}: the quick brown fox jumps over the lazy dog. " * (1 + i % 5) for i in range(200)]
    pq = tmp_path / "docs.parquet"
    pd.DataFrame({"id": range(len(docs)), "text": docs}).to_parquet(pq)
    corpus = load_corpus(f"parquet:{pq}", tokenizer="bytes")
    val = [d.encode() for d in docs if is_validation(d.encode())]
    assert 5 < len(val) < 40  # about a tenth, chosen by content, not a tail
    assert bytes(corpus.val.astype("uint8")) == b"\n\n".join(val)
    assert not is_validation(docs[-1].encode()) or docs[-1].encode() in val
    assert corpus.floor_bpb is None and corpus.tokenizer.name == "bytes"
    # BPE (the default for text): BOS before every document, trained on the training documents only
    bpe = load_corpus(f"parquet:{pq}", vocab_size=300)
    assert bpe.tokenizer.name == "bpe" and bpe.tokenizer.vocab_size <= 300
    assert int((bpe.val == bpe.tokenizer.bos).sum()) == len(val) and bpe.val[0] == bpe.tokenizer.bos
    assert bpe.tokenizer.encoding.decode([int(t) for t in bpe.val[1:]]).startswith(val[0].decode())


def test_candidates_trained_at_other_seq_len_are_scored_on_one_evaluation(runs):
    """The evaluation protocol belongs to the study: same tokens, same context, whatever seq_len a config trains at."""
    _, r = runs
    a, t32 = r["a"], r["t32"]
    assert (a["model_config"]["seq_len"], t32["model_config"]["seq_len"]) == (64, 32)
    for key in ("eval_sha256", "eval_seq_len", "eval_tokens", "eval_bytes", "tokenizer", "floor_bpb"):
        assert a[key] == t32[key], key
    assert (a["eval_seq_len"], a["eval_tokens"], a["eval_bytes"]) == (128, 4096, 4096)
    rows = [summary_to_row(s, host="h", stage="s", budget=Budget("steps", 30)) for s in (a, t32, r["seed2"])]
    assert gate_eval_findings("g", rows, lambda row: "remote-results/h_s_summary.csv") == []


def test_val_bpb_se_is_reported_and_plausible(runs):
    import numpy as np

    from auditkit.runner.evaluation import bpb_and_se

    _, r = runs
    for s in r.values():
        # 32 windows of 128 bytes: per-window val_bpb varies by ~0.05-0.5 bits
        assert 0.002 < s["val_bpb_se"] < 0.2, s["val_bpb_se"]
    # with equal bytes per window the ratio estimator's error is the plain standard error of the window means
    nats = np.random.default_rng(0).gamma(3.0, 20.0, size=50)
    bpb, se = bpb_and_se(nats, np.full(50, 128))
    per_window = nats / (128 * math.log(2))
    assert bpb == pytest.approx(per_window.mean()) and se == pytest.approx(per_window.std(ddof=1) / math.sqrt(50))


def test_the_markov_floor_under_the_protocol_is_exact_and_never_beaten(runs):
    """The HMM floor equals a brute-force Bayes predictor on a small chain; no trained run goes below it."""
    from auditkit.runner.data import MarkovChain

    chain = MarkovChain(seed=3, n_words=12, fanout=3)
    stream = chain.generate(400, seed=5)
    spell = [w + b" " for w in chain.words]
    W = len(spell)

    def law_at(pos):  # the hidden state (word, letter) at byte `pos`, by enumeration from a uniform first word
        law = {(w, 0): 1.0 / W for w in range(W)}
        for _ in range(pos):
            new = {}
            for (w, i), p in law.items():
                nxt = [((w, i + 1), 1.0)] if i + 1 < len(spell[w]) else \
                    [((int(s), 0), q) for s, q in zip(chain.succ[w], chain.prob[w])]
                for st, q in nxt:
                    new[st] = new.get(st, 0.0) + p * q
            law = new
        return law

    def prob(law, data):  # P(these bytes from a state drawn from `law`): the bytes fix the word path
        total = 0.0
        for (w, i), p in law.items():
            rest = spell[w][i:]
            if len(data) <= len(rest):
                total += p * rest.startswith(data)
                continue
            if not data.startswith(rest):
                continue
            prev, pos = w, len(rest)
            while p > 0 and pos < len(data):
                nxt = list(zip((int(s) for s in chain.succ[prev]), chain.prob[prev]))
                end = data.find(b" ", pos)
                if end < 0:  # the window ends inside a word: every successor spelled that way
                    p *= sum(q for s, q in nxt if spell[s].startswith(data[pos:]))
                    break
                hit = [(s, q) for s, q in nxt if spell[s] == data[pos:end + 1]]
                p, prev, pos = (p * hit[0][1], hit[0][0], end + 1) if hit else (0.0, prev, pos)
            total += p
        return total

    E = 8
    n = 6
    bits = 0.0
    for k in range(n):
        law, win = law_at(k * E), bytes(stream[k * E:k * E + E + 1])
        for j in range(E):
            bits -= math.log2(prob(law, win[:j + 2]) / prob(law, win[:j + 1]))
    assert chain.protocol_floor_bpb(stream[:n * E + 1], E) == pytest.approx(bits / (n * E), rel=1e-9)
    assert chain.protocol_floor_bpb(stream[:n * E + 1], E) > chain.floor_bpb()  # a bounded context costs bits
    _, r = runs
    for s in r.values():
        assert s["entropy_rate_bpb"] < s["floor_bpb"] <= s["val_bpb"]


def test_an_untrained_model_scores_log2_vocab_per_token_under_bpe(tmp_path):
    import numpy as np
    import torch

    from auditkit.runner.data import load_corpus
    from auditkit.runner.evaluation import evaluate, make_eval_set
    from auditkit.runner.model import GPT

    corpus_file = tmp_path / "c.txt"
    corpus_file.write_text(paragraphs(300))
    corpus = load_corpus(f"text:{corpus_file}", vocab_size=320)
    tok = corpus.tokenizer
    assert tok.name == "bpe" and 260 < tok.vocab_size <= 320
    es = make_eval_set(corpus.val, tok.token_bytes, 256, 64)
    model = GPT(model_config_from_row(TINY, vocab_size=tok.vocab_size))
    model.init_weights(torch.Generator().manual_seed(0))
    bpb, se = evaluate(model, es, "cpu")
    targets = es.tokens[1:]
    scored = int((tok.token_bytes[targets] > 0).sum())
    assert scored < len(targets)  # BOS targets stand for no bytes and are left out
    assert es.n_bytes == int(tok.token_bytes[targets].sum()) > scored  # BPE: more than one byte per token
    assert bpb == pytest.approx(math.log2(tok.vocab_size) * scored / es.n_bytes, rel=2e-3)
    assert np.isfinite(se)


@pytest.mark.parametrize("case,needle", [
    ("missing", "no such data file"),
    ("nocolumn", "has no 'text' column (it has: body)"),
    ("little", "the evaluation needs"),
    ("onedoc", "need documents on both sides"),
    ("badspec", "unknown data spec"),
    ("badval", "is not val=F with 0 < F < 1"),
])
def test_data_problems_exit_2_before_training(tmp_path, capsys, case, needle):
    import pandas as pd

    from auditkit.runner.train import main

    text = tmp_path / "t.txt"
    text.write_text(paragraphs(60))
    data = {"missing": f"text:{tmp_path / 'nope.txt'}", "little": f"text:{text}", "badspec": "nosuch:x",
            "onedoc": f"text:{tmp_path / 'one.txt'}", "nocolumn": f"parquet:{tmp_path / 'b.parquet'}",
            "badval": f"text:{text},val=1.5"}[case]
    (tmp_path / "one.txt").write_text("a single paragraph of text " * 50)
    pd.DataFrame({"body": ["x"]}).to_parquet(tmp_path / "b.parquet")
    out = tmp_path / "out"
    rc = main(["--config-json", json.dumps(TINY), "--seed", "1", "--budget", "2steps", "--out", str(out),
               "--data", data, "--tokenizer", "bytes", "--eval-tokens", "100000"])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err
    assert not out.exists()  # refused before anything was written or trained


def test_a_bpe_run_records_its_tokenizer_and_its_checkpoint_re_evaluates(tmp_path):
    from auditkit.verify.deep import reevaluate_checkpoint

    corpus_file = tmp_path / "c.txt"
    corpus_file.write_text(paragraphs(300))
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("steps", 3), out_dir=tmp_path / "o", run_id="bpe",
                 timeout=120, settings={"data": f"text:{corpus_file}", "vocab_size": 320, "eval_tokens": 256,
                                        "eval_seq_len": 64})
    assert s["status"] == "ok", s.get("error")
    assert s["tokenizer"].startswith("bpe") and s["model_config"]["vocab_size"] <= 320
    assert s["eval_bytes"] > s["eval_tokens"] == 256 and s["floor_bpb"] is None
    row = summary_to_row(s, host="h", stage="s", budget=Budget("steps", 3), checkpoint_relpath="c.safetensors",
                         checkpoint_sha256=s["checkpoint_sha256"])
    assert schema_errors(row, "run-row") == [] and row["tokenizer"] == s["tokenizer"]
    data = (tmp_path / "o" / "checkpoint.safetensors").read_bytes()
    assert reevaluate_checkpoint(data, row, "c.safetensors") == []
    assert [f.code for f in reevaluate_checkpoint(data, dict(row, val_bpb="9.000000"), "c")] == ["deep-val-bpb-mismatch"]


def test_val_fraction_holds_out_more_documents_and_keeps_the_smaller_split_inside(tmp_path):
    from auditkit.runner.data import load_corpus, parse_spec

    f = tmp_path / "t.txt"
    f.write_text(paragraphs(300))
    assert parse_spec(f"text:{f},val=0.3")[1] == {"paths": [str(f)], "val_fraction": 0.3, "docs": "paragraphs"}
    assert parse_spec(f"text:{f}")[1]["val_fraction"] == 0.1
    small = load_corpus(f"text:{f}", tokenizer="bytes")
    large = load_corpus(f"text:{f},val=0.3", tokenizer="bytes")
    assert len(large.val) > 2 * len(small.val) and len(large.train) < len(small.train)
    # the threshold only moves up: every document held out at 10% is held out at 30%
    def docs(tokens):
        return set(bytes(tokens.astype("uint8").tolist()).split(b"\n\n"))

    assert docs(small.val) <= docs(large.val)
    for bad in ("val=0", "val=1", "val=x", "val=nan"):
        with pytest.raises(ValueError, match="is not val=F"):
            parse_spec(f"text:{f},{bad}")


def test_evaluation_does_not_depend_on_the_batch_size(runs):
    """evaluate() sizes its batches to the logits; the per-window sums, hence val_bpb, stay put."""
    import torch
    from safetensors.torch import load_file

    from auditkit.runner.evaluation import evaluate
    from auditkit.runner.model import GPT
    from auditkit.runner.train import eval_set_for

    tmp, r = runs
    summary = r["a"]
    model = GPT(summary["model_config"])
    model.load_state_dict(load_file(str(tmp / "a" / "checkpoint.safetensors")))
    es = eval_set_for(summary["data"], "auto", 8192, summary["eval_tokens"], summary["eval_seq_len"])
    got = [evaluate(model, es, torch.device("cpu"), batch_size=b) for b in (None, 1, 7)]
    assert all(abs(g[0] - got[0][0]) < 1e-6 and abs(g[1] - got[0][1]) < 1e-6 for g in got)
    assert abs(got[0][0] - summary["val_bpb"]) < 1.5e-6


def test_deep_reads_a_relative_text_file_from_the_package_through_the_store(tmp_path, monkeypatch):
    """A run on `text:c.txt` (relative); the package carries c.txt; --deep re-evaluates from another
    working directory, and refuses a carried file that is a symlink."""
    from auditkit.verify.deep import package_data_reader, reevaluate_checkpoint

    work = tmp_path / "work"
    work.mkdir()
    (work / "c.txt").write_text(paragraphs(300))
    monkeypatch.chdir(work)
    s = run_cell(matrix_row=TINY, seed=1, budget=Budget("steps", 3), out_dir=tmp_path / "o", run_id="rel",
                 timeout=120, settings={"data": "text:c.txt,val=0.3", "vocab_size": 320, "eval_tokens": 256,
                                        "eval_seq_len": 64})
    assert s["status"] == "ok", s.get("error")
    row = summary_to_row(s, host="h", stage="s", budget=Budget("steps", 3), checkpoint_relpath="c.safetensors",
                         checkpoint_sha256=s["checkpoint_sha256"])
    data = (tmp_path / "o" / "checkpoint.safetensors").read_bytes()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "c.txt").write_bytes((work / "c.txt").read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert reevaluate_checkpoint(data, row, "c", read=package_data_reader(pkg, {"c.txt": None})) == []
    # not carried and not here: --deep cannot check (exit 2), which is no finding about the checkpoint
    from auditkit.errors import AuditError

    with pytest.raises(AuditError, match="does not carry it"):
        reevaluate_checkpoint(data, row, "c", read=package_data_reader(pkg, {}))
    with pytest.raises(AuditError, match="extract the archive"):
        reevaluate_checkpoint(data, row, "c", read=package_data_reader(tmp_path / "pkg.tgz", {"c.txt": None}))
    (pkg / "c.txt").unlink()
    (pkg / "c.txt").symlink_to(work / "c.txt")
    (found,) = reevaluate_checkpoint(data, row, "c", read=package_data_reader(pkg, {"c.txt": None}))
    assert found.code == "deep-rebuild-failed" and "c.txt" in found.found
