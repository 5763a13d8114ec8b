"""Safetensors checkpoints checked from a stream: constant memory, nothing unpickled.

`CheckpointScanner` is fed the file's bytes in order (the same chunks that are
hashed) and checks: the 8-byte header length against a cap, the JSON header,
each tensor's dtype, shape and byte size, offsets in bounds, not overlapping
and covering the data exactly, and every floating value finite (tested on the
raw bit patterns with numpy, chunk by chunk: an all-ones exponent is inf or
nan; integer and bool tensors are not tested).  Memory is the header plus one
chunk, whatever the file size.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

HEADER_CAP = 100 * 1024 * 1024

# dtype -> (item size, little-endian integer view for the finiteness test, exponent mask); mask None = not
# a float.  numpy is imported on the first float chunk, so `verify` starts without it.
DTYPES = {
    "F64": (8, "<u8", 0x7FF0000000000000), "F32": (4, "<u4", 0x7F800000),
    "F16": (2, "<u2", 0x7C00), "BF16": (2, "<u2", 0x7F80),
    "I64": (8, None, None), "I32": (4, None, None), "I16": (2, None, None), "I8": (1, None, None),
    "U64": (8, None, None), "U32": (4, None, None), "U16": (2, None, None), "U8": (1, None, None),
    "BOOL": (1, None, None),
    # float8: E5M2 has inf/nan like f16 (exponent all ones); E4M3 has no inf, nan is S.1111.111
    "F8_E5M2": (1, "u1", 0x7C), "F8_E4M3": (1, "u1", 0x7F),
}

# dtypes numpy has natively: all-finite is checked with np.isfinite first
_NATIVE_FLOAT = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


@dataclass
class CheckpointScan:
    """What the scanner learnt; `problems` are (code, location, expected, found) tuples."""

    metadata: dict | None = None
    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    problems: list[tuple[str, str, str, str]] = field(default_factory=list)


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
            self._parse_header(bytes(self._buf[8:8 + self._n]))
            rest = bytes(self._buf[8 + self._n:])
            self._buf = bytearray()
            if self._dead:
                return
            self._data(rest)
            return
        self._data(chunk)

    def _parse_header(self, raw: bytes) -> None:
        try:
            header = json.loads(raw)
            if not isinstance(header, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            self.problem("checkpoint-header-invalid", "header", "a JSON object", str(exc)[:120])
            self._dead = True
            return
        meta = header.pop("__metadata__", None)
        self.scan.metadata = meta if isinstance(meta, dict) else None
        if not header:
            self.problem("checkpoint-empty", "header", "at least one tensor", "none")
        spans, coverage = [], []
        base = 8 + self._n
        for name, info in sorted(header.items()):
            try:
                dtype, shape, (b, e) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
                if not all(_is_int(x) for x in (*shape, b, e)):
                    raise TypeError("shape and data_offsets must be integers")
            except (KeyError, TypeError, ValueError):
                self.problem("checkpoint-header-invalid", f"tensor {name}", "dtype, shape, data_offsets", str(info)[:120])
                continue
            if not isinstance(dtype, str) or dtype not in DTYPES:
                self.problem("checkpoint-dtype", f"tensor {name}", "a safetensors dtype", str(dtype))
                continue
            numel = 1
            for s in shape:
                numel *= s
            if min(shape, default=0) < 0 or b < 0 or e < b or e - b != numel * DTYPES[dtype][0]:
                self.problem("checkpoint-tensor-size", f"tensor {name}",
                             f"{numel * DTYPES[dtype][0]} bytes for {dtype}{list(shape)}", f"offsets [{b}, {e}]")
                if 0 <= b <= e:
                    coverage.append((base + b, base + e, name, None))  # counts for overlap/gap, values unread
                continue
            self.scan.tensors[name] = (dtype, shape)
            spans.append((base + b, base + e, name, dtype))
        spans.sort()
        end = base
        for b, e, name, _ in sorted(spans + coverage):
            if b < end:
                self.problem("checkpoint-overlap", f"tensor {name}", f"data starting at or after byte {end}", f"byte {b}")
            elif b > end:
                self.problem("checkpoint-gap", f"tensor {name}", f"data starting at byte {end}", f"byte {b}")
            end = max(end, e)
        self._plan = spans
        self._data_end = end

    def _data(self, chunk: bytes) -> None:
        start = self._pos
        self._pos += len(chunk)
        while self._cur < len(self._plan) and chunk:
            b, e, name, dtype = self._plan[self._cur]
            lo, hi = max(b, start), min(e, self._pos)
            if hi <= lo:
                if self._pos >= e:
                    self._cur += 1
                    continue
                break
            self._check_values(name, dtype, chunk[lo - start:hi - start])
            if hi == e:
                self._rem = b""
                self._cur += 1
            else:
                break

    def _check_values(self, name: str, dtype: str, data) -> None:
        size, _, mask = DTYPES[dtype]
        if mask is None:
            return
        if self._rem:                 # a value split across two chunks
            need = size - len(self._rem)
            head = self._rem + bytes(data[:need])
            data = data[need:]
            if len(head) < size:
                self._rem = head
                return
            self._rem = b""
            self._count(name, dtype, head)
        cut = len(data) - len(data) % size
        if cut:
            self._count(name, dtype, data[:cut])
        self._rem = bytes(data[cut:])

    def _count(self, name: str, dtype: str, data) -> None:
        import numpy as np

        _, view, mask = DTYPES[dtype]
        native = _NATIVE_FLOAT.get(dtype)
        if native is not None and np.isfinite(np.frombuffer(data, dtype=native)).all():
            return                    # the common case, in one pass (a third of the masked count's time)
        arr = np.frombuffer(data, dtype=view)
        m = arr.dtype.type(mask)
        bad = int(np.count_nonzero((arr & m) == m))
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
            self.problem("checkpoint-nonfinite", f"tensor {name}", "finite values", f"{n} inf/nan value(s)")
        return self.scan


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def scan_bytes(data: bytes, header_cap: int = HEADER_CAP) -> CheckpointScan:
    s = CheckpointScanner(header_cap)
    for i in range(0, len(data), 1 << 20):
        s.feed(data[i:i + (1 << 20)])
    return s.finish()


def architecture_problems(scan: CheckpointScan) -> list[tuple[str, str, str, str]]:
    """Names and shapes against the architecture the metadata's model_config implies."""
    out = []
    meta = scan.metadata or {}
    try:
        cfg = json.loads(meta.get("model_config", ""))
        from auditkit.runner.arch import expected_tensors

        want = expected_tensors(cfg)
    except (ValueError, KeyError, TypeError) as exc:
        return [("checkpoint-model-config", "__metadata__.model_config", "a model_config the runner knows",
                 f"{type(exc).__name__}: {exc}")]
    got = {k: shape for k, (_, shape) in scan.tensors.items()}
    for name in sorted(set(want) - set(got)):
        out.append(("checkpoint-tensor-missing", f"tensor {name}", f"shape {list(want[name])}", "absent"))
    for name in sorted(set(got) - set(want)):
        out.append(("checkpoint-tensor-unexpected", f"tensor {name}", "no such tensor in this architecture",
                    f"shape {list(got[name])}"))
    for name in sorted(set(got) & set(want)):
        if tuple(got[name]) != tuple(want[name]):
            out.append(("checkpoint-shape", f"tensor {name}", f"shape {list(want[name])}", f"shape {list(got[name])}"))
    return out


def expected_num_params(scan: CheckpointScan) -> int | None:
    """`num_params` of the architecture the metadata names, or None when it names none the runner knows."""
    try:
        cfg = json.loads((scan.metadata or {}).get("model_config", ""))
        from auditkit.runner.arch import num_params

        return int(num_params(cfg))
    except (ValueError, KeyError, TypeError):
        return None


def param_count(scan: CheckpointScan) -> int:
    n = 0
    for _, shape in scan.tensors.values():
        k = 1
        for s in shape:
            k *= s
        n += k
    return n
