"""Training rows: documents packed best-fit so that every row starts at BOS (the idea of
upstream's BOS-aligned loader), or random windows where the corpus has no BOS.

A row holds `row_len` = seq_len + 1 tokens (inputs and their shifted targets).  The
packer keeps a buffer of whole documents (each begins with its BOS).  To fill a row it
repeatedly takes the longest buffered document that fits in the space left; when none
fits, it takes the shortest one, cut to the space left (its rest is dropped), so no
position is padding and every row begins with a document's BOS.  Documents enter the
buffer in a seeded random order, epoch after epoch.  Torch-free and deterministic: the
same tokens, seed and sizes give the same rows.
"""

from __future__ import annotations

import bisect

import numpy as np

BUFFER_DOCS = 256  # documents the best-fit search chooses from


def document_spans(tokens: np.ndarray, bos: int) -> np.ndarray:
    """(start, end) of each document of a BOS-separated stream (a document runs from its BOS
    to the next BOS); shape (n, 2).  Text before the first BOS, if any, is not a document."""
    starts = np.flatnonzero(np.asarray(tokens) == bos)
    ends = np.append(starts[1:], len(tokens))
    return np.stack([starts, ends], axis=1).astype(np.int64)


class BestFitPacker:
    """Rows of whole documents packed best-fit; `next_rows(n)` gives an (n, row_len) int64 array."""

    def __init__(self, tokens: np.ndarray, bos: int, row_len: int, seed: int, buffer_docs: int = BUFFER_DOCS):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.spans = document_spans(self.tokens, bos)
        if len(self.spans) == 0:
            raise ValueError("no BOS in the training stream: nothing to pack")
        self.row_len = row_len
        self.rng = np.random.default_rng(seed)
        self.buffer_docs = buffer_docs
        self.order: list[int] = []
        self.epoch = 0
        # the buffer: sorted (length, serial, doc) so the best fit is a bisection
        self.buffer: list[tuple[int, int, int]] = []
        self.serial = 0
        self.cropped_tokens = 0   # tokens dropped from documents cut to fit (the cost of packing)
        self._refill()

    def _next_doc(self) -> int:
        if not self.order:
            self.order = self.rng.permutation(len(self.spans)).tolist()[::-1]
            self.epoch += 1
        return self.order.pop()

    def _refill(self) -> None:
        while len(self.buffer) < self.buffer_docs:
            d = self._next_doc()
            s, e = self.spans[d]
            bisect.insort(self.buffer, (int(e - s), self.serial, d))
            self.serial += 1

    def _row(self) -> np.ndarray:
        row = np.empty(self.row_len, dtype=np.int64)
        filled = 0
        while filled < self.row_len:
            space = self.row_len - filled
            i = bisect.bisect_right(self.buffer, (space, float("inf"), 0)) - 1
            if i >= 0:                      # the longest document that fits, whole
                length, _, d = self.buffer.pop(i)
                s = self.spans[d][0]
                row[filled:filled + length] = self.tokens[s:s + length]
                filled += length
            else:                           # none fits: the shortest, cut to the space left
                length, _, d = self.buffer.pop(0)
                s = self.spans[d][0]
                row[filled:] = self.tokens[s:s + space]
                self.cropped_tokens += length - space
                filled = self.row_len
            self._refill()
        return row

    def next_rows(self, n: int) -> np.ndarray:
        return np.stack([self._row() for _ in range(n)])


class RandomWindows:
    """Rows as uniform random windows of the stream (corpora without BOS: Markov or bytes)."""

    def __init__(self, tokens: np.ndarray, row_len: int, seed: int):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.row_len = row_len
        self.rng = np.random.default_rng(seed)
        self.cropped_tokens = 0

    def next_rows(self, n: int) -> np.ndarray:
        starts = self.rng.integers(0, len(self.tokens) - self.row_len + 1, n)
        return np.stack([self.tokens[s:s + self.row_len] for s in starts])


def make_packer(tokens: np.ndarray, bos: int | None, row_len: int, seed: int):
    """Best-fit packing where the stream has BOS-led documents, random windows otherwise."""
    if bos is not None and np.any(np.asarray(tokens[:1]) == bos):
        return BestFitPacker(tokens, bos, row_len, seed)
    return RandomWindows(tokens, row_len, seed)
