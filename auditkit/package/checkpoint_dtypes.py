"""The safetensors dtypes (the reference library's list) and how an inf or nan is recognised in one,
on the values' raw bits, without copying a chunk and, for nearly every chunk, without numpy.

Used by the streaming checkpoint reader (`package.checkpoint`).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass


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


def suspects(d: Dtype) -> tuple[bytes, ...]:
    """The values of a value's most significant byte that inf or nan can have (all others are finite)."""
    width = int(d.view[-1])
    top = (d.mask >> (8 * (width - 1))) & 0xFF
    return tuple(bytes([b]) for b in range(256) if (b & top) == top)


SUSPECTS_BY_MASK = {(d.view, d.mask): suspects(d) for d in DTYPES.values() if d.view is not None and not d.nan_only}


def nonfinite_without_numpy(d: Dtype, data, lo: int = 0, hi: int | None = None) -> int | None:
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
        return sum(raw.count(b) for b in SUSPECTS_BY_MASK[(d.view, d.mask)])
    top = data[lo + width - 1:hi:width]
    return 0 if not any(b in top for b in SUSPECTS_BY_MASK[(d.view, d.mask)]) else None


def sliceable(chunk):
    """`chunk` as bytes, a bytearray or an mmap, whose extended slices are fast: the object behind a
    memoryview when the view is all of it (a full read buffer, a mapped window), else a copy."""
    if isinstance(chunk, memoryview):
        obj = chunk.obj
        if isinstance(obj, (bytes, bytearray, mmap.mmap)) and chunk.c_contiguous and chunk.nbytes == len(obj):
            return obj
        return chunk.tobytes()
    return chunk
