"""The streaming safetensors checker: header, offsets, sizes, finiteness, any chunk size, no pickle."""

from __future__ import annotations

import json
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditkit.package.checkpoint import DTYPES
from safetensors.numpy import save

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
from auditkit.package.checkpoint import CheckpointScanner, scan_bytes  # noqa: E402
from auditkit.package.checkpoint_arch import architecture_problems, expected_num_params  # noqa: E402


def codes(scan) -> list[str]:
    return [p[0] for p in scan.problems]


def feed_in(data: bytes, size: int):
    s = CheckpointScanner()
    for i in range(0, len(data), size):
        s.feed(memoryview(data)[i:i + size])
    return s.finish()


def bf16(values) -> bytes:
    """bfloat16 bytes: the top half of float32."""
    return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()


def raw(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict | None = None) -> bytes:
    header, data, off = {}, b"", 0
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(blob)]}
        data += blob
        off += len(blob)
    if metadata is not None:
        header["__metadata__"] = metadata
    return pkgbuild.raw_safetensors(header, data)


def test_a_valid_checkpoint_is_clean_and_read_like_safetensors():
    data = pkgbuild.checkpoint_bytes("r", "a")
    scan = scan_bytes(data)
    assert scan.problems == []
    assert scan.metadata["run_id"] == "r" and json.loads(scan.metadata["model_config"]) == pkgbuild.MODEL_CONFIG
    assert architecture_problems(scan) == []
    from auditkit.runner.arch import num_params

    assert expected_num_params(scan) == num_params(pkgbuild.MODEL_CONFIG)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_in_every_float_dtype(dtype, bad):
    a = np.ones(1000, dtype=dtype)
    a[[3, 999]] = bad
    scan = scan_bytes(save({"x": a, "ok": np.ones(3, dtype=dtype)}))
    assert scan.problems == [("checkpoint-nonfinite", "tensor x", "finite values", "2 inf/nan value(s)")]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_bf16(bad):
    good = raw({"w": ("BF16", [4], bf16([1.0, -2.0, 3.5, 1e30]))})
    assert scan_bytes(good).problems == []
    scan = scan_bytes(raw({"w": ("BF16", [4], bf16([1.0, bad, 3.5, 0.0]))}))
    assert codes(scan) == ["checkpoint-nonfinite"]


def test_integer_tensors_are_not_tested_for_finiteness():
    ints = np.full(16, -1, dtype=np.int32)  # all bits set: a nan pattern if it were a float
    assert scan_bytes(save({"i": ints, "u": np.full(8, 255, dtype=np.uint8)})).problems == []


def test_float8_nan():
    assert codes(scan_bytes(raw({"f": ("F8_E4M3", [2], bytes([0x38, 0x7F]))}))) == ["checkpoint-nonfinite"]
    assert codes(scan_bytes(raw({"f": ("F8_E5M2", [2], bytes([0x3C, 0x7C]))}))) == ["checkpoint-nonfinite"]
    assert scan_bytes(raw({"f": ("F8_E4M3", [2], bytes([0x38, 0x7E]))})).problems == []


@settings(max_examples=40, deadline=None)
@given(size=st.integers(min_value=1, max_value=5000), pos=st.integers(min_value=0, max_value=599))
def test_any_chunk_size_gives_the_same_answer(size, pos):
    a = np.arange(600, dtype=np.float32)
    b = np.arange(300, dtype=np.float64)
    a[pos] = np.nan
    data = save({"a": a, "b": b}, metadata={"k": "v"})
    whole = scan_bytes(data)
    assert codes(whole) == ["checkpoint-nonfinite"]
    chunked = feed_in(data, size)
    assert chunked.problems == whole.problems and chunked.tensors == whole.tensors
    assert chunked.metadata == whole.metadata


def test_header_length_2_60_is_a_finding_not_an_allocation():
    tracemalloc.start()
    scan = scan_bytes(struct.pack("<Q", 2 ** 60) + b"{}" * 100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert codes(scan) == ["checkpoint-header-too-large"] and str(2 ** 60) in scan.problems[0][3]
    assert peak < 10 * 1024 * 1024


@pytest.mark.parametrize("cut", [0, 3, 8, 20, -1, -5])
def test_truncated_anywhere(cut):
    data = save({"a": np.ones(64, dtype=np.float32)})
    n = struct.unpack("<Q", data[:8])[0]
    end = {0: 0, 3: 3, 8: 8, 20: 20}.get(cut, len(data) + cut)
    scan = scan_bytes(data[:end])
    assert codes(scan) == ["checkpoint-truncated"]
    assert scan.problems[0][1] == ("header length" if end < 8 else "header" if end < 8 + n else "data")


def test_trailing_bytes():
    assert codes(scan_bytes(save({"a": np.ones(4, dtype=np.float32)}) + b"xx")) == ["checkpoint-trailing-bytes"]


def test_offsets_overlap_gap_and_size():
    blob = np.ones(4, dtype=np.float32).tobytes()
    overlap = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
               "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    assert "checkpoint-overlap" in codes(scan_bytes(pkgbuild.raw_safetensors(overlap, blob + blob[:8])))
    gap = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}
    assert "checkpoint-gap" in codes(scan_bytes(pkgbuild.raw_safetensors(gap, b"\0" * 8 + blob)))
    size = {"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}
    assert codes(scan_bytes(pkgbuild.raw_safetensors(size, blob))) == ["checkpoint-tensor-size"]
    beyond = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    assert codes(scan_bytes(pkgbuild.raw_safetensors(beyond, blob[:8]))) == ["checkpoint-truncated"]


@pytest.mark.parametrize("header", [
    b"not json", b"[1, 2]", b'{"a": 5}', b'{"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}',
    b'{"a": {"dtype": ["F32"], "shape": [2], "data_offsets": [0, 8]}}',
    b'{"a": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}', b"\xff\xfe{}",
])
def test_bad_headers(header):
    scan = scan_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    assert scan.problems and scan.problems[0][0] in {"checkpoint-header-invalid", "checkpoint-dtype"}


def test_a_pickle_is_never_unpickled(tmp_path):
    import pickle

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    data = pickle.dumps(Boom())
    scan = scan_bytes(data)  # a .safetensors name on pickle bytes: a header problem, nothing executed
    assert scan.problems


def test_architecture_mismatches():
    cfg = dict(pkgbuild.MODEL_CONFIG, n_layer=2)
    scan = scan_bytes(pkgbuild.checkpoint_bytes("r", "a"))
    scan.metadata["model_config"] = json.dumps(cfg)
    got = {p[0] for p in architecture_problems(scan)}
    assert got == {"checkpoint-tensor-missing", "checkpoint-tensor-unexpected", "checkpoint-shape"}
    scan.metadata["model_config"] = "{not json"
    assert [p[0] for p in architecture_problems(scan)] == ["checkpoint-model-config"]
    assert expected_num_params(scan) is None


def test_architecture_uses_the_runner_interface(monkeypatch):
    import auditkit.runner.arch as arch

    monkeypatch.setattr(arch, "expected_tensors", lambda cfg: {"only": (1,)})
    scan = scan_bytes(save({"only": np.ones(2, dtype=np.float32)}, metadata={"model_config": "{}"}))
    assert [p[0] for p in architecture_problems(scan)] == ["checkpoint-shape"]


def test_constant_memory_on_a_large_checkpoint():
    """64 MiB of tensor data fed in 1 MiB chunks: the scanner holds about one chunk."""
    n = 16 * 1024 * 1024
    header = {"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}
    text = json.dumps(header).encode()
    chunk = np.ones(256 * 1024, dtype=np.float32).tobytes()
    s = CheckpointScanner()
    tracemalloc.start()
    s.feed(struct.pack("<Q", len(text)) + text)
    for _ in range(64):
        s.feed(memoryview(chunk))
    scan = s.finish()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert scan.problems == [] and peak < 8 * 1024 * 1024


@pytest.mark.parametrize("dtype", sorted(n for n, d in DTYPES.items() if d.view is not None))
def test_the_byte_prefilter_agrees_with_numpys_exact_count(dtype):
    """Where the numpy-free check answers, it is numpy's count exactly (random bytes, so every
    exponent pattern turns up), and it answers for every all-finite chunk of ordinary values."""
    import numpy as np

    from auditkit.package.checkpoint_dtypes import nonfinite_without_numpy as _nonfinite_without_numpy

    d = DTYPES[dtype]
    rng = np.random.default_rng(sum(map(ord, dtype)))

    def exact(raw: bytes) -> int:
        arr = np.frombuffer(raw, dtype=d.view)
        m = arr.dtype.type(d.mask)
        return int(np.count_nonzero(arr == m if d.nan_only else (arr & m) == m))

    width = int(d.view[-1])
    for n in (1, 7, 64, 4096):
        raw = rng.integers(0, 256, n * width, dtype=np.uint8).tobytes()
        got = _nonfinite_without_numpy(d, memoryview(raw))
        assert got is None or got == exact(raw)
        if width == 1:
            assert got is not None
    ordinary = {"F16": np.float16, "F32": np.float32, "C64": np.complex64, "F64": np.float64}.get(dtype)
    if ordinary is not None:
        raw = rng.standard_normal(1000).astype(ordinary).tobytes()
        assert _nonfinite_without_numpy(d, memoryview(raw)) == 0


@pytest.mark.parametrize("size", [1, 3, 7, 4096, 1 << 20])
def test_values_checked_in_place_count_the_same_as_a_copy(size):
    """The scanner checks values inside the caller's buffer (a read buffer is a bytearray, a mapped
    file an mmap) without copying it: fed either way, in chunks that split values, it counts
    exactly the inf/nan a copy shows."""
    import mmap

    values = np.ones(50_000, dtype=np.float32)
    values[[0, 17, 4099, 49_999]] = [np.inf, np.nan, -np.inf, np.nan]
    halves = np.ones(777, dtype=np.float16)
    halves[[5, 776]] = [np.inf, np.nan]
    data = raw({"w": ("F32", [50_000], values.tobytes()), "h": ("F16", [777], halves.tobytes())},
               metadata={"note": "x" * 5})           # a header whose length puts values across chunk edges
    expected = scan_bytes(data).problems
    assert [p[3] for p in expected] == ["2 inf/nan value(s)", "4 inf/nan value(s)"]

    s = CheckpointScanner()
    for i in range(0, len(data), size):
        s.feed(bytearray(data[i:i + size]))
    assert s.finish().problems == expected

    n = 8 + int.from_bytes(data[:8], "little")
    with mmap.mmap(-1, len(data) - n) as mapped:        # the values in a mapping of their own
        mapped.write(data[n:])
        s = CheckpointScanner()
        s.feed(data[:n])
        view = memoryview(mapped)
        s.feed(view)                                  # all of a mapping: its values checked in place
        view.release()
        assert s.finish().problems == expected
