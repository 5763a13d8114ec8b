"""parse_eval_docs' fast path (`fast_columns`) against the reference loop (`slow_columns`): on every input
the fast path either declines (None) or returns exactly the loop's columns, and parse_eval_docs' result or
error (message, location, found) is the loop's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditkit.errors import PackageDefect, defect
from auditkit.package import evaldocs
from auditkit.package.evaldocs import HEADER, fast_columns, parse_eval_docs, parse_eval_docs_once, slow_columns


def _bad(where, expected, found, message):
    return defect("x.csv", "eval-docs-unreadable", message, location=where, expected=expected, found=found[:80])


def _reference(lines):
    try:
        return slow_columns(lines, _bad)
    except PackageDefect:
        return None
    except OverflowError:
        return None


def _parse(data: bytes, parse=parse_eval_docs_once):
    try:
        ed = parse(data, "x.csv")
        return ("ok", ed.doc.tolist(), ed.nats.tolist(), ed.bytes.tolist(), ed.doc.dtype, ed.nats.dtype)
    except PackageDefect as exc:
        f = exc.finding
        return ("defect", f.code, f.message, f.location, f.expected, f.found)
    except OverflowError:
        return ("overflow",)


def _parse_loop_only(data: bytes):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaldocs, "fast_columns", lambda body: None)
        return _parse(data)


def _body(lines) -> bytes:
    return ("\n".join(lines[1:]) + "\n").encode()


def _check(lines):
    fast = fast_columns(_body(lines))
    if fast is None:
        return False
    ref = _reference(lines)
    assert ref is not None, f"the fast path accepted rows the loop refuses: {lines[:4]}"
    for a, b in zip(fast, ref):
        assert a.dtype == b.dtype and a.tolist() == b.tolist()
    return True


def test_fast_path_takes_well_formed_files():
    lines = [HEADER] + [f"{j},{j * 0.37:.6f},{j + 1}" for j in range(1000)] + ["1000,1.,7", "1001,.5,0012"]
    assert _check(lines)
    ed = parse_eval_docs(("\n".join(lines) + "\n").encode(), "x.csv")
    assert ed.doc[-1] == 1001 and ed.nats[-1] == 0.5 and ed.bytes[-1] == 12 and ed.nats[1] == 0.37


@pytest.mark.parametrize("row", [
    "1,2.5", "1,2.5,3,4", ",2.5,3", "1,,3", "1,2.5,", "1,2.5,0", "1,2.5,00", "1,-0.5,3", "1,+2,3", "1, 2,3",
    "1,2 ,3", "1,nan,3", "1,inf,3", "1,1e3,3", "1,1_0,3", "1,1.2.3,3", "1,.,3", "a,2,3", "1,2,b", "-1,2,3",
    "١,2,3", "1,٢,3", "1,2,٣", "1," + "9" * 400 + ",3", "9" * 19 + ",2,3", "1,2," + "9" * 19, "1,2,3,",
    "", " 1,2,3", "1,2,3 ",
])
def test_fast_path_declines_what_it_does_not_plainly_know(row):
    lines = [HEADER, "0,1.5,4", row, "99999,0.25,8"]
    assert fast_columns(_body(lines)) is None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10 ** 19), st.floats(0, 1e6), st.integers(0, 10 ** 19)), min_size=1,
                max_size=30))
def test_fast_path_agrees_with_the_loop_on_generated_rows(rows):
    lines = [HEADER] + [f"{d},{x!r},{b}" for d, x, b in rows]
    _check(lines)


_alphabet = st.sampled_from(list("0123456789.,\n-+e_ naI\r\u0661") + ["inf", "nan", "\n", ","])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_alphabet, max_size=60))
def test_parse_is_the_loop_on_hostile_bytes(pieces):
    data = (HEADER + "\n" + "".join(pieces)).encode()
    lines = data.decode().split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) > 1:
        _check(lines)
    assert _parse(data) == _parse_loop_only(data)


def test_parse_is_the_loop_on_named_irregular_files():
    cases = [HEADER + "\n0,1,2\n0,1,2\n", HEADER + "\n5,1,2\n3,1,2\n", HEADER + "\n0,1,2\n1,1,0\n",
             HEADER + "\n0,1,2\n\n1,1,2\n", HEADER + "\n" + "9" * 25 + ",1,2\n", HEADER + "\n0,1e400,2\n",
             HEADER + "\n0,1.5,2\n1,2.5,3"]
    results = [_parse(c.encode()) for c in cases]
    assert results == [_parse_loop_only(c.encode()) for c in cases]
    assert results[0][:3] == ("defect", "eval-docs-unreadable", "documents are not in strictly increasing order")
    assert results[-1][0] == "ok"


def test_parsed_files_are_remembered_by_their_bytes_and_read_only(monkeypatch):
    text = HEADER + "\n0,1.5,4\n3,0.25,8\n"
    first = parse_eval_docs(text.encode(), "a.csv")
    assert parse_eval_docs(bytearray(text.encode()), "b.csv") is first
    assert _parse(text.encode(), parse_eval_docs) == _parse(text.encode())
    with pytest.raises(ValueError):
        first.nats[0] = 2.0
    other = parse_eval_docs((HEADER + "\n0,1.5,4\n3,0.5,8\n").encode(), "a.csv")
    assert other is not first and other.nats.tolist() == [1.5, 0.5]
    bad = (HEADER + "\n0,1.5,4\n0,0.25,8\n").encode()
    for rel in ("a.csv", "b.csv"):                 # a refusal is never remembered: it names its own file
        with pytest.raises(PackageDefect) as exc:
            parse_eval_docs(bad, rel)
        assert exc.value.finding.path == rel


_decimal = st.builds(lambda a, b, point: a + ("." + b if point else ""), st.text("0123456789", min_size=0, max_size=30),
                     st.text("0123456789", min_size=0, max_size=30), st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_decimal, min_size=1, max_size=20))
def test_fast_path_nats_are_float_of_the_text(texts):
    """Every decimal the fast path takes is read as float() reads it: short ones as m / 10**k, long ones
    (more digits than 2**53 holds, or more than 22 after the point) with float() itself."""
    lines = [HEADER] + [f"{i},{x},{i + 1}" for i, x in enumerate(texts)]
    if _check(lines):
        got = fast_columns(_body(lines))[1].tolist()
        assert got == [float(x) for x in texts]


@pytest.mark.parametrize("nats", ["9007199254740993", "9007199254740993.0", "0.1000000000000000055511151231257827",
                                  "123456789012345678901234567890.5", "0." + "0" * 30 + "17", "00000000000000000000.5",
                                  "4503599627370497.5", "1.7976931348623157" + "0" * 292])
def test_fast_path_reads_digits_past_a_double_as_float_does(nats):
    lines = [HEADER, f"0,{nats},3", "1,0.5,4"]
    assert _check(lines)
    assert fast_columns(_body(lines))[1][0] == float(nats)


def test_fast_path_declines_a_long_field_with_two_points():
    lines = [HEADER, "0,0.5,3", "1," + "1." * 12 + ",3"]
    assert fast_columns(_body(lines)) is None
    assert _parse(("\n".join(lines) + "\n").encode())[0] == "defect"


def test_fast_path_in_many_chunks_is_one_read(monkeypatch):
    """Chunks end on line ends (a line longer than a chunk included); the columns are those of one read."""
    lines = [HEADER] + [f"{j},{j * 0.37:.6f},{j % 97 + 1}" for j in range(3000)] + [f"3000,{'1' * 40}.5,1"]
    whole = fast_columns(_body(lines))
    monkeypatch.setattr(evaldocs, "_CHUNK", 16)
    chunked = fast_columns(_body(lines))
    assert all(a.tolist() == b.tolist() for a, b in zip(whole, chunked))
    assert _check(lines)
