"""Packages named by a URL (auditkit/package/remote.py), against a bounded server on 127.0.0.1:
the local verdicts reproduced, a tampered file caught, a redirect loop, an endless body and a
stalled server refused (exit 2), the second run served by the cache, credentials never shown."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.package.manifest import build_manifest
from auditkit.package.remote import arxiv_id, redact
from fixtures.httpserve import PackageServer
from fixtures.paperpkg import build_paper_package

DATA = Path(__file__).resolve().parent / "data"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def pkg(tmp_path_factory) -> Path:
    p = build_paper_package(tmp_path_factory.mktemp("remote") / "pkg")
    shutil.copy(DATA / "paper06_claims.json", p / "claims.json")
    build_manifest(p)
    return p


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("AUDITKIT_CACHE_DIR", str(c))
    monkeypatch.setenv("AUDITKIT_REMOTE_TIMEOUT", "0.5")      # a stalled read is given up after half a second
    return c


@pytest.fixture
def server(pkg):
    with PackageServer(pkg) as s:
        yield s


def test_a_url_gives_the_local_verdicts_and_the_second_run_reads_the_cache(pkg, server, cache):
    local = json.loads(run("verify", pkg, "--json").output)
    r = run("verify", server.url, "--json")
    assert r.exit_code == 0, r.output
    remote = json.loads(r.output)
    assert remote["checked"] == local["checked"] and remote["counts"] == local["counts"] == {}
    assert remote["info"]["root_of_the_files"] == local["info"]["root_of_the_files"]
    r = run("replay-gate", "all", "--package", server.url)
    assert r.exit_code == 0 and r.output.splitlines()[-1].startswith("OK: replay-gate http://127.0.0.1"), r.output
    for command in (["tables", "--check"], ["claims"]):
        assert run(*command, server.url).exit_code == 0
    # online again: only the MANIFEST is fetched, every file comes from the cache
    server.requests.clear()
    assert run("verify", server.url).exit_code == 0
    assert server.requests == ["/pkg/MANIFEST.json"]
    # offline: the cache alone
    server.stop()
    r = run("replay-gate", "all", server.url)
    assert r.exit_code == 0 and "offline" in r.output, r.output
    assert not list((cache / "work").iterdir())          # the fetched trees are removed after each command


def test_a_tampered_file_is_caught_and_never_kept(pkg, server, cache):
    server.modes["claims.json"] = "tamper"
    r = run("verify", server.url)
    assert r.exit_code == 1, r.output
    assert "claims.json: remote-file-mismatch" in r.output
    sha = json.loads((pkg / "MANIFEST.json").read_text())
    want = next(e["sha256"] for e in sha["files"] if e["path"] == "claims.json")
    assert not (cache / "blobs" / "sha256" / want[:2] / want).exists()
    served = [p for p in (cache / "blobs" / "sha256").rglob("*") if p.is_file()]
    assert len(served) == len(sha["files"]) + 1       # every other file and the MANIFEST.json (+ .csv) are kept
    r = run("claims", server.url)
    assert r.exit_code == 1 and "remote-file-mismatch" in r.output


@pytest.mark.parametrize("mode,words", [("loop", "redirect"), ("endless", "more than 1048576 bytes"),
                                        ("stall", "no byte for 0.5 seconds")])
def test_a_hostile_server_is_exit_2(server, monkeypatch, mode, words):
    monkeypatch.setenv("AUDITKIT_REMOTE_MAX_DOC", str(1 << 20))
    server.modes["MANIFEST.json"] = mode
    for command in (["verify"], ["replay-gate", "all"]):
        r = run(*command, server.url)
        assert r.exit_code == 2 and words in r.output, r.output
        assert "Traceback" not in r.output


def test_an_endless_file_is_read_to_its_declared_size_and_no_further(server):
    server.modes["protocol.json"] = "endless"
    r = run("verify", server.url)
    assert r.exit_code == 1 and "protocol.json: remote-file-mismatch" in r.output and "more than" in r.output


def test_a_stalled_file_is_exit_2(server):
    server.modes["claims.json"] = "stall"
    r = run("claims", server.url, "--json")
    assert r.exit_code == 2 and json.loads(r.output)["exit_code"] == 2


def test_credentials_and_queries_never_appear(server):
    url = server.url.replace("http://", "http://reviewer:s3cret@") + "?token=abc123"
    server.modes["MANIFEST.json"] = "loop"
    r = run("verify", url)
    assert r.exit_code == 2 and "s3cret" not in r.output and "abc123" not in r.output
    assert redact("https://u:p@example.org:8443/a/b?x=1#f") == "https://example.org:8443/a/b"


def test_only_https_leaves_this_machine():
    r = run("verify", "http://example.org/pkg/")
    assert r.exit_code == 2 and "https://" in r.output
    r = run("verify", "ftp://example.org/pkg/")
    assert r.exit_code == 2 and "does not fetch ftp://" in r.output


def test_an_arxiv_identifier_fetches_the_eprint(pkg, server, monkeypatch, tmp_path):
    from test_source import eprint

    data = eprint(tmp_path / "e", pkg).read_bytes()
    server.extra["/e-print/2606.11387"] = data
    monkeypatch.setenv("AUDITKIT_ARXIV_URL", server.origin + "/e-print/")
    r = run("replay-gate", "all", "arxiv:2606.11387")
    assert r.exit_code == 0 and "package found at anc/" in r.output, r.output
    r = run("verify", "arxiv:2606.11387")
    assert r.exit_code == 0, r.output
    assert arxiv_id("https://arxiv.org/abs/2606.11387v2") == "2606.11387v2" and arxiv_id("ancillary") is None


def run_apart(*args):
    """auditkit in a process of its own: fsspec's S3 client keeps an event-loop thread for the life of
    the process, and a thread left in this worker would stop later tests from forking readers."""
    import subprocess
    import sys
    from types import SimpleNamespace

    p = subprocess.run([sys.executable, "-m", "auditkit", *map(str, args)], capture_output=True, text=True,
                       timeout=300)
    return SimpleNamespace(exit_code=p.returncode, output=p.stdout + p.stderr, stdout=p.stdout)


def test_an_s3_prefix_served_by_a_local_moto_server_works_the_same(pkg, monkeypatch, cache):
    import boto3
    from moto.server import ThreadedMotoServer

    import socket

    with socket.socket() as s:          # a free port on 127.0.0.1 for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION":
                     "us-east-1", "FSSPEC_S3_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="lab")
        for p in sorted(pkg.rglob("*")):
            if p.is_file():
                s3.put_object(Bucket="lab", Key="pkg/" + p.relative_to(pkg).as_posix(), Body=p.read_bytes())
        local = json.loads(run("verify", pkg, "--json").output)
        r = run_apart("verify", "s3://lab/pkg/", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["info"]["root_of_the_files"] == local["info"]["root_of_the_files"]
        assert run_apart("replay-gate", "all", "--package", "s3://lab/pkg").exit_code == 0
        # a file changed in the bucket is caught, as over https
        s3.put_object(Bucket="lab", Key="pkg/claims.json", Body=(pkg / "claims.json").read_bytes() + b" ")
        shutil.rmtree(cache)
        r = run_apart("verify", "s3://lab/pkg/")
        assert r.exit_code == 1 and "claims.json: remote-file-mismatch" in r.output, r.output
        assert "testing" not in r.output                      # no credential in what is shown
    finally:
        server.stop()
