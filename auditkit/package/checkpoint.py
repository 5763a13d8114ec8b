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
(`_nonfinite_without_numpy`); numpy counts only a chunk they leave open.  Memory
is the header plus one chunk, whatever the file size.
"""

from __future__ import annotations

import json
import math
import mmap
import re
import struct
from collections import Counter
from dataclasses import dataclass, field

HEADER_CAP = 100_000_000          # the reference's MAX_HEADER_SIZE
MAX_JSON_DEPTH = 127              # serde_json refuses a 128th level of nesting
MAX_HEADER_TOKENS = 1_000_000     # commas, "{" and "[" in the header: about the number of JSON values
U64_MAX = 2 ** 64 - 1
I64_MIN = -(2 ** 63)


@dataclass(frozen=True)
class Dtype:
    """One safetensors dtype: its width and how a non-finite value is recognised.

    `view` is the little-endian numpy integer view of one value; a value is
    non-finite when ``value & mask == mask`` (`nan_only` False: an exponent of
    all ones, inf or nan) or ``value == mask`` (`nan_only` True: the one NaN
    pattern).  `view` None: the dtype has no inf or nan (integers, bool, F4, F6_*).
    `native` is numpy's own dtype where numpy has one (tested with isfinite first).
    """

    bits: int
    view: str | None = None
    mask: int = 0
    nan_only: bool = False
    native: str | None = None


# The reference's list (safetensors 0.8.0, `Dtype` in safetensors/src/tensor.rs).
DTYPES: dict[str, Dtype] = {
    "BOOL": Dtype(8),
    "F4": Dtype(4),                                    # E2M1 (OCP MX): no inf, no nan
    "F6_E2M3": Dtype(6), "F6_E3M2": Dtype(6),          # OCP MX: no inf, no nan
    "U8": Dtype(8), "I8": Dtype(8),
    "F8_E5M2": Dtype(8, "u1", 0x7C),                   # IEEE-like: exponent all ones is inf/nan
    "F8_E4M3": Dtype(8, "u1", 0x7F),                   # E4M3FN: no inf; nan is S.1111.111
    "F8_E8M0": Dtype(8, "u1", 0xFF, True),             # exponent only: 0xFF is nan
    "F8_E4M3FNUZ": Dtype(8, "u1", 0x80, True),         # no inf; nan is the negative-zero pattern
    "F8_E5M2FNUZ": Dtype(8, "u1", 0x80, True),
    "I16": Dtype(16), "U16": Dtype(16),
    "F16": Dtype(16, "<u2", 0x7C00, native="<f2"),
    "BF16": Dtype(16, "<u2", 0x7F80),
    "I32": Dtype(32), "U32": Dtype(32),
    "F32": Dtype(32, "<u4", 0x7F800000, native="<f4"),
    "C64": Dtype(64, "<u4", 0x7F800000, native="<c8"),  # two float32 parts
    "F64": Dtype(64, "<u8", 0x7FF0000000000000, native="<f8"),
    "I64": Dtype(64), "U64": Dtype(64),
}

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


def _suspects(d: Dtype) -> tuple[bytes, ...]:
    """The values of a value's most significant byte that inf or nan can have (all others are finite)."""
    width = int(d.view[-1])
    top = (d.mask >> (8 * (width - 1))) & 0xFF
    return tuple(bytes([b]) for b in range(256) if (b & top) == top)


_SUSPECTS_BY_MASK = {(d.view, d.mask): _suspects(d) for d in DTYPES.values() if d.view is not None and not d.nan_only}


def _nonfinite_without_numpy(d: Dtype, data, lo: int = 0, hi: int | None = None) -> int | None:
    """How many values of `data[lo:hi]` are inf or nan, answered from the values' most significant
    bytes alone where they settle it (in C: one strided slice and a memchr per suspect byte), so a
    reader of an all-finite checkpoint never imports numpy; None where numpy must count.

    `data` is bytes, a bytearray or an mmap (their extended slices are a plain C loop; a
    memoryview's are not, so one is copied first).  One-byte dtypes are settled exactly.  Wider
    ones: no suspect top byte means no inf or nan (the common case; the suspects are those where
    the exponent's upper bits are all ones, e.g. 0x7F or 0xFF for F32, BF16, F64, C64); any
    suspect (an inf, a nan, or a finite value of huge magnitude) leaves it to numpy."""
    if isinstance(data, memoryview):
        data, lo, hi = bytes(data[lo:hi]), 0, None
    hi = len(data) if hi is None else hi
    width = int(d.view[-1])
    if width == 1:                 # exact: F8_* (one exact NaN pattern, or suspects = the NaN/inf bytes)
        raw = bytes(data[lo:hi])
        if d.nan_only:
            return raw.count(bytes([d.mask]))
        return sum(raw.count(b) for b in _SUSPECTS_BY_MASK[(d.view, d.mask)])
    top = data[lo + width - 1:hi:width]
    return 0 if not any(b in top for b in _SUSPECTS_BY_MASK[(d.view, d.mask)]) else None


def _sliceable(chunk):
    """`chunk` as bytes, a bytearray or an mmap, whose extended slices are fast: the object behind a
    memoryview when the view is all of it (a full read buffer, a mapped window), else a copy."""
    if isinstance(chunk, memoryview):
        obj = chunk.obj
        if isinstance(obj, (bytes, bytearray, mmap.mmap)) and chunk.c_contiguous and chunk.nbytes == len(obj):
            return obj
        return chunk.tobytes()
    return chunk


class _Refused(ValueError):
    """The header is not JSON as the reference reads it; `found` says why."""


def _no_constant(name: str):
    raise _Refused(f"{name} (not JSON)")


def _float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise _Refused(f"number out of range: {_clip(text, 24)}")
    return x


def _int(text: str):
    """An integer as serde_json keeps it: u64 or i64 when it fits, otherwise (and `-0`) a float."""
    if text != "-0" and len(text) <= 20:
        v = int(text)
        if I64_MIN <= v <= U64_MAX:
            return v
    return _float(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


class _Pairs:
    """object_pairs_hook: a dict keeping the last value of a repeated key (as the reference), noting the repeat."""

    def __init__(self):
        self.repeated: list[str] = []

    def __call__(self, pairs):
        out = dict(pairs)
        if len(out) != len(pairs):
            seen = set()
            for k, _ in pairs:
                if k in seen:
                    self.repeated.append(k)
                seen.add(k)
        return out


class _TooComplex(ValueError):
    """More JSON values than auditkit parses (the reference would read them)."""


def _load_header(raw: bytes | bytearray) -> tuple[object, list[str]]:
    """The parsed header and the repeated keys; _Refused where the reference refuses the JSON.

    _TooComplex before parsing when the header holds more than MAX_HEADER_TOKENS commas and brackets
    (counted in C, strings included): Python objects for 100 MB of `{},` take minutes and gigabytes."""
    tokens = raw.count(b",") + raw.count(b"{") + raw.count(b"[")
    if tokens > MAX_HEADER_TOKENS:
        raise _TooComplex(f"{tokens} commas and brackets")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refused(f"not UTF-8 (byte {exc.start})") from None
    pairs = _Pairs()
    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constant, parse_float=_float,
                         parse_int=_int)
    except RecursionError:
        raise _Refused(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise _Refused(f"not JSON: {exc.msg} at byte {exc.pos}") from None
    # depth and lone surrogates: one walk, only when the text could hold either
    deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH
    surrogates = "\\u" in text and re.search(r"\\u[dD][89a-fA-F]", text) is not None
    if deep or surrogates:
        stack = [(doc, 1)]
        while stack:
            node, depth = stack.pop()
            if isinstance(node, dict):
                if depth > MAX_JSON_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_JSON_DEPTH} levels")
                for k, v in node.items():
                    if surrogates and _SURROGATE.search(k):
                        raise _Refused("a lone surrogate escape in a key")
                    stack.append((v, depth + 1))
            elif isinstance(node, list):
                if depth > MAX_JSON_DEPTH:
                    raise _Refused(f"nested deeper than {MAX_JSON_DEPTH} levels")
                stack.extend((v, depth + 1) for v in node)
            elif surrogates and isinstance(node, str) and _SURROGATE.search(node):
                raise _Refused("a lone surrogate escape in a string")
    return doc, pairs.repeated


def _clip(text: str, n: int = 120) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _show(value) -> str:
    """A header value as printable ASCII (a header is attacker-controlled text)."""
    try:
        return _clip(json.dumps(value, ensure_ascii=True))
    except (TypeError, ValueError):
        return _clip(ascii(value))


def _tensor(name: str) -> str:
    """The location of tensor `name`, quoted when the name is not plain printable text."""
    plain = name and name.isprintable() and name.strip() == name and not _SURROGATE.search(name)
    return f"tensor {name}" if plain else f"tensor {_show(name)}"


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
            header, repeated = _load_header(raw)
        except _TooComplex as exc:
            self.problem("checkpoint-header-too-complex", "header",
                         f"at most {MAX_HEADER_TOKENS} commas and brackets (auditkit's bound on the work of "
                         "parsing; a real checkpoint header holds about ten per tensor)", str(exc))
            self._dead = True
            return
        except _Refused as exc:
            self.problem("checkpoint-header-invalid", "header", "JSON as the safetensors reference reads it", str(exc))
            self._dead = True
            return
        if not isinstance(header, dict):
            self.problem("checkpoint-header-invalid", "header", "a JSON object", _show(header))
            self._dead = True
            return
        for key, n in sorted(Counter(repeated).items()):
            self.problem("checkpoint-duplicate-key", f"key {_show(key)}", "each key once in its object",
                         f"{n + 1} times (readers may keep different copies)")
        meta = header.pop("__metadata__", None)
        if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
            self.problem("checkpoint-header-invalid", "__metadata__", "null or an object of strings", _show(meta))
            meta = None
        self.scan.metadata = meta
        if not header:
            self.problem("checkpoint-empty", "header", "at least one tensor", "none")
        spans, coverage = [], []
        base = 8 + self._n
        for name, info in sorted(header.items()):
            where = _tensor(name)
            if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
                self.problem("checkpoint-header-invalid", where, "an object with dtype, shape, data_offsets",
                             _show(info))
                continue
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(_is_u64(s) for s in shape)
                    and isinstance(offsets, list) and len(offsets) == 2 and all(_is_u64(o) for o in offsets)):
                self.problem("checkpoint-header-invalid", where,
                             "shape: integers >= 0; data_offsets: two integers >= 0 (at most 2**64-1)",
                             f"shape {_show(shape)}, data_offsets {_show(offsets)}")
                continue
            b, e = offsets
            if not isinstance(dtype, str) or dtype not in DTYPES:
                self.problem("checkpoint-dtype", where, "a safetensors dtype", _show(dtype))
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
                self.problem("checkpoint-overlap", _tensor(name), f"data starting at or after byte {end}", f"byte {b}")
            elif b > end:
                self.problem("checkpoint-gap", _tensor(name), f"data starting at byte {end}", f"byte {b}")
            end = max(end, e)
        self._plan = spans
        self._data_end = end

    def _data(self, chunk) -> None:
        # values are checked in place: `buf[lo:hi]` of the bytes, bytearray or mmap behind the chunk
        buf = _sliceable(chunk)
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
        bad = _nonfinite_without_numpy(d, buf, lo, hi)
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
            self.problem("checkpoint-nonfinite", _tensor(name), "finite values", f"{n} inf/nan value(s)")
        return self.scan


def scan_bytes(data: bytes, header_cap: int = HEADER_CAP) -> CheckpointScan:
    s = CheckpointScanner(header_cap)
    for i in range(0, len(data), 1 << 20):
        s.feed(data[i:i + (1 << 20)])
    return s.finish()


def _model_config(scan: CheckpointScan):
    """The metadata's model_config as the runner reads it; ValueError (with why) when it names none.

    A config whose layer count implies far more tensors than the file holds is refused
    before the runner enumerates them (a hostile `n_layer` of 10**9 would take hours)."""
    try:
        cfg = json.loads((scan.metadata or {}).get("model_config", ""))
    except RecursionError:
        raise ValueError("model_config nested too deeply") from None
    n = cfg.get("n_layer") if isinstance(cfg, dict) else None
    if type(n) is int and n > max(64, len(scan.tensors)):
        raise ValueError(f"n_layer {n} implies at least {6 * n + 4} tensors; the file holds {len(scan.tensors)}")
    return cfg


def architecture_problems(scan: CheckpointScan) -> list[tuple[str, str, str, str]]:
    """Names and shapes against the architecture the metadata's model_config implies."""
    out = []
    try:
        cfg = _model_config(scan)
        from auditkit.runner.arch import expected_tensors

        want = expected_tensors(cfg)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [("checkpoint-model-config", "__metadata__.model_config", "a model_config the runner knows",
                 _clip(f"{type(exc).__name__}: {exc}"))]
    got = {k: shape for k, (_, shape) in scan.tensors.items()}
    for name in sorted(set(want) - set(got)):
        out.append(("checkpoint-tensor-missing", _tensor(name), f"shape {list(want[name])}", "absent"))
    for name in sorted(set(got) - set(want)):
        out.append(("checkpoint-tensor-unexpected", _tensor(name), "no such tensor in this architecture",
                    f"shape {list(got[name])}"))
    for name in sorted(set(got) & set(want)):
        if tuple(got[name]) != tuple(want[name]):
            out.append(("checkpoint-shape", _tensor(name), f"shape {list(want[name])}", f"shape {list(got[name])}"))
    return out


def expected_num_params(scan: CheckpointScan) -> int | None:
    """`num_params` of the architecture the metadata names, or None when it names none the runner knows."""
    try:
        cfg = _model_config(scan)
        from auditkit.runner.arch import num_params

        return int(num_params(cfg))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def param_count(scan: CheckpointScan) -> int:
    n = 0
    for _, shape in scan.tensors.values():
        k = 1
        for s in shape:
            k *= s
        n += k
    return n
