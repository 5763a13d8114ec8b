"""The evaluation protocol: one set of scored tokens and one context length for every
candidate of a study, whatever each candidate's training seq_len (upstream fixes
both with MAX_SEQ_LEN and EVAL_TOKENS in prepare.py).

The validation token stream is cut into `eval_tokens // eval_seq_len` windows of
`eval_seq_len` inputs, each followed by its targets (window k covers tokens
k*E .. k*E+E, so every scored target sees between 1 and E tokens of context).
val_bpb = summed nats / (ln 2 * bytes of the target tokens); targets that stand
for no bytes (BOS) count in neither sum, as upstream.  `val_bpb_se` is the
standard error of that ratio over the windows (windows as the sampling unit).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EvalSet:
    tokens: np.ndarray        # int64, n_windows * seq_len + 1 token ids
    seq_len: int              # the evaluation context length (tokens)
    n_windows: int
    token_bytes: np.ndarray   # int64, bytes each token id stands for (0 for BOS)
    sha256: str               # of the scored token stream (uint8 for byte-level ids, else uint32 LE)

    @property
    def target_bytes(self) -> np.ndarray:
        return self.token_bytes[self.tokens[1:]]

    @property
    def n_tokens(self) -> int:
        """Target positions evaluated (BOS targets among them count in neither sum)."""
        return self.n_windows * self.seq_len

    @property
    def n_bytes(self) -> int:
        return int(self.target_bytes.sum())

    def record(self) -> dict:
        """What a summary records about the evaluation."""
        return {"eval_seq_len": self.seq_len, "eval_tokens": self.n_tokens, "eval_bytes": self.n_bytes,
                "eval_sha256": self.sha256, "eval_windows": self.n_windows}


def token_stream_sha256(tokens: np.ndarray, vocab_size: int) -> str:
    dtype = np.uint8 if vocab_size <= 256 else np.dtype("<u4")
    return hashlib.sha256(np.ascontiguousarray(tokens, dtype=dtype).tobytes()).hexdigest()


def make_eval_set(val: np.ndarray, token_bytes: np.ndarray, eval_tokens: int, eval_seq_len: int) -> EvalSet:
    """The first `eval_tokens` validation targets, in whole windows of `eval_seq_len` (at least one).

    Raises ValueError when the validation split is too short for them.
    """
    if eval_seq_len <= 0 or eval_tokens <= 0:
        raise ValueError("eval_tokens and eval_seq_len must be positive")
    n = max(1, eval_tokens // eval_seq_len)
    need = n * eval_seq_len + 1
    if len(val) < need:
        raise ValueError(f"the validation split holds {len(val)} tokens; the evaluation needs {need} "
                         f"({n} windows of eval_seq_len {eval_seq_len}, plus one): lower eval_tokens "
                         f"or give more validation text")
    tokens = np.asarray(val[:need], dtype=np.int64)
    tb = np.asarray(token_bytes, dtype=np.int64)
    return EvalSet(tokens, eval_seq_len, n, tb, token_stream_sha256(tokens, len(tb)))


def bpb_and_se(nats: np.ndarray, nbytes: np.ndarray) -> tuple[float, float]:
    """val_bpb = sum(nats) / (ln 2 * sum(bytes)) and its standard error over windows.

    `nats` and `nbytes` are per window.  The ratio estimator's variance is
    sum((nats_k - R bytes_k)^2) / (m (m - 1) mean(bytes)^2).
    """
    nats, nbytes = np.asarray(nats, dtype=np.float64), np.asarray(nbytes, dtype=np.float64)
    m = len(nats)
    ratio = nats.sum() / nbytes.sum()
    if m < 2:
        return ratio / math.log(2), math.nan
    resid = nats - ratio * nbytes
    se = math.sqrt((resid ** 2).sum() / (m * (m - 1))) / nbytes.mean()
    return ratio / math.log(2), se / math.log(2)


def evaluate(model, es: EvalSet, device, autocast=None, batch_size: int | None = None) -> tuple[float, float]:
    """(val_bpb, val_bpb_se) of `model` on the evaluation set.

    `batch_size` windows at a time; by default as many as keep one batch's logits near 8 MiB on
    CPU (larger blocks are fresh mappings from glibc whose pages fault in one by one: at
    vocabulary 8192 that cost more time than the arithmetic) and 32 on an accelerator.
    The sum over windows does not depend on the batch size."""
    return bpb_and_se(*window_nats(model, es, device, autocast, batch_size))


def window_nats(model, es: EvalSet, device, autocast=None, batch_size: int | None = None):
    """(nats, bytes) per evaluation window: the summed loss of its targets and the bytes they stand for."""
    pos = position_nats(model, es, device, autocast, batch_size)
    nbytes = es.token_bytes[es.tokens[1:]].reshape(es.n_windows, es.seq_len).sum(axis=1)
    return pos.sum(axis=1), nbytes


def document_index(tokens: np.ndarray, bos: int | None) -> np.ndarray:
    """The document each target (tokens[1:]) belongs to, numbered 0.. in stream order.

    BOS streams: a document runs from its BOS to the next (the BOS target opens the new
    document; it stands for no bytes, so it counts in neither sum).  Byte streams without
    BOS: a document begins after each blank line (the paragraph break "\n\n" the byte
    tokenizer keeps between documents); a stream with no blank line at all (the Markov
    corpus) has no documents, and each evaluation window counts as one instead (set by
    `per_document`)."""
    t = np.asarray(tokens, dtype=np.int64)
    if bos is not None:
        opens = t == bos
    else:
        opens = np.zeros(len(t), dtype=bool)
        opens[2:] = (t[:-2] == 10) & (t[1:-1] == 10)
    doc = np.cumsum(opens)
    if len(t) and opens[0]:
        doc -= 1
    return doc[1:]


def per_document(es: EvalSet, pos_nats: np.ndarray, bos: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(doc, nats, bytes) per evaluation document with at least one byte, in stream order.

    `pos_nats` is `position_nats`' (n_windows, seq_len) array.  Where the stream has no
    document boundary (see `document_index`) each window is a document."""
    doc = document_index(es.tokens, bos)
    if bos is None and doc[-1] == doc[0]:
        doc = np.repeat(np.arange(es.n_windows), es.seq_len)
    tb = es.token_bytes[es.tokens[1:]]
    n = int(doc[-1]) + 1
    nats = np.bincount(doc, weights=np.asarray(pos_nats, dtype=np.float64).reshape(-1), minlength=n)
    nbytes = np.bincount(doc, weights=tb, minlength=n).astype(np.int64)
    keep = np.flatnonzero(nbytes > 0)
    return keep, nats[keep], nbytes[keep]


def eval_docs_csv(doc: np.ndarray, nats: np.ndarray, nbytes: np.ndarray) -> str:
    """The per-document evaluation file (SPEC v1.2 `eval-docs/<run_id>.csv`): header doc,nats,bytes."""
    lines = ["doc,nats,bytes"]
    lines += [f"{int(d)},{x:.6f},{int(b)}" for d, x, b in zip(doc, nats, nbytes)]
    return "\n".join(lines) + "\n"


def position_nats(model, es: EvalSet, device, autocast=None, batch_size: int | None = None) -> np.ndarray:
    """The loss (nats) of every scored target, shape (n_windows, seq_len); 0 where the target
    stands for no bytes (BOS)."""
    import contextlib

    import torch

    if batch_size is None:
        per_window = es.seq_len * model.cfg["vocab_size"] * 4
        batch_size = 32 if torch.device(device).type != "cpu" else max(1, (8 << 20) // per_window)
    v = torch.from_numpy(es.tokens)
    x = v[:-1].view(es.n_windows, es.seq_len)
    y = v[1:].view(es.n_windows, es.seq_len)
    tb = torch.from_numpy(es.token_bytes)
    nats = np.zeros((es.n_windows, es.seq_len))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, es.n_windows, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            with (autocast or contextlib.nullcontext()):
                loss = model(xb.to(device), yb.to(device), reduction="none")
            loss = loss.float().cpu().view(yb.shape).double() * (tb[yb] > 0)
            nats[i:i + len(xb)] = loss.numpy()
    model.train(was_training)
    return nats
