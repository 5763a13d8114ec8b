"""Hostile evidence, a misbehaving TSA, and package text meant to forge output (issue 20).

- one malformed evidence item (a list where a path belongs, a superscript seq, a name longer than a
  file's can be, a 1,200-deep directory, a token dated 9999-12-31, a 200,000-deep DSSE payload) is a
  finding at its file and line or JSON path, and the package's other findings (a tampered CSV) are
  still shown: exit 1, never "could not check ... a bug";
- a TSA that drips its answer is cut off by --timeout (a deadline for the whole exchange); broken
  HTTP from a TSA is a clear exit 2;
- a DSSE envelope in URL-safe base64 keeps its signature;
- input auditkit cannot use (an unknown curve, a deep profile or claims file, a merge of a rules
  file that is an array or a latin-1 CSV) is exit 2 naming the file, with no traceback;
- package text cannot forge terminal lines or inject HTML into the Markdown report.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditkit.cli import cli
from auditkit.errors import AuditError
from auditkit.evidence import attest
from fixtures.evidence import TsaServer, make_pki, rewrite_log, signing_key
from fixtures.protofakes import FakeExecutor

REPO = Path(__file__).resolve().parents[1]
TAMPERED = "remote-results/linux_stage1_screen_summary.csv"
DECISION_ENV = "evidence/attestations/stage1.decision.dsse.json"
PACKAGE_ENV = "evidence/attestations/package.dsse.json"


# --- a small signed study (fake executor, event log, no TSA) ---------------------------------------

@pytest.fixture(scope="module")
def signer_keys(tmp_path_factory):
    return signing_key(tmp_path_factory.mktemp("keys"), "ed25519", "signer")


@pytest.fixture(scope="module")
def study(tmp_path_factory, signer_keys):
    from auditkit.evidence.record import Recorder
    from auditkit.study.run import run_protocol
    from auditkit.study.spec import load_manifest

    manifest = load_manifest(REPO / "manifests" / "smoke.toml")
    out = tmp_path_factory.mktemp("hostile-evidence") / "pkg"
    rec = Recorder(out, signers=[attest.load_signer(signer_keys[0])])
    assert run_protocol(manifest, out, list(manifest.protocol.hosts), executor=FakeExecutor(), evidence=rec).complete
    return out


@pytest.fixture
def pkg(study, tmp_path):
    dest = tmp_path / "pkg"
    shutil.copytree(study, dest)
    return dest


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def no_bug(output: str) -> None:
    assert "a bug" not in output and "Traceback" not in output and "could not check:" not in output, output


def tamper_csv(root: Path) -> None:
    """Change one val_bpb cell after the fact (verify: file-changed; replay: the decision differs)."""
    lines = (root / TAMPERED).read_text().splitlines()
    head, row = lines[0].split(","), lines[1].split(",")
    i = head.index("val_bpb")
    row[i] = f"{float(row[i]) + 0.5:.6f}"
    lines[1] = ",".join(row)
    (root / TAMPERED).write_text("\n".join(lines) + "\n")


def resign(root: Path, rel: str, signer_keys, edit=None, payload: bytes | None = None) -> None:
    """Replace the envelope at `rel` by one over `edit(statement)` (or raw `payload`), validly signed by the
    package's own key: only the planted defect is wrong with it."""
    from securesystemslib.dsse import Envelope

    env = json.loads((root / rel).read_text())
    if payload is None:
        stmt = json.loads(base64.b64decode(env["payload"]))
        edit(stmt)
        payload = json.dumps(stmt).encode()
    new = Envelope(payload, attest.PAYLOAD_TYPE, {})
    new.sign(attest.load_signer(signer_keys[0]))
    (root / rel).write_text(json.dumps(new.to_dict()))


def append_event(root: Path, **fields) -> None:
    """A new last line of the event log, chained correctly (so only its own content is wrong)."""
    def edit(docs):
        docs.append({"time": docs[-1]["time"], **fields})
    rewrite_log(root, edit)


def timestamped_event(subject: str) -> dict:
    return {"type": "timestamped", "subject": subject, "sha256": "0" * 64, "token": "evidence/timestamps/x.0.tsr",
            "token_sha256": hashlib.sha256(b"").hexdigest(), "tsa": "http://127.0.0.1:9/tsr"}


def plant_token_file(root: Path) -> None:
    (root / "evidence" / "timestamps").mkdir(exist_ok=True)
    (root / "evidence" / "timestamps" / "x.0.tsr").write_bytes(b"")


# --- 1. one malformed evidence item hides no finding ---------------------------------------------------

def event_field_is_a_list(root, keys):
    def edit(docs):
        next(d for d in docs if d["type"] == "row-landed")["path"] = ["remote-results/x.csv"]
    rewrite_log(root, edit)


def event_run_id_is_an_object(root, keys):
    def edit(docs):
        next(d for d in docs if d["type"] == "cell-started")["run_id"] = {"a": 1}
    rewrite_log(root, edit)


def event_seed_is_text(root, keys):
    def edit(docs):
        next(d for d in docs if d["type"] == "cell-started")["seed"] = "42"
    rewrite_log(root, edit)


def subject_with_superscript_seq(root, keys):
    plant_token_file(root)
    append_event(root, **timestamped_event("evidence/events.jsonl#\u00b2"))


def subject_name_too_long(root, keys):
    plant_token_file(root)
    append_event(root, **timestamped_event("a" * 5000))


def subject_outside_the_package(root, keys):
    plant_token_file(root)
    append_event(root, **timestamped_event("../outside.txt"))


def statement_field_is_a_list(root, keys):
    resign(root, DECISION_ENV, keys, lambda s: s["predicate"]["inputs"][0].update(path=["a"]))


def statement_head_is_a_list(root, keys):
    resign(root, PACKAGE_ENV, keys, lambda s: s["predicate"].update(events_head=["a"]))


def statement_subject_too_long(root, keys):
    resign(root, PACKAGE_ENV, keys, lambda s: s["subject"].append({"name": "b" * 5000, "digest": {"sha256": "0" * 64}}))


def statement_subject_absolute(root, keys):
    resign(root, PACKAGE_ENV, keys, lambda s: s["subject"].append({"name": "/etc/passwd",
                                                                     "digest": {"sha256": "0" * 64}}))


def payload_200000_deep(root, keys):
    resign(root, DECISION_ENV, keys, payload=b"[" * 200_000 + b"]" * 200_000)


def signature_not_base64(root, keys):
    env = json.loads((root / DECISION_ENV).read_text())
    env["signatures"][0]["sig"] = "@@@@"
    (root / DECISION_ENV).write_text(json.dumps(env))


CASES = {
    # name: (plant, code, path, location (a prefix))
    "event-field-list": (event_field_is_a_list, "event-line-invalid", "evidence/events.jsonl", "line "),
    "event-run-id-object": (event_run_id_is_an_object, "event-line-invalid", "evidence/events.jsonl", "line "),
    "event-seed-text": (event_seed_is_text, "event-line-invalid", "evidence/events.jsonl", "line "),
    "subject-superscript": (subject_with_superscript_seq, "event-line-invalid", "evidence/events.jsonl", "line "),
    "subject-too-long": (subject_name_too_long, "event-line-invalid", "evidence/events.jsonl", "line "),
    "subject-outside": (subject_outside_the_package, "event-line-invalid", "evidence/events.jsonl", "line "),
    "statement-field-list": (statement_field_is_a_list, "attestation-invalid", DECISION_ENV,
                             "payload $.predicate.inputs[0].path"),
    "statement-head-list": (statement_head_is_a_list, "attestation-invalid", PACKAGE_ENV,
                            "payload $.predicate.events_head"),
    "statement-subject-long": (statement_subject_too_long, "attestation-invalid", PACKAGE_ENV, "payload $.subject["),
    "statement-subject-absolute": (statement_subject_absolute, "attestation-invalid", PACKAGE_ENV,
                                   "payload $.subject["),
    "payload-200000-deep": (payload_200000_deep, "attestation-invalid", DECISION_ENV, "$.payload"),
    "signature-not-base64": (signature_not_base64, "attestation-invalid", DECISION_ENV, "$.signatures[0].sig"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["verify", "replay-gate"])
def test_a_malformed_item_is_a_finding_and_hides_no_other(pkg, signer_keys, case, command):
    plant, code, path, location = CASES[case]
    tamper_csv(pkg)
    plant(pkg, signer_keys)
    args = ["verify", pkg] if command == "verify" else ["replay-gate", "all", "--package", pkg]
    r = invoke(*args, "--json")
    no_bug(r.output)
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)
    hits = [f for f in doc["findings"] if f["code"] == code and f["path"] == path]
    assert hits and any(f["location"].startswith(location) for f in hits), (case, hits)
    assert "evidence-unchecked" not in doc["counts"]  # a finding of its own, not the net below them
    tampered = {"verify": "file-changed", "replay-gate": "input-hash-mismatch"}[command]
    assert any(f["code"] == tampered and f["path"] == TAMPERED for f in doc["findings"]), doc["counts"]


def test_the_report_shows_the_malformed_item_and_the_tampering(pkg, signer_keys, tmp_path):
    tamper_csv(pkg)
    event_field_is_a_list(pkg, signer_keys)
    payload_200000_deep(pkg, signer_keys)
    r = invoke("report", pkg, "--out", tmp_path / "r.md", "--format", "md", "--no-figures")
    no_bug(r.output)
    assert r.exit_code == 1, r.output
    text = (tmp_path / "r.md").read_text()
    assert "**event-line-invalid**" in text and "**attestation-invalid**" in text and "**file-changed**" in text


def _remove_deep(top: Path, name: str) -> None:
    """Remove a chain of directories `name` under `top` (and the files in them) with a few descriptors at a
    time: lift each next level up beside the one above, then remove the emptied one (shutil.rmtree, and so
    pytest's own cleanup, recurses once per level and cannot; past PATH_MAX no path names the bottom)."""
    fd = os.open(top, os.O_RDONLY)
    try:
        while True:
            sub = os.open(name, os.O_RDONLY, dir_fd=fd)
            try:
                entries = os.listdir(sub)
                for entry in entries:
                    if entry != name:
                        os.unlink(entry, dir_fd=sub)
                if name in entries:
                    os.rename(name, ".lifted", src_dir_fd=sub, dst_dir_fd=fd)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=fd)
            if name not in entries:
                return
            os.rename(".lifted", name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("depth", [1200, 2100])
def test_a_deep_directory_under_evidence(pkg, depth):
    """1,200 levels: the file at the bottom is named (a path of 2,400 characters); 2,100 levels: deeper than a
    path can name (PATH_MAX), the directory is a finding where the walk stopped. Either way the tampered CSV
    is still reported."""
    tamper_csv(pkg)
    fd = os.open(pkg / "evidence", os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        with open(os.open("stray.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as f:
            f.write("planted\n")
    finally:
        os.close(fd)
    try:
        for args in (["verify", pkg], ["replay-gate", "all", "--package", pkg])[: 2 if depth == 1200 else 1]:
            r = invoke(*args, "--json")
            no_bug(r.output)
            assert r.exit_code == 1, r.output
            doc = json.loads(r.output)
            if args[0] == "replay-gate":
                assert any(f["code"] == "input-hash-mismatch" for f in doc["findings"]), doc["counts"]
                continue
            assert any(f["code"] == "file-changed" and f["path"] == TAMPERED for f in doc["findings"])
            if depth == 1200:  # the planted file is named where it is
                stray = "evidence/" + "d/" * depth + "stray.txt"
                assert any(f["path"] == stray for f in doc["findings"]), doc["counts"]
            else:
                deep = [f for f in doc["findings"] if f["code"] == "unsafe-path"]
                assert deep and deep[0]["path"].startswith("evidence/d/d/") and "PATH_MAX" in deep[0]["found"]
    finally:
        _remove_deep(pkg / "evidence", "d")
    assert not (pkg / "evidence" / "d").exists()


def test_a_token_dated_9999_12_31(pkg, tmp_path):
    """A TSA whose certificate runs to 9999-12-31 stamps 23:59:58 with 10 s accuracy: the latest moment the
    token may have been made is past the last date there is. It is a token made after the data."""
    from auditkit.evidence import tsa
    from auditkit.evidence.events import EventLog
    from auditkit.package.manifest import build_manifest

    end = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    pki = make_pki(tmp_path / "pki", "Far", not_before=datetime(2019, 1, 1, tzinfo=timezone.utc), not_after=end)
    rules = "preanalysis/stage1.rules.json"
    with TsaServer(pki, "python", clock=lambda: end.replace(second=58)) as server:
        server.accuracy = 10
        tsa.record_timestamps(pkg, EventLog(pkg), subject=rules, data=(pkg / rules).read_bytes(),
                              urls=[server.url], label="stage1.rules")
    build_manifest(pkg)
    tamper_csv(pkg)
    r = invoke("verify", pkg, "--trusted-tsa", pki.ca_cert, "--json")
    no_bug(r.output)
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output)
    late = [f for f in doc["findings"] if f["code"] == "tsa-token-after-data"]
    assert late and late[0]["path"] == rules and late[0]["location"] == "evidence/timestamps/stage1.rules.0.tsr"
    assert "9999-12-31T23:59:58" in late[0]["found"]
    assert any(f["code"] == "file-changed" and f["path"] == TAMPERED for f in doc["findings"])


def test_latest_time_of_the_last_second_there_is():
    from auditkit.evidence.tsa import TokenInfo

    info = TokenInfo(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc), 1e12, "x", 1, "1.2", "00")
    assert info.latest_time == datetime.max.replace(tzinfo=timezone.utc)


def test_the_net_below_the_checks_names_the_piece(pkg, monkeypatch):
    """Something no check foresaw, in one gate's evidence: a finding at that gate's rules, the rest still checked."""
    from auditkit.evidence import level

    real = level._seeds_bound

    def broken(g, *args):
        if g.gate == "stage1":
            raise TypeError("an input no check foresaw")
        return real(g, *args)

    monkeypatch.setattr(level, "_seeds_bound", broken)
    tamper_csv(pkg)
    r = invoke("verify", pkg, "--json")
    no_bug(r.output)
    assert r.exit_code == 1
    doc = json.loads(r.output)
    net = [f for f in doc["findings"] if f["code"] == "evidence-unchecked"]
    assert [(f["path"], f["location"]) for f in net] == [("preanalysis/stage1.rules.json", "gate stage1")]
    assert "TypeError: an input no check foresaw" in net[0]["found"]
    assert doc["info"]["freeze_evidence"]["stage2"]["level"] == "chained"
    assert any(f["code"] == "file-changed" for f in doc["findings"])


def test_a_carried_key_on_an_unknown_curve_is_skipped(pkg, tmp_path):
    from auditkit.package.manifest import build_manifest

    (pkg / "evidence" / "keys" / ("0" * 64 + ".pub.pem")).write_bytes(unknown_curve_pem())
    build_manifest(pkg)
    r = invoke("verify", pkg)
    no_bug(r.output)
    assert r.exit_code == 0, r.output


# --- 3. DSSE in either base64 alphabet ---------------------------------------------------------------

def urlsafe(text: str, pad: bool) -> str:
    out = text.replace("+", "-").replace("/", "_")
    return out if pad else out.rstrip("=")


@pytest.mark.parametrize("pad", [True, False], ids=["padded", "unpadded"])
def test_a_urlsafe_envelope_keeps_its_signature(pkg, signer_keys, pad):
    from auditkit.package.manifest import build_manifest

    changed = False
    for rel in (DECISION_ENV, "evidence/attestations/stage2.decision.dsse.json", PACKAGE_ENV):
        env = json.loads((pkg / rel).read_text())
        new = dict(env, payload=urlsafe(env["payload"], pad),
                   signatures=[dict(s, sig=urlsafe(s["sig"], pad)) for s in env["signatures"]])
        changed |= new != env
        (pkg / rel).write_text(json.dumps(new))
    assert changed
    build_manifest(pkg)
    keyid = attest.load_public_key(signer_keys[1]).keyid
    r = invoke("verify", pkg, "--trusted-key", signer_keys[1], "--require", "signed", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["info"]["evidence"]["signed_by"] == [keyid]
    assert all(ev["signed_by"] == [keyid] for ev in doc["info"]["freeze_evidence"].values())


def test_dsse_base64_is_strict_about_everything_else():
    from auditkit.evidence.attest import dsse_b64decode

    data = bytes(range(256)) * 3
    std = base64.b64encode(data).decode()
    assert "+" in std and "/" in std
    for text in (std, std.rstrip("="), urlsafe(std, True), urlsafe(std, False)):
        assert dsse_b64decode(text) == data
    mixed = std.replace("+", "-", 1)
    for bad in (mixed, std + "=", "QQ=", "Q", "QQ==QQ==", "Q\u00e9==", " " + std, "QR==", None):
        with pytest.raises(ValueError):
            dsse_b64decode(bad)


# --- 2. a TSA that drips, and broken HTTP from a TSA --------------------------------------------------

class OneShotServer:
    """One HTTP exchange on 127.0.0.1: reads the request, then sends `steps` (bytes), sleeping `pause` s
    after each; it stops by itself after its last step, or when the client hangs up."""

    def __init__(self, steps: list[bytes], pause: float = 0.0):
        self.steps, self.pause = steps, pause
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/tsr"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as f:
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            for step in self.steps:
                try:
                    conn.sendall(step)
                except OSError:
                    return  # the client hung up
                time.sleep(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        self.thread.join(timeout=30)


def drip(head: bytes, body: bytes) -> list[bytes]:
    return [head] + [body[i:i + 1] for i in range(len(body))]


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_dripping_tsa_is_cut_off_by_the_timeout(study, tmp_path, where):
    """40 bytes, one every 0.25 s (10 s in all; each read well inside a 1 s timeout): cut off at 1 s."""
    pkg = tmp_path / "pkg"
    shutil.copytree(study, pkg)
    steps = (drip(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 32) if where == "headers" else
             drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: 40\r\n\r\n",
                  b"0" * 40))
    with OneShotServer(steps, pause=0.25) as server:
        r = invoke("timestamp", pkg, "--tsa", server.url, "--timeout", "1")
    no_bug(r.output)
    assert r.exit_code == 2, r.output
    assert f"{server.url}: the TSA did not answer within 1 s" in r.output
    assert not (pkg / "evidence" / "timestamps").exists()  # nothing recorded for a TSA that failed


def test_the_recorder_passes_its_timeout_to_the_tsa(study, tmp_path):
    from auditkit.evidence.record import Recorder

    pkg = tmp_path / "pkg"
    shutil.copytree(study, pkg)
    with OneShotServer(drip(b"HTTP/1.1 200 OK\r\n", b"X: " + b"a" * 37), pause=0.25) as server:
        rec = Recorder(pkg, tsa_urls=[server.url], timeout=1.0)
        with pytest.raises(AuditError, match="did not answer within 1 s"):
            rec.frozen("stage1", "preanalysis/stage1.rules.json")


def test_protocol_run_has_a_tsa_timeout(tmp_path, monkeypatch):
    from auditkit.study import run as study_run

    seen = {}

    def fake_run(manifest, out, hosts, **kw):
        seen.update(kw)
        return study_run.RunOutcome(True, [], 0, out)

    monkeypatch.setattr(study_run, "run_protocol", fake_run)
    r = invoke("protocol", "run", REPO / "manifests" / "smoke.toml", "--out", tmp_path / "pkg", "--host", "all",
               "--tsa", "http://127.0.0.1:9/tsr", "--tsa-timeout", "2.5")
    assert r.exit_code == 0, r.output
    assert seen["evidence"].timeout == 2.5
    r = invoke("protocol", "run", REPO / "manifests" / "smoke.toml", "--out", tmp_path / "p2", "--host", "all",
               "--tsa", "http://127.0.0.1:9/tsr", "--tsa-timeout", "0")
    assert r.exit_code == 2 and "--tsa-timeout" in r.output


BROKEN_HTTP = {
    "bad-status-line": ([b"HELLO THERE\r\n\r\n"], "not valid HTTP (BadStatusLine"),
    "too-many-headers": ([b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n"],
                         "got more than 100 headers"),
    "truncated-chunk": ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nabc"], "IncompleteRead"),
    "header-line-too-long": ([b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n"], "LineTooLong"),
    "closed-at-once": ([], "Remote end closed connection without response"),
    "escape-in-reason": ([b"HTTP/1.1 500 Oops\x1b[2J\r\nContent-Length: 0\r\n\r\n"], "HTTP 500 Oops?[2J"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_HTTP))
def test_broken_http_from_a_tsa_is_a_clear_exit_2(study, tmp_path, case):
    steps, message = BROKEN_HTTP[case]
    pkg = tmp_path / "pkg"
    shutil.copytree(study, pkg)
    with OneShotServer(steps) as server:
        r = invoke("timestamp", pkg, "--tsa", server.url, "--timeout", "20")
    no_bug(r.output)
    assert r.exit_code == 2, r.output
    assert server.url in r.output and message in r.output and "\x1b" not in r.output


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/tsr", "http://[::1/tsr", "ftp://tsa.example/"])
def test_an_unusable_tsa_url(study, tmp_path, url):
    pkg = tmp_path / "pkg"
    shutil.copytree(study, pkg)
    r = invoke("timestamp", pkg, "--tsa", url, "--timeout", "5")
    no_bug(r.output)
    assert r.exit_code == 2 and "URL" in r.output, r.output


# --- 4. input auditkit cannot use: exit 2, the file named, no "bug" -----------------------------------

def unknown_curve_pem() -> bytes:
    """A P-256 public key whose curve OID is changed to one nobody defines (1.2.840.10045.3.1.99)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    p256 = bytes.fromhex("06082a8648ce3d030107")
    assert p256 in der
    der = der.replace(p256, bytes.fromhex("06082a8648ce3d030163"))
    return b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END PUBLIC KEY-----\n"


def test_a_trusted_key_on_an_unknown_curve(study, tmp_path):
    key = tmp_path / "odd.pub.pem"
    key.write_bytes(unknown_curve_pem())
    r = invoke("verify", study, "--trusted-key", key)
    no_bug(r.output)
    assert r.exit_code == 2 and f"{key}: unsupported key" in r.output and "hint:" in r.output, r.output


@pytest.mark.parametrize("text", ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 900 + "1" + "}" * 900,
                                  "x = " + "[" * 70 + "]" * 70], ids=["arrays-5000", "tables-900", "arrays-70"])
def test_a_deep_profile(study, tmp_path, text):
    prof = tmp_path / "deep.toml"
    prof.write_text(text + "\n")
    r = invoke("verify", study, "--profile", prof)
    no_bug(r.output)
    assert r.exit_code == 2 and f"{prof}: the profile nests arrays or tables deeper than 64 levels" in r.output


def test_a_deep_claims_file(study, tmp_path):
    claims = tmp_path / "claims.json"
    claims.write_text('{"claims": ' + "[" * 100_000 + "]" * 100_000 + "}")
    r = invoke("claims", "--package", study, "--claims", claims)
    no_bug(r.output)
    assert r.exit_code == 2 and f"{claims}: cannot read the claims file: nested deeper than 64 levels" in r.output


def rules_array(src: Path) -> str:
    (src / "preanalysis" / "stage1.rules.json").write_text("[1, 2]\n")
    return "not a JSON object with a frozen_at string"


def rules_duplicate_key(src: Path) -> str:
    (src / "preanalysis" / "stage1.rules.json").write_text('{"frozen_at": "x", "a": 1, "a": 2}\n')
    return "key 'a' appears twice"


def csv_latin1(src: Path) -> str:
    (src / TAMPERED).write_bytes("run_id,val_bpb\nr\u00e9,1.5\n".encode("latin-1"))
    return "not UTF-8 text (invalid byte at offset"


def csv_without_run_id(src: Path) -> str:
    (src / TAMPERED).write_text("a,val_bpb\nr,1.5\n")
    return "a run CSV without a run_id column cannot be merged"


@pytest.mark.parametrize("plant", [rules_array, rules_duplicate_key, csv_latin1, csv_without_run_id],
                         ids=lambda f: f.__name__)
def test_protocol_merge_refuses_what_it_cannot_read(study, tmp_path, plant):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(study, a)
    shutil.copytree(study, b)
    message = plant(b)
    r = invoke("protocol", "merge", a, b, "--into", tmp_path / "out")
    no_bug(r.output)
    assert r.exit_code == 2, r.output
    assert message in r.output and "nothing was merged" in r.output and str(b) in r.output
    assert not (tmp_path / "out").exists()


# --- 5. package text cannot forge output ----------------------------------------------------------------

def test_printable():
    from auditkit.text import md_code, md_text, printable

    assert printable("plain text, ünïcode") == "plain text, ünïcode"
    assert printable("a\rb\nc\td\x1b[2Je\u202ef\x00") == "a\\rb\\nc\\td\\x1b[2Je\\u202ef\\x00"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"          # a byte of a non-UTF-8 name
    assert printable("\U000e0001") == "\\U000e0001"
    assert md_text("<script>x</script> *a* [l](u) |") == "&lt;script&gt;x&lt;/script&gt; \\*a\\* \\[l\\](u) \\|"
    assert md_code("a`b``c") == "```a`b``c```" and md_code("`x") == "`` `x ``" and md_code("a|b") == "`a\\|b`"


@pytest.fixture
def forged(pkg):
    """The protocol name forges an 'Overall: OK' line and carries a script; a claim carries an img onerror."""
    proto = json.loads((pkg / "protocol.json").read_text())
    proto["name"] = "evil\n\n**Overall: OK**\n<script>alert(1)</script>"
    (pkg / "protocol.json").write_text(json.dumps(proto, indent=2))
    # a study's own statements are observations.json; as claims.json they are claims the report decides
    src = pkg / "claims.json" if (pkg / "claims.json").exists() else pkg / "observations.json"
    claims = json.loads(src.read_text())
    claims["claims"][0]["statement"] = "<img src=x onerror=alert(1)> `tick` | pipe \x1b[2J\r"
    (pkg / "claims.json").write_text(json.dumps(claims, indent=2))
    return pkg


def test_the_markdown_report_escapes_package_text(forged, tmp_path):
    out = tmp_path / "r.md"
    r = invoke("report", forged, "--out", out, "--format", "md", "--no-figures")
    no_bug(r.output)
    assert r.exit_code == 1, r.output  # the package changed after its MANIFEST
    text = out.read_text()
    assert "<script" not in text and "<img" not in text and "\x1b" not in text and "\r" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    overall = [line for line in text.splitlines() if "Overall:" in line]
    assert overall[0].startswith("# auditkit report: evil") and overall[1] == "**Overall: FAILED**"
    assert len(overall) == 2


def test_the_html_report_escapes_package_text(forged, tmp_path):
    out = tmp_path / "r.html"
    r = invoke("report", forged, "--out", out, "--no-figures")
    no_bug(r.output)
    text = out.read_text()
    assert "<script" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_file_name_cannot_drive_the_terminal(pkg):
    (pkg / "analysis" / "x\r\x1b[2KOK: verify passed\nOK").write_text("planted\n")
    r = invoke("verify", pkg)
    assert r.exit_code == 1
    assert "\r" not in r.output and "\x1b" not in r.output
    assert "analysis/x\\r\\x1b[2KOK: verify passed\\nOK" in r.output
    assert not any(line.startswith("OK") for line in r.output.splitlines())


def test_an_error_message_is_one_line_per_part():
    err = AuditError("bad\rthing\x1b[31m", path="dir/with\nnewline", hint="try\x07again")
    assert err.diagnostics() == "error: dir/with\\nnewline: bad\\rthing\\x1b[31m\n  hint: try\\x07again"


# --- more of the same class: tokens that do not parse, evidence paths that are not folders ----------------

def test_a_damaged_token_is_invalid_never_an_exception(tmp_path):
    """300 seeded mutations of a good token (bytes changed, or cut short): each is checked, none raises
    (the parsers raise ValueError, TypeError, KeyError, InvalidVersion... on such input)."""
    import random

    from cryptography import x509

    from auditkit.evidence import tsa

    pki = make_pki(tmp_path / "pki", "Fuzz")
    with TsaServer(pki, "python") as server:
        token = tsa.request_token(server.url, b"hello", 20)
    digest = hashlib.sha256(b"hello").hexdigest()
    roots = x509.load_pem_x509_certificates(pki.ca_cert.read_bytes())
    rnd = random.Random(20)
    statuses = set()
    for i in range(300):
        b = bytearray(token)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        if i % 5 == 0:
            b = b[: rnd.randrange(len(b))]
        check = tsa.check_token(bytes(b), digest, roots if i % 2 else [], [])
        statuses.add(check.status)
        assert check.status is not tsa.TokenStatus.INVALID or check.detail
    assert tsa.TokenStatus.INVALID in statuses


def test_timestamp_refuses_an_evidence_path_that_is_not_a_folder_before_asking(study, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(study, pkg)
    shutil.rmtree(pkg / "evidence")
    (pkg / "evidence").write_text("not a folder\n")
    pki = make_pki(tmp_path / "pki", "T")
    with TsaServer(pki, "python") as server:
        r = invoke("timestamp", pkg, "--tsa", server.url)
        assert server.requests == 0
    no_bug(r.output)
    assert r.exit_code == 2 and "evidence is not a directory" in r.output


def test_the_event_log_is_never_written_through_a_link(pkg, tmp_path):
    from auditkit.evidence.events import EventLog

    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(b"")
    (pkg / "evidence" / "events.jsonl").unlink()
    (pkg / "evidence" / "events.jsonl").symlink_to(outside)
    with pytest.raises(AuditError, match="cannot open the event log"):
        EventLog(pkg).append("package-finalized", root="0" * 64)
    shutil.move(pkg / "evidence", tmp_path / "elsewhere")
    (pkg / "evidence").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AuditError, match="evidence is not a directory of the package"):
        EventLog(pkg).append("package-finalized", root="0" * 64)
    assert outside.read_bytes() == b""


@pytest.mark.parametrize("option", ["--trusted-key", "--trusted-tsa"])
def test_a_fifo_named_as_a_trust_file_is_refused_not_waited_on(study, tmp_path, option):
    fifo = tmp_path / "trust.pem"
    os.mkfifo(fifo)
    r = invoke("verify", study, option, fifo)
    no_bug(r.output)
    assert r.exit_code == 2 and f"{fifo}: the " in r.output and "is not a regular file" in r.output


# --- an --out the report cannot write is refused before the work -------------------------------------

@pytest.fixture
def no_build(monkeypatch):
    """build_report, made to fail the test if it is ever reached."""
    from auditkit.report import build

    def must_not_run(*a, **kw):
        raise AssertionError("the report was built before its --out was checked")

    monkeypatch.setattr(build, "build_report", must_not_run)


def test_a_fifo_out_is_refused_even_with_force(study, tmp_path, no_build):
    fifo = tmp_path / "r.html"
    os.mkfifo(fifo)
    r = invoke("report", study, "--out", fifo, "--force")
    no_bug(r.output)
    assert r.exit_code == 2 and f"{fifo}: --out is a FIFO" in r.output
    assert stat_is_fifo(fifo)  # what the user had is still there


def stat_is_fifo(p: Path) -> bool:
    import stat

    return stat.S_ISFIFO(os.lstat(p).st_mode)


@pytest.mark.parametrize("out", ["/proc/auditkit-report.html", "/proc/no-such-dir/report.html"])
def test_an_out_in_a_directory_that_cannot_be_written(study, out, no_build):
    r = invoke("report", study, "--out", out)
    no_bug(r.output)
    assert r.exit_code == 2 and f"{out}: cannot write in /proc" in r.output and "hint:" in r.output


def test_an_out_whose_parent_is_a_file(study, tmp_path, no_build):
    (tmp_path / "file").write_text("x\n")
    r = invoke("report", study, "--out", tmp_path / "file" / "r.html")
    no_bug(r.output)
    assert r.exit_code == 2 and "cannot use this --out: Not a directory" in r.output
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # no probe left behind


def test_claims_and_replay_text_carry_no_terminal_control(forged):
    r = invoke("claims", "--package", forged)
    assert r.exit_code in (0, 1), r.output
    assert "\x1b" not in r.output and "\r" not in r.output
    assert "&lt;" not in r.output and "<img src=x onerror=alert(1)> `tick` | pipe \\x1b[2J\\r" in r.output
    rules = forged / "preanalysis" / "stage1.rules.json"
    doc = json.loads(rules.read_text())
    doc["promote"]["always_keep"] = ["bridge\r\x1b[2KOK"]
    rules.write_text(json.dumps(doc))
    r = invoke("replay-gate", "stage1", "--package", forged)
    no_bug(r.output)
    assert "\x1b" not in r.output and "\r" not in r.output


@pytest.mark.parametrize("target", ["fifo", "/dev/zero"])
def test_a_profile_that_is_not_a_regular_file(study, tmp_path, target):
    """A FIFO would block the read, /dev/zero would fill memory: both are refused at once."""
    path = tmp_path / "p.toml" if target == "fifo" else Path(target)
    if target == "fifo":
        os.mkfifo(path)
    r = invoke("verify", study, "--profile", path)
    no_bug(r.output)
    assert r.exit_code == 2 and f"{path}: the profile is not a regular file" in r.output


def test_profile_draft_out_is_checked_before_the_work(study, tmp_path, monkeypatch):
    from auditkit.profile import draft

    monkeypatch.setattr(draft, "draft_profile", lambda *a: pytest.fail("drafted before --out was checked"))
    fifo = tmp_path / "draft.toml"
    os.mkfifo(fifo)
    for out, message in ((fifo, "--out is a FIFO"), ("/proc/draft.toml", "cannot write in /proc")):
        r = invoke("profile", "draft", study, "--out", out, "--force")
        no_bug(r.output)
        assert r.exit_code == 2 and f"{out}: {message}" in r.output
    assert stat_is_fifo(fifo)


def test_a_gate_whose_rules_leave_the_package_gets_no_evidence_finding_outside_it(pkg):
    proto = json.loads((pkg / "protocol.json").read_text())
    proto["gates"][0]["rules"] = "../../etc/passwd"
    proto["gates"][1]["gate"] = "../../x"
    (pkg / "protocol.json").write_text(json.dumps(proto, indent=2))
    r = invoke("verify", pkg, "--require", "chained", "--json")
    no_bug(r.output)
    assert r.exit_code == 1
    doc = json.loads(r.output)
    assert doc["counts"].get("schema-invalid") == 2   # verify names the protocol's defect
    evidence = [f for f in doc["findings"] if f["code"].startswith(("evidence-", "rules-", "tsa-", "attestation-"))
                and f["path"] != "protocol.json"]
    assert evidence == []   # and no evidence finding points outside the package
