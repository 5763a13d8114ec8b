"""Data for the runner: a generated Markov corpus with an exact entropy rate, or text files.

Default (`markov:seed=0`): a word-level Markov chain over a generated
vocabulary, each word spelled in lowercase letters and followed by a space.
The word sequence can be read back from the bytes, so the bytes' entropy rate
equals the chain's per-word entropy rate divided by the mean bytes per word
(both under the stationary distribution): that is `floor_bpb`, the lowest
val_bpb any model can reach.  A model has to learn both the spelling of every
word and the word transitions.

Text data (`text:PATH[,PATH...]`, or `parquet:PATH` with a `text` column):
bytes of the files, the last 10% held out for validation; no floor is known.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DATA = "markov:seed=0"


@dataclass(frozen=True)
class Corpus:
    spec: str
    train: np.ndarray  # uint8
    val: np.ndarray    # uint8
    floor_bpb: float | None


def parse_spec(spec: str) -> tuple[str, dict]:
    kind, _, rest = spec.partition(":")
    opts = {}
    if kind == "markov":
        for part in filter(None, rest.split(",")):
            k, _, v = part.partition("=")
            opts[k] = int(v)
    elif kind in ("text", "parquet"):
        opts["paths"] = [p for p in rest.split(",") if p]
        if not opts["paths"]:
            raise ValueError(f"data spec {spec!r} names no file")
    else:
        raise ValueError(f"unknown data spec {spec!r}: use markov:seed=N, text:PATH or parquet:PATH")
    return kind, opts


class MarkovChain:
    """The generated language: words, their spelling, and a sparse transition table."""

    def __init__(self, seed: int = 0, n_words: int = 400, fanout: int = 6):
        rng = np.random.default_rng(seed)
        letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
        words: list[bytes] = []
        seen = set()
        while len(words) < n_words:
            n = int(rng.integers(2, 8))
            w = bytes(letters[rng.integers(0, 26, n)])
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        self.succ = np.stack([rng.choice(n_words, fanout, replace=False) for _ in range(n_words)])
        p = rng.dirichlet(np.full(fanout, 0.7), size=n_words)
        self.prob = p
        self.cum = np.cumsum(p, axis=1)
        self.cum[:, -1] = 1.0

    def stationary(self) -> np.ndarray:
        n = len(self.words)
        P = np.zeros((n, n))
        for i in range(n):
            P[i, self.succ[i]] += self.prob[i]
        pi = np.full(n, 1.0 / n)
        for _ in range(5000):
            nxt = pi @ P
            if np.abs(nxt - pi).sum() < 1e-14:
                pi = nxt
                break
            pi = nxt
        return pi / pi.sum()

    def floor_bpb(self) -> float:
        pi = self.stationary()
        h_word = -(self.prob * np.log2(np.where(self.prob > 0, self.prob, 1))).sum(axis=1)
        lens = np.array([len(w) + 1 for w in self.words], dtype=np.float64)
        return float((pi * h_word).sum() / (pi * lens).sum())

    def generate(self, n_bytes: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = bytearray()
        state = int(rng.integers(0, len(self.words)))
        words, succ, cum = self.words, self.succ, self.cum
        u = rng.random(n_bytes // 2 + 16)
        k = 0
        while len(out) < n_bytes:
            out += words[state]
            out += b" "
            if k == len(u):
                u, k = rng.random(len(u)), 0
            state = int(succ[state][np.searchsorted(cum[state], u[k])])
            k += 1
        return np.frombuffer(bytes(out[:n_bytes]), dtype=np.uint8).copy()


def _cache_dir() -> Path:
    return Path(os.environ.get("AUDITKIT_CACHE", Path.home() / ".cache" / "auditkit"))


def load_corpus(spec: str = DEFAULT_DATA, train_bytes: int = 4_000_000, val_bytes: int = 262_144) -> Corpus:
    """The corpus named by `spec` (deterministic; generated corpora are cached on disk)."""
    kind, opts = parse_spec(spec)
    if kind == "markov":
        seed = opts.get("seed", 0)
        chain = MarkovChain(seed, opts.get("words", 400), opts.get("fanout", 6))
        # Keyed by this file's source too, so an edited generator never reads a stale cache.
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        key = hashlib.sha256(f"{spec}|{train_bytes}|{val_bytes}|{code}".encode()).hexdigest()[:16]
        cache = _cache_dir() / f"markov-{key}.npy"
        try:
            both = np.load(cache)
        except (OSError, ValueError):
            both = np.concatenate([chain.generate(train_bytes, seed * 2 + 1), chain.generate(val_bytes, seed * 2 + 2)])
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f".{cache.name}.{os.getpid()}.npy")
                np.save(tmp, both)
                os.replace(tmp, cache)
            except OSError:
                pass
        return Corpus(spec, both[:train_bytes], both[train_bytes:], chain.floor_bpb())
    if kind == "text":
        data = b"".join(Path(p).read_bytes() for p in opts["paths"])
    else:
        import pyarrow.parquet as pq

        texts = []
        for p in opts["paths"]:
            names = pq.read_schema(p).names
            if "text" not in names:
                raise ValueError(f"{p}: parquet file has no 'text' column (it has: {', '.join(names) or 'none'})")
            texts += [t for t in pq.read_table(p, columns=["text"]).column("text").to_pylist() if t]
        data = "\n".join(texts).encode()
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    if len(arr) < 4096:
        raise ValueError(f"data {spec!r} holds only {len(arr)} bytes; need at least 4096")
    cut = int(len(arr) * 0.9)
    return Corpus(spec, arr[:cut], arr[cut:], None)
