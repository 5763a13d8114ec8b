"""The write primitives (auditkit/package/atomic.py): the one rename, the atomic writers, and the
clock and canonical JSON beside them."""

from __future__ import annotations

import os
import re

import pytest

from auditkit.clock import format_utc, now, parse_utc, utc_now
from auditkit.package.atomic import (TEMP_PREFIX, atomic_write_bytes, create_exclusive, fsync_dir, rename,
                                     remove_stale_temporaries)
from auditkit.package.canonical import canonical_json_bytes


def test_rename_replaces_a_file(tmp_path):
    (tmp_path / "a").write_bytes(b"new")
    (tmp_path / "b").write_bytes(b"old")
    assert rename(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == b"new" and not (tmp_path / "a").exists()


def test_rename_in_a_directory_descriptor(tmp_path):
    (tmp_path / "a").write_bytes(b"x")
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert rename("a", "b", dir_fd=fd, sync=False)
        fsync_dir(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "b").read_bytes() == b"x"


@pytest.mark.parametrize("there", ["file", "full-dir", "link", "empty-dir"])
def test_rename_without_replace_never_clobbers(tmp_path, there):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "marker").write_bytes(b"ours")
    dst = tmp_path / "root"
    if there == "file":
        dst.write_bytes(b"theirs")
    elif there == "full-dir":
        dst.mkdir()
        (dst / "f").write_bytes(b"theirs")
    elif there == "empty-dir":
        dst.mkdir()
    else:
        dst.symlink_to(tmp_path / "elsewhere")
    assert rename(staged, dst, replace=False) is False
    assert (staged / "marker").read_bytes() == b"ours"
    assert os.path.lexists(dst) and not (os.path.isdir(dst) and (dst / "marker").exists())


def test_rename_without_replace_moves_a_directory(tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "marker").write_bytes(b"ours")
    assert rename(staged, tmp_path / "root", replace=False)
    assert (tmp_path / "root" / "marker").read_bytes() == b"ours" and not staged.exists()


def test_atomic_write_leaves_no_temporary(tmp_path):
    p = tmp_path / "d" / "f.json"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert [q.name for q in p.parent.iterdir()] == ["f.json"]


def test_create_exclusive_and_stale_temporaries(tmp_path):
    p = tmp_path / "f"
    assert create_exclusive(p, b"first") and not create_exclusive(p, b"second")
    assert p.read_bytes() == b"first"
    dead = tmp_path / f"{TEMP_PREFIX}999999999-abcd-f"
    dead.write_bytes(b"left behind")
    mine_alive = tmp_path / f"{TEMP_PREFIX}1-abcd-f"     # pid 1 is alive: kept
    mine_alive.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 1
    assert not dead.exists() and mine_alive.exists()


def test_clock_format_round_trips():
    text = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text)
    assert format_utc(parse_utc(text)) == text
    assert parse_utc("2026-01-01T00:00:00") is None and parse_utc("nonsense") is None
    assert now().tzinfo is not None


def test_canonical_json_bytes():
    assert canonical_json_bytes({"b": 1, "a": [1, 2]}) == b'{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        canonical_json_bytes({"x": float("nan")})
