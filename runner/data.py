"""Data for the runner: a generated Markov corpus whose best reachable val_bpb is known
exactly, or documents of text.

Default (`markov:seed=0`): a word-level Markov chain over a generated
vocabulary, each word spelled in lowercase letters and followed by a space,
read as bytes (the byte tokenizer).  Training and validation text are two
independent draws of the chain.  `floor_bpb` is what a perfect model scores
under the evaluation protocol (runner/evaluation.py: these windows, this
context length), computed exactly; the entropy rate is the limit for an
unbounded context.

Text (`text:PATH[,PATH...]`: each file's paragraphs, split at blank lines, are
documents; `parquet:PATH[,PATH...]`: each row's `text` column is a document):
a document goes to validation when the first 8 bytes of its sha256, read as an
integer, fall in the lowest `val_fraction` of the range (10% unless the spec
ends in `,val=F`, e.g. `text:kjv.txt,val=0.3`), so the split is by document,
fixed by content, and duplicates never straddle it.  `,docs=lines` (text only)
keeps that split by paragraph but makes each non-blank line of a paragraph its
own document (KJV: chapters are held out, verses are the documents), so short
training rows can be packed from whole documents.
Tokens: BPE (runner/tokenizer.py, trained on the training documents) by
default, or bytes; documents stay apart (BOS before each under BPE).  No floor
is known for text.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

try:
    from .files import atomic_write, cache_dir
    from .tokenizer import DEFAULT_VOCAB, Tokenizer, bpe_tokenizer, byte_tokenizer
except ImportError:  # run as a script from runner/
    from files import atomic_write, cache_dir
    from tokenizer import DEFAULT_VOCAB, Tokenizer, bpe_tokenizer, byte_tokenizer

DEFAULT_DATA = "markov:seed=0"
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Corpus:
    spec: str
    train: np.ndarray            # token ids (int64)
    val: np.ndarray              # token ids (int64): the validation documents in order
    tokenizer: Tokenizer
    chain: "MarkovChain | None" = field(default=None, repr=False)

    @property
    def floor_bpb(self) -> float | None:
        """The entropy rate of the Markov corpus (no context limit), else None."""
        return self.chain.floor_bpb() if self.chain is not None else None


def parse_spec(spec: str) -> tuple[str, dict]:
    kind, _, rest = spec.partition(":")
    opts = {}
    if kind == "markov":
        for part in filter(None, rest.split(",")):
            k, _, v = part.partition("=")
            if k not in ("seed", "words", "fanout") or not v.lstrip("-").isdigit():
                raise ValueError(f"data spec {spec!r}: {part!r} is not seed=N, words=N or fanout=N")
            opts[k] = int(v)
    elif kind in ("text", "parquet"):
        parts = [p for p in rest.split(",") if p]
        opts["val_fraction"] = VAL_FRACTION
        opts["docs"] = "paragraphs"
        while parts and parts[-1].startswith(("val=", "docs=")):
            key, _, value = parts.pop().partition("=")
            if key == "docs":
                if value not in ("paragraphs", "lines") or kind != "text":
                    raise ValueError(f"data spec {spec!r}: docs={value!r}: text files take docs=paragraphs "
                                     f"(the default) or docs=lines")
                opts["docs"] = value
                continue
            try:
                frac = float(value)
            except ValueError:
                frac = float("nan")
            if not 0 < frac < 1:
                raise ValueError(f"data spec {spec!r}: 'val={value}' is not val=F with 0 < F < 1 "
                                 f"(the fraction of documents held out for validation)")
            opts["val_fraction"] = frac
        opts["paths"] = parts
        if not opts["paths"]:
            raise ValueError(f"data spec {spec!r} names no file")
    else:
        raise ValueError(f"unknown data spec {spec!r}: use markov:seed=N, text:PATH[,val=F] or parquet:PATH[,val=F]")
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

    # -- the byte-level view: hidden state (word, position in "word ") -------------
    def _byte_states(self):
        """Per hidden state: the byte it emits; the index of each word's first and last state."""
        spell = [w + b" " for w in self.words]
        first = np.cumsum([0] + [len(s) for s in spell[:-1]])
        last = first + np.array([len(s) - 1 for s in spell])
        emit = np.frombuffer(b"".join(spell), dtype=np.uint8)
        return emit, first, last

    def protocol_floor_bpb(self, tokens: np.ndarray, seq_len: int, per_window: bool = False):
        """The exact bits per byte of the Bayes-optimal predictor on these evaluation windows.

        `tokens` is the scored stream (bytes of this chain's validation split from its
        start, `n * seq_len + 1` of them), cut into windows as runner/evaluation.py cuts
        it: each target is predicted from the bytes of its own window only.  The
        predictor knows the chain; its belief at a window's first byte is the law of
        the hidden state there (the generator starts at a uniform word), and it is
        updated byte by byte.  No model evaluated under the same protocol can do
        better in expectation.  `per_window`: each window's bits per byte instead of the mean.

        Until a window has shown two spaces the belief is a full vector over the
        hidden states (an HMM filter); from then on the last word is known and the
        belief is the next word's law given it, restricted to the words that begin
        with the letters seen since (a prefix-tree walk, the same numbers, cheaper).
        """
        emit, first, last = self._byte_states()
        S, W = len(emit), len(self.words)
        n = (len(tokens) - 1) // seq_len
        x = np.asarray(tokens[: n * seq_len], dtype=np.int64).reshape(n, seq_len)
        y = np.asarray(tokens[1: n * seq_len + 1], dtype=np.int64).reshape(n, seq_len)
        P = np.zeros((W, W))
        for w in range(W):
            P[w, self.succ[w]] += self.prob[w]
        inner = np.setdiff1d(np.arange(S), last)

        def advance(a):  # one byte forward: inside a word, or from its space to the next word
            out = np.zeros_like(a)
            out[..., inner + 1] = a[..., inner]
            out[..., first] = a[..., last] @ P
            return out

        # the law of the hidden state at each window start: propagated from the uniform
        # first word, until it no longer changes (the stationary law)
        starts = np.arange(n) * seq_len
        prior = np.zeros((n, S))
        law = np.zeros(S)
        law[first] = 1.0 / W
        pos, k = 0, 0
        while k < n:
            if pos == starts[k]:
                prior[k] = law
                k += 1
                continue
            nxt = advance(law)
            if np.abs(nxt - law).max() < 1e-17:
                prior[k:] = nxt
                break
            law, pos = nxt, pos + 1

        # phase 1, the HMM filter, up to and including each window's second space
        spaces = np.cumsum(x == ord(" "), axis=1)
        second = np.where(spaces[:, -1] >= 2, np.argmax(spaces >= 2, axis=1), seq_len - 1)
        match = emit[None, :] == np.arange(256)[:, None]   # (byte, state)
        bits = np.zeros(n)
        live, belief = np.arange(n), prior
        for j in range(seq_len):
            keep = second[live] >= j
            live, belief = live[keep], belief[keep]
            if len(live) == 0:
                break
            belief = belief * match[x[live, j]]
            belief /= belief.sum(axis=1, keepdims=True)
            belief = advance(belief)
            bits[live] -= np.log2((belief * match[y[live, j]]).sum(axis=1))
        # phase 2: the word that ended at the second space, then a walk down the prefix tree
        todo = second < seq_len - 1
        if todo.any():
            child, node_word, F = self._prefix_tree(P)
            rows = np.flatnonzero(todo)
            prev = np.full(n, -1)
            q = np.zeros(n, dtype=np.int64)   # the root: no letters of the current word seen
            j = second.copy()
            index = {w: i for i, w in enumerate(self.words)}
            for r in rows:
                end = second[r]
                seg_start = int(np.flatnonzero(x[r, :end] == ord(" "))[-1]) + 1
                prev[r] = index[bytes(x[r, seg_start:end].astype(np.uint8))]
            while True:
                live = rows[j[rows] + 1 < seq_len]
                if len(live) == 0:
                    break
                jj = j[live] + 1
                seen = x[live, jj]                      # condition on the next input byte
                c = child[q[live], seen]
                ended = seen == ord(" ")
                prev[live[ended]] = node_word[c[ended]]
                q[live] = np.where(ended, 0, c)
                nxt = child[q[live], y[live, jj]]       # then predict its target
                bits[live] -= np.log2(F[prev[live], nxt] / F[prev[live], q[live]])
                j[live] = jj
        return bits / seq_len if per_window else float(bits.sum() / (n * seq_len))

    def _prefix_tree(self, P: np.ndarray):
        """Nodes are the prefixes of every "word " (0 is the empty one): child[node, byte]
        (-1 for none), the word a full "word " node spells, and F[w, node], the probability
        that w's successor begins with the node's letters."""
        nodes = {b"": 0}
        for w in self.words:
            sp = w + b" "
            for i in range(1, len(sp) + 1):
                nodes.setdefault(sp[:i], len(nodes))
        child = np.full((len(nodes), 256), -1, dtype=np.int64)
        node_word = np.full(len(nodes), -1, dtype=np.int64)
        member = np.zeros((len(self.words), len(nodes)))
        for text, i in nodes.items():
            if text:
                child[nodes[text[:-1]], text[-1]] = i
        for wi, w in enumerate(self.words):
            sp = w + b" "
            node_word[nodes[sp]] = wi
            for i in range(len(sp) + 1):
                member[wi, nodes[sp[:i]]] = 1.0
        return child, node_word, P @ member

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


def read_documents(kind: str, paths: list[str], read=None) -> list[bytes]:
    """The documents of text or parquet files. Raises ValueError naming the file at fault.

    `read(path) -> bytes` reads a text file instead of the filesystem (verify --deep reads a
    package's own copy through the package store)."""
    docs: list[bytes] = []
    for p in paths:
        if read is None and not Path(p).is_file():
            raise ValueError(f"{p}: no such data file")
        if kind == "text":
            raw = Path(p).read_bytes() if read is None else read(p)
            docs += [d for d in re.split(rb"\n[ \t\r]*\n+", raw) if d.strip()]
            continue
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(p).names
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise ValueError(f"{p}: not a readable parquet file ({exc})") from None
        if "text" not in names:
            raise ValueError(f"{p}: parquet file has no 'text' column (it has: {', '.join(names) or 'none'})")
        docs += [t.encode("utf-8") for t in pq.read_table(p, columns=["text"]).column("text").to_pylist() if t]
    return docs


def is_validation(doc: bytes, fraction: float = VAL_FRACTION) -> bool:
    return int.from_bytes(hashlib.sha256(doc).digest()[:8], "big") < fraction * 2 ** 64


def load_corpus(spec: str = DEFAULT_DATA, tokenizer: str = "auto", vocab_size: int = DEFAULT_VOCAB,
                train_bytes: int = 4_000_000, val_bytes: int = 1 << 20, read=None) -> Corpus:
    """The corpus named by `spec`, tokenized (deterministic; generated corpora and trained
    tokenizers are cached on disk).  `tokenizer`: bytes, bpe or auto (bytes for the Markov
    corpus, bpe for text).  Raises ValueError for data that cannot be read or split."""
    kind, opts = parse_spec(spec)
    if tokenizer not in ("auto", "bytes", "bpe"):
        raise ValueError(f"tokenizer {tokenizer!r}: use bytes, bpe or auto")
    if tokenizer == "auto":
        tokenizer = "bytes" if kind == "markov" else "bpe"
    if kind == "markov":
        seed = opts.get("seed", 0)
        chain = MarkovChain(seed, opts.get("words", 400), opts.get("fanout", 6))
        # Keyed by this file's source too, so an edited generator never reads a stale cache.
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        key = hashlib.sha256(f"{spec}|{train_bytes}|{val_bytes}|{code}".encode()).hexdigest()[:16]
        cache = cache_dir() / f"markov-{key}.npy"
        try:
            both = np.load(cache)
        except (OSError, ValueError):
            both = np.concatenate([chain.generate(train_bytes, seed * 2 + 1), chain.generate(val_bytes, seed * 2 + 2)])
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                npy = io.BytesIO()
                np.save(npy, both)
                atomic_write(cache, npy.getvalue())
            except OSError:
                pass
        train, val = both[:train_bytes].tobytes(), both[train_bytes:].tobytes()
        tok = byte_tokenizer() if tokenizer == "bytes" else bpe_tokenizer([train], vocab_size)
        return Corpus(spec, tok.encode_documents([train]), tok.encode_documents([val]), tok, chain)
    docs = read_documents(kind, opts["paths"], read)
    frac = opts["val_fraction"]
    val_docs = [d for d in docs if is_validation(d, frac)]
    train_docs = [d for d in docs if not is_validation(d, frac)]
    if opts.get("docs") == "lines":  # held out by paragraph; each of its non-blank lines is a document
        val_docs = [ln for d in val_docs for ln in d.split(b"\n") if ln.strip()]
        train_docs = [ln for d in train_docs for ln in d.split(b"\n") if ln.strip()]
    if not train_docs or not val_docs:
        raise ValueError(f"data {spec!r}: {len(docs)} document(s), {len(val_docs)} held out for validation; "
                         f"need documents on both sides (text files: paragraphs split at blank lines)")
    if tokenizer == "bytes":
        tok = byte_tokenizer()
        sep = b"\n\n"  # the byte stream keeps the paragraph breaks between documents
        train_docs, val_docs = [sep.join(train_docs)], [sep.join(val_docs)]
    else:
        tok = bpe_tokenizer(train_docs, vocab_size)
    return Corpus(spec, tok.encode_documents(train_docs), tok.encode_documents(val_docs), tok)
