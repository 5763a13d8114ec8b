"""Tokenizers: bytes (one token per byte, the Markov corpus's) or BPE as upstream's prepare.py.

BPE: trained with `rustbpe` on the training documents only (GPT-4-style split
pattern with 1-2 digit numbers, vocabulary size a setting, 4 reserved special
tokens of which the first is BOS), encoded with `tiktoken`.  A trained
tokenizer is cached as plain text (base64 token and rank per line, never a
pickle) under `$AUDITKIT_CACHE/tokenizers/`, keyed by the training text, the
vocabulary size and the pattern; training is deterministic, so a cache miss
rebuilds the same merges.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:
    from .files import atomic_write, cache_dir
except ImportError:  # run as a script from runner/
    from files import atomic_write, cache_dir

SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS = SPECIAL_TOKENS[0]
DEFAULT_VOCAB = 8192


@dataclass(frozen=True)
class Tokenizer:
    name: str                 # "bytes" or "bpe"
    vocab_size: int
    bos: int | None           # the id put before every document (None for bytes)
    token_bytes: np.ndarray   # bytes each id stands for; 0 for special tokens
    sha256: str               # identifies the vocabulary ("bytes" has a fixed one)
    encoding: object = None   # the tiktoken Encoding (bpe)

    def label(self) -> str:
        return "bytes" if self.name == "bytes" else f"bpe{self.vocab_size}-{self.sha256[:12]}"

    def encode_documents(self, docs: list[bytes]) -> np.ndarray:
        """One token stream: each document after BOS (bpe), or the documents' bytes back to back (bytes)."""
        if self.name == "bytes":
            return np.frombuffer(b"".join(docs), dtype=np.uint8).astype(np.int64)
        ids = self.encoding.encode_ordinary_batch([d.decode("utf-8", "replace") for d in docs])
        out = []
        for row in ids:
            out.append(self.bos)
            out.extend(row)
        return np.asarray(out, dtype=np.int64)


def byte_tokenizer() -> Tokenizer:
    return Tokenizer("bytes", 256, None, np.ones(256, dtype=np.int64), hashlib.sha256(bytes(range(256))).hexdigest())


def _cache_dir() -> Path:
    return cache_dir() / "tokenizers"


def bpe_tokenizer(train_docs: list[bytes], vocab_size: int = DEFAULT_VOCAB) -> Tokenizer:
    """A BPE tokenizer trained on `train_docs` with `vocab_size` ids in all (fewer when the text
    runs out of pairs to merge), loaded from the cache when it was trained before."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} is below the 256 byte tokens plus "
                         f"{len(SPECIAL_TOKENS)} special tokens")
    h = hashlib.sha256(f"{vocab_size}|{SPLIT_PATTERN}|".encode())
    for d in train_docs:
        h.update(hashlib.sha256(d).digest())
    path = _cache_dir() / f"bpe-{h.hexdigest()[:24]}.txt"
    try:
        ranks = _read_ranks(path)
    except (OSError, ValueError):
        import rustbpe

        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator((d.decode("utf-8", "replace") for d in train_docs),
                                    vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
        ranks = {bytes(k): int(v) for k, v in trainer.get_mergeable_ranks()}
        _write_ranks(path, ranks)
    return _from_ranks(ranks)


def _from_ranks(ranks: dict[bytes, int]) -> Tokenizer:
    import tiktoken

    n = len(ranks)
    specials = {name: n + i for i, name in enumerate(SPECIAL_TOKENS)}
    enc = tiktoken.Encoding(name="auditkit-bpe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks,
                            special_tokens=specials)
    token_bytes = np.zeros(n + len(SPECIAL_TOKENS), dtype=np.int64)
    for tok, rank in ranks.items():
        token_bytes[rank] = len(tok)
    digest = hashlib.sha256(b"".join(base64.b64encode(t) + b" %d\n" % r
                                     for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))).hexdigest()
    return Tokenizer("bpe", n + len(SPECIAL_TOKENS), specials[BOS], token_bytes, digest, enc)


def _read_ranks(path: Path) -> dict[bytes, int]:
    ranks = {}
    for line in path.read_text("ascii").splitlines():
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not 0..n-1")
    return ranks


def _write_ranks(path: Path, ranks: dict[bytes, int]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, "".join(f"{base64.b64encode(t).decode()} {r}\n"
                                   for t, r in sorted(ranks.items(), key=lambda kv: kv[1])).encode("ascii"))
    except OSError:
        pass  # an unwritable cache only costs a retraining next time
