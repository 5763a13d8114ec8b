"""Hostile checkpoints: auditkit's verdict on a safetensors file is the reference library's.

Each case is a file's bytes, the verdict of `safetensors.safe_open` on them
(written down here and checked against the installed library on every run, so
a change upstream shows), and the findings auditkit must report.  The cases
reproduce the malformed and edge-case files of huggingface/safetensors' own
tests (`safetensors/src/tensor.rs` tests: `rs.*`; `bindings/python/tests`:
`py.*`) and the places where Python's JSON reader and serde_json part ways
(`json.*`: NaN, numbers out of range, `-0`, lone surrogates, nesting depth).
Written against safetensors 0.8.0.

Two deliberate differences, asserted as such: a key twice in one JSON object
(the reference keeps the last tensor or metadata entry of that name; auditkit
reports `checkpoint-duplicate-key`: two readers could load different tensors),
and a header of more than a million JSON values (`checkpoint-header-too-complex`:
parsing 100 MB of tiny values in Python would take minutes and gigabytes).

Every case also goes through `auditkit verify` on a package holding it: exit 1,
the checkpoint named with the expected code, no traceback, under 10 s, and not
one byte of the package or the working directory changed.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import safetensors
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixtures import pkgbuild  # noqa: E402
from fixtures.cli_untouched import run_untouched  # noqa: E402
from auditkit.package.checkpoint import (DTYPES, HEADER_CAP, MAX_HEADER_TOKENS, CheckpointScanner,  # noqa: E402
                                         scan_bytes)
from auditkit.package.manifest import build_manifest  # noqa: E402

CKPT = "checkpoints/linux-s1-a-s1.safetensors"
U64 = 2 ** 64 - 1


def reference_accepts(data: bytes, path: Path) -> bool:
    """The reference's verdict: does `safe_open` open these bytes (it validates the whole header and size)?"""
    path.write_bytes(data)
    try:
        with safe_open(str(path), framework="numpy") as f:
            f.keys()
        return True
    except safetensors.SafetensorError:
        return False


def reference_accepts_bytes(data: bytes) -> bool:
    """The same verdict from the in-memory entry point (the same `read_metadata`; no file, so bulk checks are fast)."""
    try:
        safetensors.deserialize(data)
        return True
    except safetensors.SafetensorError:
        return False


def codes(scan) -> set[str]:
    return {p[0] for p in scan.problems}


def sf(header, data: bytes = b"", *, n: int | None = None) -> bytes:
    """A safetensors file: length, header (bytes as given, anything else as compact JSON), data."""
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text) if n is None else n) + text + data


def t(dtype="I32", shape=(2, 2), offsets=(0, 16), **extra) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets), **extra}


I32 = b'{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]%s}}'  # %s: more fields of the tensor
Z = b"\0"


def nest(k: int) -> bytes:
    return b"[" * k + b"]" * k


@dataclass(frozen=True)
class Case:
    id: str
    data: bytes
    ref: bool                          # the reference opens it
    codes: frozenset = frozenset()     # auditkit reports at least these
    deliberate: bool = False           # the reference opens it, auditkit refuses it on purpose
    cli: bool = True


def C(id, data, ref, codes=(), **kw) -> Case:
    return Case(id, data, ref, frozenset([codes] if isinstance(codes, str) else codes), **kw)


CASES = [
    # -- safetensors/src/tensor.rs tests -------------------------------------------------------
    C("rs.deserialization", sf(I32 % b"", Z * 16), True),
    C("rs.empty", sf(b"{}      "), True, "checkpoint-empty"),
    C("rs.empty-with-metadata", sf({"__metadata__": {"framework": "pt"}}), True, "checkpoint-empty"),
    C("rs.fp4", sf({"attn.0": t("F4", (1, 2), (0, 1))}, Z), True),
    C("rs.fp4-misaligned", sf({"attn.0": t("F4", (1, 3), (0, 2))}, Z * 2), False, "checkpoint-tensor-size"),
    C("rs.fp4-invalid-size", sf({"attn.0": t("F4", (1, 2), (0, 2))}, Z * 2), False, "checkpoint-tensor-size"),
    C("rs.empty-shape-is-a-scalar", sf({"test": t("I32", (), (0, 4))}, Z * 4), True),
    C("rs.zero-sized-tensor", sf({"test": t("I32", (2, 0), (0, 0))}), True),
    C("rs.json-attack-same-offsets", sf({f"weight_{i}": t("F32") for i in range(10)}, Z * 16), False,
      "checkpoint-overlap"),
    C("rs.incomplete-buffer-extra-data", sf(I32 % b"", Z * 16 + b"extra_bogus_data_for_polyglot_file"), False,
      "checkpoint-trailing-bytes"),
    C("rs.incomplete-buffer-missing-data", sf(I32 % b"", Z * 14), False, "checkpoint-truncated"),
    C("rs.header-too-large", sf(I32 % b"", Z * 16, n=0xFFFFFF000000003C), False, "checkpoint-header-too-large"),
    C("rs.header-too-small", b"", False, "checkpoint-truncated"),
    C("rs.invalid-header-length", sf(b"", n=60), False, "checkpoint-truncated"),
    C("rs.header-not-utf8", sf(b"\xff"), False, "checkpoint-header-invalid"),
    C("rs.header-not-json", sf(b"{"), False, "checkpoint-header-invalid"),
    C("rs.header-trailing-whitespace", sf(b"{}\r \t\n"), True, "checkpoint-empty"),
    C("rs.header-leading-whitespace", sf(b"\t\n{}\r "), True, "checkpoint-empty"),
    C("rs.invalid-info", sf({"test": t("I32", (2, 2), (0, 4))}), False, "checkpoint-tensor-size"),
    C("rs.overflow-element-count", sf({"test": t("I32", (2, U64 - 1))}, Z * 16), False, "checkpoint-tensor-size"),
    C("rs.overflow-bit-size", sf({"test": t("I32", (2, 2 ** 63 - 1))}, Z * 16), False, "checkpoint-tensor-size"),
    # -- the header cap: the reference's 100,000,000 bytes --------------------------------------
    C("cap.at-the-limit", sf(b"{}" + b" " * (HEADER_CAP - 2)), True, "checkpoint-empty", cli=False),
    C("cap.one-over", sf(b"{}", n=HEADER_CAP + 1), False, "checkpoint-header-too-large"),
    C("cap.2**64-1", sf(b"{}", n=U64), False, "checkpoint-header-too-large"),
    # -- bindings/python/tests -------------------------------------------------------------------
    C("py.deserialization-metadata", sf(b'{"__metadata__":{"framework":"pt"},"test1":{"dtype":"I32","shape":[2,2],'
                                        b'"data_offsets":[0,16]}}       ', Z * 16), True),
    C("py.odd-dtypes", sf({"a": t("BF16", (2, 2), (0, 8)), "b": t("F16", (2, 2), (8, 16)),
                           "c": t("BOOL", (2, 2), (16, 20)), "d": t("C64", (2, 2), (20, 52))}, Z * 52), True),
    C("py.fp8-and-fp4", sf({"a": t("F8_E4M3", (1,), (0, 1)), "b": t("F8_E5M2", (1,), (1, 2)),
                            "c": t("F8_E8M0", (1,), (2, 3)), "d": t("F8_E4M3FNUZ", (1,), (3, 4)),
                            "e": t("F8_E5M2FNUZ", (1,), (4, 5)), "f": t("F4", (2, 2), (5, 7))}, Z * 7), True),
    C("py.multiple-zero-sized", sf({"test": t("F32", (2, 0), (0, 0)), "test2": t("F32", (2, 0), (0, 0))}), True),
    C("py.unknown-dtype", sf({"test": t("nonsense", (1,), (0, 4))}, Z * 4), False, "checkpoint-dtype"),
    # -- JSON as serde_json reads it ---------------------------------------------------------------
    C("json.nan-in-an-ignored-field", sf(I32 % b',"x":NaN', Z * 16), False, "checkpoint-header-invalid"),
    C("json.infinity-in-an-ignored-field", sf(I32 % b',"x":-Infinity', Z * 16), False, "checkpoint-header-invalid"),
    C("json.1e400", sf(I32 % b',"x":1e400', Z * 16), False, "checkpoint-header-invalid"),
    C("json.400-digit-integer", sf(I32 % (b',"x":1' + b"0" * 400), Z * 16), False, "checkpoint-header-invalid"),
    C("json.5000-digit-integer", sf(I32 % (b',"x":1' + b"0" * 5000), Z * 16), False, "checkpoint-header-invalid"),
    C("json.300-digit-integer-ignored", sf(I32 % (b',"x":1' + b"0" * 300), Z * 16), True),
    C("json.1e-400-ignored", sf(I32 % b',"x":1e-400', Z * 16), True),
    C("json.minus-zero-in-shape", sf(b'{"a":{"dtype":"I32","shape":[-0],"data_offsets":[0,0]}}'), False,
      "checkpoint-header-invalid"),
    C("json.minus-zero-ignored", sf(I32 % b',"x":-0', Z * 16), True),
    C("json.float-in-shape", sf(b'{"a":{"dtype":"I32","shape":[4.0],"data_offsets":[0,16]}}', Z * 16), False,
      "checkpoint-header-invalid"),
    C("json.exponent-in-shape", sf(b'{"a":{"dtype":"I32","shape":[4e0],"data_offsets":[0,16]}}', Z * 16), False,
      "checkpoint-header-invalid"),
    C("json.bool-in-shape", sf({"a": t("I32", (True,), (0, 4))}, Z * 4), False, "checkpoint-header-invalid"),
    C("json.negative-in-shape", sf({"a": t("I32", (-4,))}, Z * 16), False, "checkpoint-header-invalid"),
    C("json.2**64-in-shape", sf({"a": t("I32", (2, 2 ** 64))}, Z * 16), False, "checkpoint-header-invalid"),
    C("json.2**64-offset", sf({"a": t("I32", (4,), (0, 2 ** 64))}, Z * 16), False, "checkpoint-header-invalid"),
    C("json.negative-offset", sf({"a": t("I32", (0,), (-1, 0))}), False, "checkpoint-header-invalid"),
    C("json.u64-max-times-zero", sf({"a": t("U8", (0, U64, 2), (0, 0))}), True),
    C("json.u64-max-overflows-before-zero", sf({"a": t("U8", (U64, 2, 0), (0, 0))}), False, "checkpoint-tensor-size"),
    C("json.lone-surrogate-in-a-name", sf(b'{"\\ud800":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}', Z * 16),
      False, "checkpoint-header-invalid"),
    C("json.lone-trailing-surrogate-in-metadata", sf(b'{"__metadata__":{"a":"\\udc00x"}}'), False,
      "checkpoint-header-invalid"),
    C("json.lone-surrogate-ignored", sf(I32 % b',"x":"\\ud83d"', Z * 16), False, "checkpoint-header-invalid"),
    C("json.surrogate-pair", sf(b'{"__metadata__":{"a":"\\ud83d\\ude00"},"t":{"dtype":"U8","shape":[1],'
                                b'"data_offsets":[0,1]}}', Z), True),
    C("json.control-character-in-a-string", sf(b'{"__metadata__":{"a":"x\x01y"}}'), False,
      "checkpoint-header-invalid"),
    C("json.invalid-escape", sf(b'{"__metadata__":{"a":"\\q"}}'), False, "checkpoint-header-invalid"),
    C("json.byte-order-mark", sf(b"\xef\xbb\xbf{}"), False, "checkpoint-header-invalid"),
    C("json.nul-padding", sf(b"{}\0\0\0\0\0\0"), False, "checkpoint-header-invalid"),
    C("json.vertical-tab-padding", sf(b"{}\x0b"), False, "checkpoint-header-invalid"),
    C("json.two-documents", sf(b"{}{}"), False, "checkpoint-header-invalid"),
    C("json.trailing-comma", sf(b'{"__metadata__":{"a":"b"},}'), False, "checkpoint-header-invalid"),
    C("json.single-quotes", sf(b"{'a':1}"), False, "checkpoint-header-invalid"),
    C("json.depth-127", sf(I32 % (b',"x":' + nest(125)), Z * 16), True),
    C("json.depth-128", sf(I32 % (b',"x":' + nest(126)), Z * 16), False, "checkpoint-header-invalid"),
    C("json.depth-100000", sf(I32 % (b',"x":' + nest(100_000)), Z * 16), False, "checkpoint-header-invalid"),
    C("json.overlong-utf8", sf(b'{"__metadata__":{"a":"\xc0\xaf"}}'), False, "checkpoint-header-invalid"),
    C("json.utf8-encoded-surrogate", sf(b'{"__metadata__":{"a":"\xed\xa0\x80"}}'), False,
      "checkpoint-header-invalid"),
    C("json.utf8-tensor-name", sf({"\u00e9\u4e2d": t("I32", (4,))}, Z * 16), True),
    C("json.header-is-an-array", sf(b"[]"), False, "checkpoint-header-invalid"),
    C("json.header-is-a-string", sf(b'"x"'), False, "checkpoint-header-invalid"),
    C("json.header-is-null", sf(b"null"), False, "checkpoint-header-invalid"),
    C("json.key-not-a-string", sf(b"{1:2}"), False, "checkpoint-header-invalid"),
    C("json.empty-header", sf(b""), False, "checkpoint-header-invalid"),
    # -- __metadata__: null or string -> string ---------------------------------------------------
    C("meta.null", sf({"__metadata__": None, "t": t("U8", (1,), (0, 1))}, Z), True),
    C("meta.empty-object", sf({"__metadata__": {}, "t": t("U8", (1,), (0, 1))}, Z), True),
    C("meta.integer-value", sf({"__metadata__": {"a": 1}}), False, "checkpoint-header-invalid"),
    C("meta.nested-object", sf({"__metadata__": {"a": {"b": "c"}}}), False, "checkpoint-header-invalid"),
    C("meta.null-value", sf({"__metadata__": {"a": None}}), False, "checkpoint-header-invalid"),
    C("meta.a-list", sf({"__metadata__": ["a"]}), False, "checkpoint-header-invalid"),
    C("meta.a-string", sf({"__metadata__": "a"}), False, "checkpoint-header-invalid"),
    # -- the tensor entries -------------------------------------------------------------------------
    C("info.missing-dtype", sf({"a": {"shape": [4], "data_offsets": [0, 16]}}, Z * 16), False,
      "checkpoint-header-invalid"),
    C("info.null", sf({"a": None}), False, "checkpoint-header-invalid"),
    C("info.a-list", sf({"a": [1]}), False, "checkpoint-header-invalid"),
    C("info.a-number", sf({"a": 5}), False, "checkpoint-header-invalid"),
    C("info.extra-field-ignored", sf({"a": t("I32", (4,), x=1)}, Z * 16), True),
    C("info.three-offsets", sf({"a": t("I32", (4,), (0, 16, 16))}, Z * 16), False, "checkpoint-header-invalid"),
    C("info.one-offset", sf({"a": t("I32", (4,), (0,))}, Z * 16), False, "checkpoint-header-invalid"),
    C("info.offsets-an-object", sf({"a": {"dtype": "I32", "shape": [4], "data_offsets": {"0": 0}}}, Z * 16), False,
      "checkpoint-header-invalid"),
    C("info.shape-not-a-list", sf({"a": {"dtype": "I32", "shape": 4, "data_offsets": [0, 16]}}, Z * 16), False,
      "checkpoint-header-invalid"),
    C("info.dtype-lower-case", sf({"a": t("i32", (4,))}, Z * 16), False, "checkpoint-dtype"),
    C("info.dtype-F8_E4M3FN", sf({"a": t("F8_E4M3FN", (2,), (0, 2))}, Z * 2), False, "checkpoint-dtype"),
    C("info.dtype-C128", sf({"a": t("C128", (1,), (0, 16))}, Z * 16), False, "checkpoint-dtype"),
    C("info.dtype-trailing-space", sf({"a": t("I32 ", (4,))}, Z * 16), False, "checkpoint-dtype"),
    C("info.dtype-a-number", sf({"a": t(4, (4,))}, Z * 16), False, "checkpoint-dtype"),
    C("info.empty-name", sf({"": t("I32", (4,))}, Z * 16), True),
    C("info.name-with-a-line-break", sf({"x\nOK: verify": t("I32", (4,))}, Z * 16), True),
    # -- where the data lies ------------------------------------------------------------------------
    C("off.gap-at-the-start", sf({"a": t("I32", (4,), (8, 24))}, Z * 24), False, "checkpoint-gap"),
    C("off.gap-between", sf({"a": t("I32", (2,), (0, 8)), "b": t("I32", (2,), (16, 24))}, Z * 24), False,
      "checkpoint-gap"),
    C("off.overlap", sf({"a": t("I32", (4,), (0, 16)), "b": t("I32", (4,), (8, 24))}, Z * 24), False,
      "checkpoint-overlap"),
    C("off.end-before-begin", sf({"a": t("I32", (0,), (16, 0))}, Z * 16), False, "checkpoint-tensor-size"),
    C("off.beyond-the-file", sf({"a": t("I32", (4,))}, Z * 8), False, "checkpoint-truncated"),
    C("off.listed-in-reverse", sf({"a": t("I32", (4,), (16, 32)), "b": t("I32", (4,), (0, 16))}, Z * 32), True),
    C("off.zero-sized-between", sf({"a": t("I32", (4,)), "z": t("I32", (0,), (16, 16)),
                                    "b": t("I32", (4,), (16, 32))}, Z * 32), True),
    C("off.zero-sized-inside-another", sf({"a": t("I32", (4,)), "z": t("I32", (0,), (8, 8))}, Z * 16), False,
      "checkpoint-overlap"),
    # -- duplicate keys ------------------------------------------------------------------------------
    C("dup.tensor-twice-same-entry", sf(b'{"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]},'
                                        b'"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}', Z * 16),
      True, "checkpoint-duplicate-key", deliberate=True),
    C("dup.tensor-twice-other-data", sf(b'{"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]},'
                                        b'"a":{"dtype":"I32","shape":[4],"data_offsets":[16,32]}}', Z * 32),
      False, {"checkpoint-duplicate-key", "checkpoint-gap"}),
    C("dup.metadata-key", sf(b'{"__metadata__":{"k":"v","k":"w"},"t":{"dtype":"U8","shape":[1],'
                             b'"data_offsets":[0,1]}}', Z), True, "checkpoint-duplicate-key", deliberate=True),
    C("dup.ignored-field", sf(I32 % b',"x":1,"x":2', Z * 16), True, "checkpoint-duplicate-key", deliberate=True),
    C("dup.__metadata__", sf(b'{"__metadata__":null,"__metadata__":{"a":"b"}}'), False, "checkpoint-duplicate-key"),
    C("dup.dtype-field", sf(I32 % b',"dtype":"I32"', Z * 16), False, "checkpoint-duplicate-key"),
    # -- auditkit's bound on parsing work (the reference reads it): a million values are not parsed -------
    C("work.a-million-commas", sf(I32 % (b',"x":[' + b"0," * MAX_HEADER_TOKENS + b"0]"), Z * 16), True,
      "checkpoint-header-too-complex", deliberate=True),
    C("work.a-million-objects", sf(I32 % (b',"x":[' + b"{}," * (MAX_HEADER_TOKENS // 2) + b"{}]"), Z * 16), True,
      "checkpoint-header-too-complex", deliberate=True),
    C("work.just-under-the-bound", sf(I32 % (b',"x":[' + b"0," * (MAX_HEADER_TOKENS - 20) + b"0]"), Z * 16), True),
    # -- not safetensors at all ------------------------------------------------------------------------
    C("other.pickle", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.", False,
      "checkpoint-header-too-large"),
    C("other.zip", b"PK\x03\x04" + Z * 60, False, "checkpoint-truncated"),   # "PK\3\4": a 67 MB header, absent
    C("other.seven-bytes", b"\x02\0\0\0\0\0\0", False, "checkpoint-truncated"),
    # -- well formed, values not finite (a content finding; the reference opens them) ---------------------
    C("values.f32-nan", sf({"w": t("F32", (2,), (0, 8))}, struct.pack("<2f", 1.0, float("nan"))), True,
      "checkpoint-nonfinite"),
    C("values.bf16-inf", sf({"w": t("BF16", (2,), (0, 4))}, b"\x80\x3f\x80\x7f"), True, "checkpoint-nonfinite"),
    C("values.c64-inf-imaginary", sf({"w": t("C64", (1,), (0, 8))}, struct.pack("<2f", 0.0, float("inf"))), True,
      "checkpoint-nonfinite"),
    C("values.f8-e4m3fnuz-nan", sf({"w": t("F8_E4M3FNUZ", (2,), (0, 2))}, b"\x38\x80"), True,
      "checkpoint-nonfinite"),
    C("values.f8-e8m0-nan", sf({"w": t("F8_E8M0", (2,), (0, 2))}, b"\x7f\xff"), True, "checkpoint-nonfinite"),
]
IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS)


def test_the_reference_is_the_version_these_cases_were_written_for():
    assert safetensors.__version__.split(".")[:2] == ["0", "8"], \
        f"written against safetensors 0.8.x, found {safetensors.__version__}: re-read its tests and update CASES"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_verdict_agrees_with_the_reference(case, tmp_path):
    assert reference_accepts(case.data, tmp_path / "x.safetensors") is case.ref, "the reference's verdict changed"
    assert reference_accepts_bytes(case.data) is case.ref
    scan = scan_bytes(case.data)
    assert case.codes <= codes(scan), scan.problems
    if case.deliberate:
        assert case.ref and not scan.well_formed
        assert codes(scan) & {"checkpoint-duplicate-key", "checkpoint-header-too-complex"}
    else:
        assert scan.well_formed is case.ref, scan.problems
    if case.ref and not case.codes:
        assert scan.problems == []


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return pkgbuild.build(tmp_path_factory.mktemp("hostile-ckpt") / "pkg")


@pytest.mark.parametrize("case", [c for c in CASES if c.cli], ids=[c.id for c in CASES if c.cli])
def test_verify_reports_the_case(case, built, tmp_path):
    import shutil

    pkg = shutil.copytree(built, tmp_path / "pkg")
    (pkg / CKPT).write_bytes(case.data)
    build_manifest(pkg)               # the manifest agrees: only the checkpoint itself is wrong
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    exit_code, out, _ = run_untouched(["verify", str(pkg)], [pkg], cwd)
    assert exit_code == 1, out
    lines = out.splitlines()
    for code in case.codes:
        assert any(line.startswith(CKPT) and f": {code}" in line for line in lines), out
    if not case.codes:              # a well-formed stranger is still not the checkpoint the run wrote
        assert any(": checkpoint-hash" in line and CKPT in line for line in lines), out
    assert not any(line.startswith("OK") for line in lines), out


# -- dtypes: the reference's list, byte sizes, finite values ------------------------------------------

def reference_dtypes(tmp_path) -> set[str]:
    """The dtype names the installed library accepts, read from its own "unknown variant" message."""
    data = sf({"a": t("NO_SUCH_DTYPE", (1,), (0, 1))}, Z)
    (tmp_path / "d.safetensors").write_bytes(data)
    with pytest.raises(safetensors.SafetensorError) as exc:
        safe_open(str(tmp_path / "d.safetensors"), framework="numpy")
    listed = str(exc.value).split("expected one of", 1)[1]
    return set(re.findall(r"`([A-Z0-9_]+)`", listed))


def test_dtypes_are_the_reference_list(tmp_path):
    ref = reference_dtypes(tmp_path)
    assert {"F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64", "BOOL", "BF16"} <= ref
    assert set(DTYPES) == ref


def test_byte_sizes_of_every_dtype_agree_with_the_reference():
    """Every dtype, 0..4 elements, every byte count 0..33: accepted exactly where the reference accepts."""
    accepted = 0
    for dtype in sorted(DTYPES):
        for numel in range(5):
            for nbytes in range(34):
                data = sf({"a": t(dtype, (numel,), (0, nbytes))}, Z * nbytes)
                ref = reference_accepts_bytes(data)
                assert scan_bytes(data).well_formed is ref, (dtype, numel, nbytes)
                accepted += ref
    assert accepted == 22 * 5 - 2 - 2 * 3     # one size each, except: F4 x 1 or 3, F6_* x 1..3 are not whole bytes


TORCH_NAMES = {"F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
               "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "BF16": "bfloat16",
               "F16": "float16", "F32": "float32", "F64": "float64", "C64": "complex64"}


def bit_patterns(dtype: str) -> bytes:
    """Every pattern of a 1- or 2-byte dtype; for wider ones random patterns, a third with an all-ones exponent."""
    size = DTYPES[dtype].bits // 8
    if size <= 2:
        return np.arange(256 ** size, dtype=f"<u{size}").tobytes()
    rng = np.random.default_rng(size)
    lanes = rng.integers(0, 2 ** 32, 3000 * size // 4, dtype=np.uint32)
    if dtype == "F64":
        wide = lanes.view("<u8")
        wide[::3] |= np.uint64(0x7FF0000000000000)
    else:
        lanes[::3] |= np.uint32(0x7F800000)
    return lanes.tobytes()


@pytest.mark.parametrize("dtype", sorted(TORCH_NAMES))
def test_nonfinite_count_agrees_with_torch(dtype, tmp_path):
    """The reference loads the tensor (framework="pt"); torch counts its non-finite values; so must auditkit,
    whatever the chunk size (values split across chunks)."""
    torch = pytest.importorskip("torch")
    blob = bit_patterns(dtype)
    n = len(blob) * 8 // DTYPES[dtype].bits
    data = sf({"w": t(dtype, (n,), (0, len(blob)))}, blob)
    (tmp_path / "x.safetensors").write_bytes(data)
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        w = f.get_tensor("w")
    assert w.dtype == getattr(torch, TORCH_NAMES[dtype])
    want = int((~torch.isfinite(w if w.is_complex() else w.double())).sum())   # float64 holds every value
    assert want > 0
    for chunk in (1 << 20, 1021):     # 1021: values split across chunks
        s = CheckpointScanner()
        for i in range(0, len(data), chunk):
            s.feed(memoryview(data)[i:i + chunk])
        assert s.finish().problems == [("checkpoint-nonfinite", "tensor w", "finite values",
                                        f"{want} inf/nan value(s)")]


@pytest.mark.parametrize("dtype", ["F4", "F6_E2M3", "F6_E3M2", "BOOL", "U8", "I8", "I16", "U16", "I32", "U32",
                                   "I64", "U64"])
def test_dtypes_without_inf_or_nan_are_never_nonfinite(dtype):
    """F4 and F6_* (OCP MX) have no inf or nan encoding; integers and bool are not floats.  All patterns pass."""
    bits = DTYPES[dtype].bits
    blob = bytes(range(256)) * 3
    data = sf({"w": t(dtype, (len(blob) * 8 // bits,), (0, len(blob)))}, blob)
    assert scan_bytes(data).problems == []


# -- differential fuzzing: random headers, the reference decides ----------------------------------------

_DTYPE_CHOICES = sorted(DTYPES) + ["F8_E4M3FN", "i32", "", 5, None]
_DIMS = st.one_of(st.integers(0, 5), st.sampled_from([2 ** 63, U64, 2 ** 64, -1, -0, 1.0, True, "2"]))


@st.composite
def headers(draw):
    header, off = {}, 0
    for i in range(draw(st.integers(0, 4))):
        dtype = draw(st.sampled_from(_DTYPE_CHOICES))
        shape = draw(st.lists(_DIMS, max_size=3))
        size = 0
        if dtype in DTYPES and all(type(s) is int and 0 <= s for s in shape):
            numel = int(np.prod([min(s, 10 ** 6) for s in shape], dtype=object)) if shape else 1
            size = numel * DTYPES[dtype].bits // 8
        start = draw(st.sampled_from([off, off, off + 1, max(off - 1, 0), 0]))
        end = start + draw(st.sampled_from([size, size, size + 1, max(size - 1, 0), 0]))
        entry = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
        if draw(st.booleans()) and draw(st.booleans()):
            entry[draw(st.sampled_from(["data_offsets", "extra", "shape"]))] = draw(
                st.sampled_from([[start], [start, end, end], None, "x", 0]))
        header[draw(st.sampled_from([f"t{i}", "", "__metadata__", "t0"]))] = entry
        off = max(off, end)
    meta = draw(st.sampled_from([None, "absent", {"k": "v"}, {"k": 1}, [], {}]))
    if meta != "absent":
        header["__metadata__"] = meta
    data_len = draw(st.sampled_from([off, off, off + 1, max(off - 1, 0), 0]))
    text = json.dumps(header, separators=(",", ":")).encode()
    text = draw(st.sampled_from([b"", b" ", b"\n\t"])) + text + draw(st.sampled_from([b"", b"  ", b"\0"]))
    if draw(st.integers(0, 9)) == 0 and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + bytes([draw(st.integers(0, 255))]) + text[i + 1:]   # one byte changed
    return sf(text, Z * min(data_len, 4096))


@settings(max_examples=500, deadline=None)
@given(data=headers())
def test_random_headers_get_the_reference_verdict(data):
    scan = scan_bytes(data)
    assume("checkpoint-duplicate-key" not in codes(scan))       # a deliberate difference, tested above
    assert scan.well_formed is reference_accepts_bytes(data), (data[:300], scan.problems)


# -- hostile content beyond the format ------------------------------------------------------------------

def _with_checkpoint(tmp_path, built, data: bytes) -> Path:
    import shutil

    pkg = shutil.copytree(built, tmp_path / "pkg")
    (pkg / CKPT).write_bytes(data)
    build_manifest(pkg)
    (tmp_path / "cwd").mkdir()
    return pkg


def _meta(model_config: str) -> dict:
    return {"run_id": "linux-s1-a-s1", "config_id": "a", "seed": "1", "step": "10", "model_config": model_config}


@pytest.mark.parametrize("model_config, found", [
    (json.dumps(dict(pkgbuild.MODEL_CONFIG, n_layer=10 ** 9)), "n_layer 1000000000"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"n_layer": 1e400}', ""),
    ("[1, 2]", ""),
])
def test_a_hostile_model_config_is_a_finding(model_config, found, built, tmp_path):
    data = sf({"__metadata__": _meta(model_config), "w": t("F32", (2,), (0, 8))}, Z * 8)
    pkg = _with_checkpoint(tmp_path, built, data)
    exit_code, out, _ = run_untouched(["verify", str(pkg)], [pkg], tmp_path / "cwd")
    assert exit_code == 1
    line = next(x for x in out.splitlines() if x.startswith(CKPT) and ": checkpoint-model-config" in x)
    assert found in line


def test_a_header_of_many_tensors_is_read_whole(built, tmp_path):
    """20,000 zero-sized tensors (an 1.2 MB header): each one a finding."""
    header = {f"t{i}": t("F32", (0,), (0, 0)) for i in range(20_000)}
    header["__metadata__"] = _meta(json.dumps(pkgbuild.MODEL_CONFIG))
    pkg = _with_checkpoint(tmp_path, built, sf(header))
    exit_code, out, _ = run_untouched(["verify", str(pkg)], [pkg], tmp_path / "cwd")
    assert exit_code == 1
    assert sum(": checkpoint-tensor-unexpected" in x for x in out.splitlines()) == 20_000


def test_a_tensor_name_cannot_forge_a_line_of_the_report(built, tmp_path):
    header = {"x\nOK: verify everything": t("F32", (2,), (0, 8)),
              "__metadata__": _meta(json.dumps(pkgbuild.MODEL_CONFIG))}
    pkg = _with_checkpoint(tmp_path, built, sf(header, Z * 8))
    exit_code, out, _ = run_untouched(["verify", str(pkg)], [pkg], tmp_path / "cwd")
    assert exit_code == 1
    assert not any(line.startswith("OK") for line in out.splitlines())
    assert '"x\\nOK: verify everything"' in out


def test_a_metadata_of_100000_keys_is_checked(built, tmp_path):
    """(The metadata's schema check costs about 15 us a key: a million keys, within the header bound, take 15 s.)"""
    meta = _meta(json.dumps(pkgbuild.MODEL_CONFIG))
    meta.update({f"k{i}": "v" for i in range(100_000)})
    pkg = _with_checkpoint(tmp_path, built, sf({"__metadata__": meta, "w": t("F32", (2,), (0, 8))}, Z * 8))
    exit_code, out, _ = run_untouched(["verify", str(pkg)], [pkg], tmp_path / "cwd")
    assert exit_code == 1, out[-500:]
