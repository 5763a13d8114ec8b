"""The runner's training rows (best-fit packing, every row at BOS), its per-document evaluation
losses (docs/SPEC.md v1.2: eval-docs) and the bigram baseline, checked against direct counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from auditkit.runner.baseline import ALPHAS, bigram_bpb, choose_alpha
from auditkit.runner.data import load_corpus, parse_spec
from auditkit.runner.evaluation import (EvalSet, bpb_and_se, document_index, eval_docs_csv, make_eval_set,
                                        per_document)
from auditkit.runner.packing import BestFitPacker, RandomWindows, document_spans, make_packer

BOS = 0


def _stream(lengths: list[int]) -> np.ndarray:
    """Documents of the given lengths (BOS included), each filled with its own index + 1."""
    return np.concatenate([[BOS] + [i + 1] * (n - 1) for i, n in enumerate(lengths)]).astype(np.int64)


def test_every_row_starts_at_bos_and_holds_whole_documents_but_its_last():
    lengths = [3, 5, 9, 2, 7, 4, 12, 6, 3, 8] * 5
    tokens = _stream(lengths)
    packer = BestFitPacker(tokens, BOS, row_len=17, seed=1, buffer_docs=8)
    rows = packer.next_rows(40)
    assert rows.shape == (40, 17)
    assert (rows[:, 0] == BOS).all()
    for row in rows:
        # pieces between BOS: every one but the last is a whole document (its full length)
        starts = np.flatnonzero(row == BOS)
        pieces = np.split(row, starts[1:])
        for piece in pieces[:-1]:
            assert len(piece) == lengths[piece[1] - 1] if len(piece) > 1 else lengths[0]
        last = pieces[-1]
        assert len(last) <= lengths[last[1] - 1] if len(last) > 1 else True
    assert packer.cropped_tokens >= 0


def test_best_fit_takes_the_longest_document_that_fits():
    # buffer holds all four; a row of 10 takes 6 (largest that fits), then 4
    tokens = _stream([6, 3, 4, 11])
    packer = BestFitPacker(tokens, BOS, row_len=10, seed=0, buffer_docs=4)
    row = packer.next_rows(1)[0]
    assert list(row) == [BOS, 1, 1, 1, 1, 1, BOS, 3, 3, 3]
    assert packer.cropped_tokens == 0
    # next: 3 and 11 are left (and refills); the 11 does not fit a fresh row of 10 unless cut
    row = packer.next_rows(1)[0]
    assert row[0] == BOS


def test_packing_is_deterministic_and_seeded():
    tokens = _stream([3, 5, 9, 2, 7, 4, 12, 6, 3, 8] * 20)
    a = BestFitPacker(tokens, BOS, 33, seed=5).next_rows(30)
    b = BestFitPacker(tokens, BOS, 33, seed=5).next_rows(30)
    c = BestFitPacker(tokens, BOS, 33, seed=6).next_rows(30)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_stream_without_bos_gets_random_windows():
    tokens = np.arange(1, 500, dtype=np.int64)
    p = make_packer(tokens, None, 17, 0)
    assert isinstance(p, RandomWindows)
    rows = p.next_rows(5)
    assert rows.shape == (5, 17) and (np.diff(rows, axis=1) == 1).all()
    assert isinstance(make_packer(_stream([4, 4]), BOS, 5, 0), BestFitPacker)
    assert document_spans(_stream([2, 3]), BOS).tolist() == [[0, 2], [2, 5]]


def _fake_eval(tokens, token_bytes, seq_len):
    n = (len(tokens) - 1) // seq_len
    tokens = np.asarray(tokens[: n * seq_len + 1], dtype=np.int64)
    return EvalSet(tokens, seq_len, n, np.asarray(token_bytes, dtype=np.int64), "x")


def test_per_document_losses_sum_to_val_bpb_and_follow_bos():
    rng = np.random.default_rng(0)
    tokens = _stream([5, 9, 3, 14, 6, 2, 11, 8, 7, 4])
    tb = np.array([0] + [int(v) for v in rng.integers(1, 5, 20)])
    es = _fake_eval(tokens, tb, 8)
    pos = rng.random((es.n_windows, es.seq_len)) * (tb[es.tokens[1:]] > 0).reshape(es.n_windows, es.seq_len)
    doc, nats, nbytes = per_document(es, pos, BOS)
    # direct: each target's document is the number of BOS up to and including it, less one
    y = es.tokens[1:]
    d = np.cumsum(es.tokens == BOS)[1:] - 1
    for k in range(d.max() + 1):
        mask = d == k
        if tb[y[mask]].sum() == 0:
            assert k not in doc
            continue
        i = list(doc).index(k)
        assert nats[i] == pytest.approx(pos.reshape(-1)[mask].sum())
        assert nbytes[i] == tb[y[mask]].sum()
    bpb, _ = bpb_and_se(pos.sum(axis=1), tb[y].reshape(es.n_windows, es.seq_len).sum(axis=1))
    assert nats.sum() / (math.log(2) * nbytes.sum()) == pytest.approx(bpb, rel=1e-12)
    text = eval_docs_csv(doc, nats, nbytes)
    lines = text.splitlines()
    assert lines[0] == "doc,nats,bytes" and len(lines) == len(doc) + 1 and text.endswith("\n")
    assert lines[1].split(",")[1] == f"{nats[0]:.6f}"


def test_byte_streams_cut_at_blank_lines_or_else_by_window():
    text = np.frombuffer(b"ab\n\ncd e\n\nfgh", dtype=np.uint8).astype(np.int64)
    assert document_index(text, None).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2]
    es = _fake_eval(np.frombuffer(b"abcdefghij" * 3, dtype=np.uint8), np.ones(256), 4)
    doc, nats, nbytes = per_document(es, np.ones((es.n_windows, es.seq_len)), None)
    assert doc.tolist() == list(range(es.n_windows)) and (nbytes == es.seq_len).all()


def test_docs_lines_holds_out_paragraphs_and_makes_lines_documents(tmp_path):
    paras = [f"Title {i}\n" + "\n".join(f"verse {i} {j} " + "word " * (j + 1) for j in range(4)) for i in range(60)]
    path = tmp_path / "t.txt"
    path.write_text("\n\n".join(paras), "utf-8")
    assert parse_spec(f"text:{path},docs=lines,val=0.3")[1]["docs"] == "lines"
    with pytest.raises(ValueError, match="docs=paragraphs"):
        parse_spec(f"text:{path},docs=words")
    whole = load_corpus(f"text:{path},val=0.3", tokenizer="bytes")
    lines = load_corpus(f"text:{path},docs=lines,val=0.3", tokenizer="bytes")
    # the same chapters are held out; only the document boundaries differ
    assert sorted(v for v in whole.val.tolist() if v != 10) == sorted(v for v in lines.val.tolist() if v != 10)
    assert bytes(lines.val.astype(np.uint8)).count(b"\n\n") == 5 * bytes(whole.val.astype(np.uint8)).count(b"\n\n") + 4


def test_bigram_baseline_matches_a_direct_count():
    rng = np.random.default_rng(1)
    vocab = 7
    train = rng.integers(0, vocab, 3000)
    ev = rng.integers(0, vocab, 401)
    tb = np.array([0, 1, 2, 1, 3, 1, 2])
    alpha = choose_alpha(train, vocab)
    assert alpha in ALPHAS
    got = bigram_bpb(train, ev, tb, vocab)
    pair = np.zeros((vocab, vocab))
    for a, b in zip(train[:-1], train[1:]):
        pair[a, b] += 1
    uni = np.bincount(train, minlength=vocab)
    u = (uni + 1) / (len(train) + vocab)
    nats = bits_bytes = 0.0
    for a, b in zip(ev[:-1], ev[1:]):
        if tb[b]:
            nats += -math.log((pair[a, b] + alpha * u[b]) / (pair[a].sum() + alpha))
            bits_bytes += tb[b]
    assert got["bigram_bpb"] == pytest.approx(nats / (math.log(2) * bits_bytes), abs=1e-6)
    assert got["alpha"] == alpha and got["eval_bytes"] == bits_bytes


def test_bigram_baseline_is_beaten_by_the_true_bigram_law():
    """On a stream drawn from a known bigram law, the baseline scores near that law's entropy."""
    rng = np.random.default_rng(2)
    vocab = 5
    P = rng.dirichlet(np.full(vocab, 0.5), size=vocab)
    x = [0]
    for _ in range(60000):
        x.append(int(rng.choice(vocab, p=P[x[-1]])))
    x = np.array(x)
    train, ev = x[:50000], x[50000:]
    tb = np.ones(vocab, dtype=np.int64)
    got = bigram_bpb(train, ev, tb, vocab)["bigram_bpb"]
    true = float(np.mean([-math.log2(P[a, b]) for a, b in zip(ev[:-1], ev[1:])]))
    assert true <= got < true + 0.01


def test_make_eval_set_still_cuts_contiguous_windows():
    val = np.arange(1, 100, dtype=np.int64)
    es = make_eval_set(val, np.ones(200, dtype=np.int64), 32, 8)
    assert es.n_windows == 4 and es.tokens.tolist() == list(range(1, 34))
