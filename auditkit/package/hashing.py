"""Streaming sha256: 1 MiB reads, constant memory, GIL released by hashlib."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_fileobj(f: BinaryIO, chunk: int = CHUNK) -> tuple[str, int]:
    """Hex sha256 and byte count of everything left in `f`, read `chunk` bytes at a time."""
    h = hashlib.sha256()
    n = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    readinto = getattr(f, "readinto", None)
    while True:
        if readinto is not None:
            k = readinto(view)
            if not k:
                break
            h.update(view[:k])
        else:
            data = f.read(chunk)
            if not data:
                break
            k = len(data)
            h.update(data)
        n += k
    return h.hexdigest(), n


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    with open(path, "rb") as f:
        return sha256_fileobj(f, chunk)[0]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
