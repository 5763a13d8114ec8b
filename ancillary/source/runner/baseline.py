"""The count-based bigram baseline: what the training tokens' pair counts alone score under
the evaluation protocol (runner/evaluation.py), the floor a trained model has to beat to
have learned more than which token follows which.

    p(b | a) = (c(a, b) + alpha * u(b)) / (c(a) + alpha),   u(b) = (c(b) + 1) / (N + V)

c counts pairs and tokens of the training stream (N tokens, V ids).  alpha is chosen
before the validation text is looked at: on the training stream alone, counts from its
first 90% and cross-entropy on its last 10%, over a fixed grid (ALPHAS); then the
counts are taken over the whole training stream.  Each scored target is predicted from
the token before it (every evaluation target has one: the window's input), targets that
stand for no bytes (BOS) count in neither sum, as in val_bpb.  Torch-free and
deterministic.
"""

from __future__ import annotations

import math

import numpy as np

ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
BASELINE_VERSION = 1


def _counts(tokens: np.ndarray, vocab: int):
    t = np.asarray(tokens, dtype=np.int64)
    pair_keys, pair_counts = np.unique(t[:-1] * vocab + t[1:], return_counts=True)
    uni = np.bincount(t, minlength=vocab).astype(np.float64)
    ctx = np.bincount(t[:-1], minlength=vocab).astype(np.float64)
    return pair_keys, pair_counts.astype(np.float64), uni, ctx


def _nats(counts, prev: np.ndarray, nxt: np.ndarray, vocab: int, alpha: float) -> np.ndarray:
    pair_keys, pair_counts, uni, ctx = counts
    u = (uni + 1.0) / (uni.sum() + vocab)
    keys = prev * vocab + nxt
    i = np.searchsorted(pair_keys, keys)
    i = np.minimum(i, len(pair_keys) - 1)
    c = np.where(pair_keys[i] == keys, pair_counts[i], 0.0)
    return -np.log((c + alpha * u[nxt]) / (ctx[prev] + alpha))


def choose_alpha(train: np.ndarray, vocab: int) -> float:
    """The grid value with the lowest cross-entropy on the last 10% of the training stream."""
    cut = int(len(train) * 0.9)
    counts = _counts(train[:cut], vocab)
    held = np.asarray(train[cut:], dtype=np.int64)
    scores = [float(_nats(counts, held[:-1], held[1:], vocab, a).mean()) for a in ALPHAS]
    return ALPHAS[int(np.argmin(scores))]


def bigram_bpb(train: np.ndarray, eval_tokens: np.ndarray, token_bytes: np.ndarray, vocab: int) -> dict:
    """{bigram_bpb, alpha, eval_bytes, train_tokens} of the bigram baseline on these evaluation tokens
    (`eval_tokens`: the scored stream, each target predicted from the token before it)."""
    alpha = choose_alpha(train, vocab)
    ev = np.asarray(eval_tokens, dtype=np.int64)
    nats = _nats(_counts(train, vocab), ev[:-1], ev[1:], vocab, alpha)
    tb = np.asarray(token_bytes, dtype=np.int64)[ev[1:]]
    total = float((nats * (tb > 0)).sum())
    return {"bigram_bpb": round(total / (math.log(2) * int(tb.sum())), 6), "alpha": alpha,
            "eval_bytes": int(tb.sum()), "train_tokens": int(len(train)), "version": BASELINE_VERSION}
