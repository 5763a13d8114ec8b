"""Shared fixtures. `smoke_local_package`: manifests/smoke.toml run once per session
with the local executor and the real runner (about a minute on 2 cores); tests that
need to change it copy it first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_local_package(tmp_path_factory) -> Path:
    from auditkit.study.spec import load_manifest
    from auditkit.study.run import run_protocol

    manifest = load_manifest(REPO / "manifests" / "smoke.toml")
    out = tmp_path_factory.mktemp("smoke") / "pkg"
    outcome = run_protocol(manifest, out, list(manifest.protocol.hosts))
    assert outcome.complete, outcome.waiting_for
    return out


@pytest.fixture
def smoke_copy(smoke_local_package, tmp_path) -> Path:
    dest = tmp_path / "pkg"
    shutil.copytree(smoke_local_package, dest)
    return dest
