"""Safetensors checkpoints checked from a stream: constant memory, nothing unpickled.

`CheckpointScanner` is fed the file's bytes in order (the same chunks that are
hashed).  Its verdict on the *format* is the reference library's
(huggingface/safetensors, `SafeTensors::read_metadata`):

- 8-byte little-endian header length, at most `HEADER_CAP` (100,000,000) bytes;
- the header is UTF-8 JSON as serde_json reads it: no NaN/Infinity, no number
  out of the float range, no lone surrogate escape, nesting below serde_json's
  recursion limit; leading/trailing JSON whitespace allowed;
- an object whose `__metadata__` is null or a string -> string map and whose
  other entries are ``{"dtype", "shape", "data_offsets"}`` (more keys are
  ignored, as the reference does); integers in 0..2**64-1;
- a dtype of `DTYPES`; ``prod(shape) * bits`` computed without overflowing 64
  bits and a whole number of bytes (F4 and F6_* are 4 and 6 bits); the offsets
  span exactly that many bytes;
- the tensors, ordered by offsets, tile the data from byte 0 with no gap or
  overlap and end exactly at the end of the file.

Two deliberate differences: a key twice in one JSON object is a finding
(`checkpoint-duplicate-key`), where the reference keeps the last tensor or
metadata entry of that name — two readers of the same file could disagree on
what it holds; and a header of more than `MAX_HEADER_TOKENS` commas and
brackets is not parsed (`checkpoint-header-too-complex`): within the 100 MB
cap, Python objects for millions of values cost minutes and gigabytes, where
a real header holds about ten per tensor.

Beyond the format (`CheckpointScan.well_formed`), two content findings:
`checkpoint-empty` (no tensor: fail closed) and `checkpoint-nonfinite`.  Every
floating value is tested on its raw bit pattern, chunk by chunk, in place (the
chunk is not copied): IEEE-like dtypes by an all-ones exponent, the FN/FNUZ
float8s and F8_E8M0 by their one NaN pattern; F4 and F6_* have no inf or nan
encoding, and integer and bool tensors are not tested.  The values' most
significant bytes settle nearly every chunk without numpy
(`checkpoint_dtypes.nonfinite_without_numpy`); numpy counts only a chunk they leave open.  Memory
is the header plus one chunk, whatever the file size.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from auditkit.package.checkpoint_dtypes import DTYPES, Dtype, nonfinite_without_numpy, sliceable
from auditkit.package.checkpoint_header import (MAX_HEADER_TOKENS, U64_MAX, HeaderRefused, HeaderTooComplex,
                                                load_header, show, tensor_location)

HEADER_CAP = 100_000_000          # the reference's MAX_HEADER_SIZE

# A problem with one of these codes means the file is not a safetensors file the reference would load.
FORMAT_CODES = frozenset({
    "checkpoint-header-too-large", "checkpoint-header-too-complex", "checkpoint-header-invalid",
    "checkpoint-duplicate-key", "checkpoint-dtype",
    "checkpoint-tensor-size", "checkpoint-overlap", "checkpoint-gap", "checkpoint-truncated",
    "checkpoint-trailing-bytes",
})


@dataclass
class CheckpointScan:
    """What the scanner learnt; `problems` are (code, location, expected, found) tuples."""

    metadata: dict | None = None
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def well_formed(self) -> bool:
        """True when the reference library would load the file (content findings aside)."""
        return not any(code in FORMAT_CODES for code, *_ in self.problems)


def _is_u64(x) -> bool:
    return type(x) is int and 0 <= x <= U64_MAX


def _nbytes(shape: list[int], bits: int) -> tuple[int | None, str]:
    """The byte size of `shape` x `bits`, or (None, why) as the reference computes it (64-bit, checked)."""
    numel = 1
    for s in shape:
        numel *= s
        if numel > U64_MAX:
            return None, "element count overflows 64 bits"
    nbits = numel * bits
    if nbits > U64_MAX:
        return None, "bit size overflows 64 bits"
    if nbits % 8:
        return None, f"{numel} x {bits}-bit values = {nbits} bits, not a whole number of bytes"
    return nbits // 8, ""


class CheckpointScanner:
    def __init__(self, header_cap: int = HEADER_CAP):
        self.cap = header_cap
        self.scan = CheckpointScan()
        self._buf = bytearray()        # the 8-byte length and the header, until complete
        self._in_data = False
        self._n: int | None = None
        self._pos = 0                 # bytes consumed so far
        self._plan: list[tuple[int, int, str, str]] = []  # (begin, end, name, dtype) absolute offsets
        self._cur = 0
        self._rem = b""
        self._data_end = 0
        self._dead = False
        self._nonfinite: dict[str, int] = {}

    def problem(self, code, location, expected, found):
        self.scan.problems.append((code, location, expected, found))

    def feed(self, chunk) -> None:
        """The next bytes of the file, in order (any chunk size)."""
        if self._dead:
            return
        if not self._in_data:
            self._buf += chunk
            if self._n is None:
                if len(self._buf) < 8:
                    return
                (self._n,) = struct.unpack("<Q", bytes(self._buf[:8]))
                if self._n > self.cap:
                    self.problem("checkpoint-header-too-large", "header length", f"at most {self.cap} bytes",
                                 f"{self._n} bytes")
                    self._dead = True
                    self._buf = bytearray()
                    return
            if len(self._buf) < 8 + self._n:
                return
            self._in_data = True
            self._pos = 8 + self._n
            rest = bytes(self._buf[8 + self._n:])
            header = self._buf
            self._buf = bytearray()
            del header[8 + self._n:]
            del header[:8]                # in place: a 100 MB header is not copied again
            self._parse_header(header)
            del header
            if self._dead:
                return
            self._data(rest)
            return
        self._data(chunk)

    def _parse_header(self, raw: bytes | bytearray) -> None:
        try:
            header, repeated = load_header(raw)
        except HeaderTooComplex as exc:
            self.problem("checkpoint-header-too-complex", "header",
                         f"at most {MAX_HEADER_TOKENS} commas and brackets (auditkit's bound on the work of "
                         "parsing; a real checkpoint header holds about ten per tensor)", str(exc))
            self._dead = True
            return
        except HeaderRefused as exc:
            self.problem("checkpoint-header-invalid", "header", "JSON as the safetensors reference reads it", str(exc))
            self._dead = True
            return
        if not isinstance(header, dict):
            self.problem("checkpoint-header-invalid", "header", "a JSON object", show(header))
            self._dead = True
            return
        for key, n in sorted(Counter(repeated).items()):
            self.problem("checkpoint-duplicate-key", f"key {show(key)}", "each key once in its object",
                         f"{n + 1} times (readers may keep different copies)")
        meta = header.pop("__metadata__", None)
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            self.problem("checkpoint-header-invalid", "__metadata__", "null or an object of strings", show(meta))
            meta = None
        self.scan.metadata = meta
        if not header:
            self.problem("checkpoint-empty", "header", "at least one tensor", "none")
        spans, coverage = [], []
        base = 8 + self._n
        for name, info in sorted(header.items()):
            where = tensor_location(name)
            if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
                self.problem("checkpoint-header-invalid", where, "an object with dtype, shape, data_offsets",
                             show(info))
                continue
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(_is_u64(s) for s in shape)
                    and isinstance(offsets, list) and len(offsets) == 2 and all(_is_u64(o) for o in offsets)):
                self.problem("checkpoint-header-invalid", where,
                             "shape: integers >= 0; data_offsets: two integers >= 0 (at most 2**64-1)",
                             f"shape {show(shape)}, data_offsets {show(offsets)}")
                continue
            b, e = offsets
            if not isinstance(dtype, str) or dtype not in DTYPES:
                self.problem("checkpoint-dtype", where, "a safetensors dtype", show(dtype))
                coverage.append((base + b, base + e, name, None))
                continue
            size, why = _nbytes(shape, DTYPES[dtype].bits)
            if size is None or e < b or e - b != size:
                self.problem("checkpoint-tensor-size", where,
                             why or f"{size} bytes for {dtype}{shape}", f"offsets [{b}, {e}]")
                coverage.append((base + b, base + e, name, None))  # counts for overlap/gap, values unread
                continue
            self.scan.tensors[name] = (dtype, tuple(shape))
            spans.append((base + b, base + e, name, dtype))
        spans.sort()
        end = base
        for b, e, name, _ in sorted(spans + coverage):
            if b < end:
                self.problem("checkpoint-overlap", tensor_location(name), f"data starting at or after byte {end}", f"byte {b}")
            elif b > end:
                self.problem("checkpoint-gap", tensor_location(name), f"data starting at byte {end}", f"byte {b}")
            end = max(end, e)
        self._plan = spans
        self._data_end = end

    def _data(self, chunk) -> None:
        # values are checked in place: `buf[lo:hi]` of the bytes, bytearray or mmap behind the chunk
        buf = sliceable(chunk)
        start = self._pos
        self._pos += len(buf)
        while self._cur < len(self._plan) and len(buf):
            b, e, name, dtype = self._plan[self._cur]
            lo, hi = max(b, start), min(e, self._pos)
            if hi <= lo:
                if self._pos >= e:
                    self._cur += 1
                    continue
                break
            self._check_values(name, dtype, buf, lo - start, hi - start)
            if hi == e:
                self._rem = b""
                self._cur += 1
            else:
                break

    def _check_values(self, name: str, dtype: str, buf, lo: int, hi: int) -> None:
        d = DTYPES[dtype]
        if d.view is None:
            return
        size = d.bits // 8
        if self._rem:                 # a value split across two chunks
            need = size - len(self._rem)
            head = self._rem + bytes(buf[lo:min(hi, lo + need)])
            lo = min(hi, lo + need)
            if len(head) < size:
                self._rem = head
                return
            self._rem = b""
            self._count(name, d, head, 0, size)
        cut = hi - (hi - lo) % size
        if cut > lo:
            self._count(name, d, buf, lo, cut)
        self._rem = bytes(buf[cut:hi])

    def _count(self, name: str, d: Dtype, buf, lo: int, hi: int) -> None:
        bad = nonfinite_without_numpy(d, buf, lo, hi)
        if bad is None:               # a byte pattern that may be inf/nan: count exactly
            import numpy as np

            if d.native is not None:
                values = np.frombuffer(buf, dtype=d.native, count=(hi - lo) // np.dtype(d.native).itemsize,
                                       offset=lo)
                if np.isfinite(values).all():
                    return            # the common case, in one pass (a third of the masked count's time)
                bad = int(np.count_nonzero(~np.isfinite(values)))
            else:
                arr = np.frombuffer(buf, dtype=d.view, count=(hi - lo) // np.dtype(d.view).itemsize, offset=lo)
                m = arr.dtype.type(d.mask)
                bad = int(np.count_nonzero(arr == m if d.nan_only else (arr & m) == m))
        if bad:
            self._nonfinite[name] = self._nonfinite.get(name, 0) + bad

    def finish(self) -> CheckpointScan:
        if not self._dead:
            if self._n is None:
                self.problem("checkpoint-truncated", "header length", "8 bytes", f"{len(self._buf)} bytes")
            elif not self._in_data:
                self.problem("checkpoint-truncated", "header", f"{self._n} header bytes",
                             f"{max(0, len(self._buf) - 8)} bytes")
            else:
                end = self._data_end
                if self._pos < end:
                    self.problem("checkpoint-truncated", "data", f"{end} bytes", f"{self._pos} bytes")
                elif self._pos > end:
                    self.problem("checkpoint-trailing-bytes", "data", f"{end} bytes", f"{self._pos} bytes")
        for name, n in sorted(self._nonfinite.items()):
            self.problem("checkpoint-nonfinite", tensor_location(name), "finite values", f"{n} inf/nan value(s)")
        return self.scan


def scan_bytes(data: bytes, header_cap: int = HEADER_CAP) -> CheckpointScan:
    s = CheckpointScanner(header_cap)
    for i in range(0, len(data), 1 << 20):
        s.feed(data[i:i + (1 << 20)])
    return s.finish()
