"""auditkit is installed as `pretrain-auditkit`: `auditkit` on PyPI is an unrelated project.

No document, workflow, script or message of this repository may tell a user to install the
colliding distribution (a lab following it would run someone else's code in its CI); the import
name and the command stay `auditkit`."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIST = "pretrain-auditkit"
TAKEN = "audit" + "kit"   # spelled apart so this file does not match its own patterns

# an install command naming a requirement: pip/pipx/uv/poetry/conda and their flags, then the names
_INSTALL = re.compile(r"\b(?:pip3?|pipx|uv(?: pip| tool)?|poetry|conda|mamba)\s+(?:install|add)\b([^\n`]*)")
# a requirement written with extras (`auditkit[figures]`) whatever runs it
_EXTRAS = re.compile(r"(?<![\w.\-/])" + TAKEN + r"\[[a-z][a-z0-9_,\-]*\]")
_BARE = re.compile(r"(?<![\w.\-/@])[\"']?" + TAKEN + r"(?:\[[^\]]*\])?(?:[<>=!~]=?[\w.*]+)?[\"']?(?![\w.\-/\[])")


def colliding_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line that asks to install the distribution named `auditkit`."""
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        hit = bool(_EXTRAS.search(line))
        for m in _INSTALL.finditer(line):
            hit |= bool(_BARE.search(m[1].split(" #")[0]))   # a shell comment after the command names nothing
        if hit:
            out.append((no, line.strip()))
    return out


def tracked_text_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    keep = (".md", ".py", ".yml", ".yaml", ".toml", ".sh", ".txt", ".cfg", ".ini", ".rst", ".html", ".j2")
    return sorted(p for p in listed if p.endswith(keep) or p in (".ci/run", "Makefile", "Dockerfile"))


def test_the_scanner_catches_every_way_of_installing_the_taken_name():
    bad = [f"pip install {TAKEN}", f'pip install "{TAKEN}[figures]"', f"pip install 'x' {TAKEN}==1.1.3",
           f"hint: pip install '{TAKEN}[dask]'", f"uv add {TAKEN}", f"pipx install {TAKEN}",
           f"dependencies = [\"{TAKEN}[runner]>=0.1\"]", f"python -m pip install -U {TAKEN}"]
    good = [f"pip install '{DIST}[figures]'", f"Usage: {TAKEN} [OPTIONS] COMMAND [ARGS]...", "pip install -e '.[figures]'", f"pip install {DIST}",
            f"import {TAKEN}", f"{TAKEN} verify ancillary/", f"pip install ./{TAKEN}-src", f"python -m {TAKEN}",
            f"pip install git+https://example.org/x/{TAKEN}@0123abc#egg={DIST}"]
    assert [colliding_lines(s) != [] for s in bad] == [True] * len(bad)
    assert [colliding_lines(s) for s in good] == [[]] * len(good)


@pytest.mark.parametrize("rel", tracked_text_files())
def test_no_file_tells_users_to_install_the_taken_name(rel):
    if rel == "tests/test_install_name.py":
        return
    text = (REPO / rel).read_text("utf-8", errors="replace")
    assert colliding_lines(text) == [], (
        f"{rel} tells users to install '{TAKEN}', an unrelated project on PyPI: name '{DIST}' instead")


def test_the_distribution_is_the_free_name_and_keeps_the_import_and_the_command():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {TAKEN: "auditkit.cli:main"}
    dist = metadata.distribution(DIST)   # what this environment installed is the renamed distribution
    assert [ep.value for ep in dist.entry_points if ep.name == TAKEN] == ["auditkit.cli:main"]
    assert "figures" in (dist.metadata.get_all("Provides-Extra") or [])


def test_the_hints_auditkit_prints_name_the_free_distribution():
    from auditkit.app import derived as cmd_derived
    from auditkit.report import build
    from auditkit.study import dask_executor

    for module in (cmd_derived, build, dask_executor):
        src = Path(module.__file__).read_text()
        assert f"pip install '{DIST}[" in src and colliding_lines(src) == []
