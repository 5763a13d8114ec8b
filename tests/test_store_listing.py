"""The one listing of a package directory (auditkit/package/listing.py) and its two users: `manifest
build`'s list (refuses a link) and the evidence reader's (leaves it out)."""

from __future__ import annotations

import os
import stat

import pytest

from auditkit.errors import AuditError
from auditkit.evidence.model import DirReader
from auditkit.package.listing import list_entries
from auditkit.package.manifest import list_package_files


def _tree(root):
    (root / "b" / "c").mkdir(parents=True)
    (root / "a.json").write_text("{}")
    (root / "b" / "x.csv").write_text("h\n")
    (root / "b" / "c" / "y.txt").write_text("y")
    (root / ".git" / "objects").mkdir(parents=True)
    (root / ".git" / "HEAD").write_text("ref")
    (root / "z").mkdir()
    return root


def test_parents_first_in_name_order_and_no_git(tmp_path):
    root = _tree(tmp_path)
    got = [(rel, stat.S_ISDIR(mode)) for rel, mode in list_entries(root, on_error=lambda p, e: None)]
    assert got == [("a.json", False), ("b", True), ("z", True), ("b/c", True), ("b/x.csv", False),
                   ("b/c/y.txt", False)]


def test_a_link_is_yielded_never_entered(tmp_path):
    root = _tree(tmp_path / "pkg")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "link").symlink_to(outside)
    got = dict(list_entries(root, on_error=lambda p, e: None))
    assert stat.S_ISLNK(got["link"]) and not any(rel.startswith("link/") for rel in got)


def test_under_lists_one_folder(tmp_path):
    root = _tree(tmp_path)
    assert [rel for rel, _ in list_entries(root, "b/", on_error=lambda p, e: None)] == ["b/c", "b/x.csv",
                                                                                        "b/c/y.txt"]


def test_a_directory_that_cannot_be_listed_goes_to_on_error(tmp_path):
    root = _tree(tmp_path)
    seen = []
    assert list(list_entries(root / "nothing-here", on_error=lambda p, e: seen.append((p, e.errno)))) == []
    assert seen and seen[0][0] == ""
    with pytest.raises(OSError):
        list(list_entries(root / "nothing-here", on_error=lambda p, e: (_ for _ in ()).throw(e)))


def test_the_two_users_apply_their_own_rule(tmp_path):
    root = _tree(tmp_path)
    (root / "b" / ".git").write_text("a file named .git")     # listed by manifest build, not by evidence
    assert list_package_files(root) == ["a.json", "b/.git", "b/c/y.txt", "b/x.csv"]
    assert DirReader(root).files() == ["a.json", "b/c/y.txt", "b/x.csv"]
    assert DirReader(root).files("b") == ["b/c/y.txt", "b/x.csv"]
    os.symlink("a.json", root / "b" / "l")
    assert DirReader(root).files() == ["a.json", "b/c/y.txt", "b/x.csv"]      # left out
    with pytest.raises(AuditError, match="b/l is a symlink"):
        list_package_files(root)                                          # refused


def test_a_git_link_to_a_directory_is_not_listed_by_manifest_build(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "f").write_text("f")
    (tmp_path / "repo").mkdir()
    (root / ".git").symlink_to(tmp_path / "repo")
    assert list_package_files(root) == ["f"]
