"""Throw-away PKI and RFC 3161 timestamp authorities for the evidence tests.

- `make_pki(dir, name)`: a self-signed CA and a TSA certificate it issues
  (ECDSA P-256, critical extendedKeyUsage timeStamping), written as PEM files.
- `TsaServer`: answers RFC 3161 requests over HTTP on 127.0.0.1 (a thread
  running `http.server`). Backend `openssl` runs `openssl ts -reply` with a
  config file (the reference implementation; its clock is the machine's);
  backend `python` builds the response with asn1crypto and signs it with
  `cryptography`, with a clock the test sets (for "a TSA with a made-up clock",
  which `openssl ts` cannot fake). Both are checked against `openssl ts -verify`.
- `signing_key(dir, kind)`: an Ed25519 or ECDSA P-256 PEM key pair.

Everything is written under the directory the test gives (pytest's tmp_path);
`TsaServer` is a context manager that shuts its thread down.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Pki:
    dir: Path
    ca_cert: Path       # self-signed root (what a reviewer would trust)
    ca_key: Path
    tsa_cert: Path      # the TSA's signing certificate, issued by the root
    tsa_key: Path
    chain: Path         # tsa_cert + ca_cert, PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "auditkit tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(dir: Path, name: str = "Test", not_before: datetime | None = None) -> Pki:
    """A root CA and a TSA certificate valid from `not_before` (default: a day ago) for ten years."""
    dir.mkdir(parents=True, exist_ok=True)
    start = not_before or datetime.now(timezone.utc) - timedelta(days=1)
    end = start + timedelta(days=3650)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(f"{name} Root CA")).issuer_name(_name(f"{name} Root CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    tsa = (x509.CertificateBuilder().subject_name(_name(f"{name} TSA")).issuer_name(ca.subject)
           .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(start).not_valid_after(end)
           .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
           .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                        data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                        crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
           .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
           .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
           .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
           .sign(ca_key, hashes.SHA256()))
    pki = Pki(dir, dir / "ca.pem", dir / "ca.key", dir / "tsa.pem", dir / "tsa.key", dir / "chain.pem")
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.ca_key.write_bytes(_pem_key(ca_key))
    pki.tsa_cert.write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    pki.tsa_key.write_bytes(_pem_key(tsa_key))
    pki.chain.write_bytes(pki.tsa_cert.read_bytes() + pki.ca_cert.read_bytes())
    return pki


OPENSSL_TS_CONF = """\
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
digests = sha256, sha384, sha512
clock_precision_digits = 6
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def openssl_reply(pki: Pki, request: bytes) -> bytes:
    """A TimeStampResp for `request` from `openssl ts -reply` (the machine's clock)."""
    conf = pki.dir / "ts.cnf"
    if not conf.exists():
        conf.write_text(OPENSSL_TS_CONF.format(dir=pki.dir))
        (pki.dir / "serial").write_text("01\n")
    done = subprocess.run(["openssl", "ts", "-reply", "-config", str(conf), "-queryfile", "/dev/stdin",
                           "-out", "/dev/stdout"], input=request, capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl ts -reply failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def python_reply(pki: Pki, request: bytes, now: datetime, serial: int) -> bytes:
    """A TimeStampResp for `request` with genTime `now`, built with asn1crypto, signed with `cryptography`."""
    from asn1crypto import algos, cms, core, tsp
    from asn1crypto import x509 as ax509

    req = tsp.TimeStampReq.load(request)
    cert_der = x509.load_pem_x509_certificate(pki.tsa_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    ca_der = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    signer = ax509.Certificate.load(cert_der)
    info = {
        "version": "v1", "policy": "1.3.6.1.4.1.99999.1", "message_imprint": req["message_imprint"],
        "serial_number": serial, "gen_time": now.astimezone(timezone.utc), "ordering": False,
        "tsa": ax509.GeneralName(name="directory_name", value=signer.subject),
    }
    if req["nonce"].native is not None:
        info["nonce"] = req["nonce"]
    tst = tsp.TSTInfo(info)
    tst_der = tst.dump()
    sha = algos.DigestAlgorithm({"algorithm": "sha256"})
    ess = tsp.SigningCertificateV2({"certs": [{"hash_algorithm": sha, "cert_hash": hashlib.sha256(cert_der).digest(),
                                               "issuer_serial": {"issuer": [ax509.GeneralName(
                                                   name="directory_name", value=signer.issuer)],
                                                   "serial_number": signer.serial_number}}]})
    attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
        cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": now})]}),
        cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]}),
        cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}),
    ])
    key = serialization.load_pem_private_key(pki.tsa_key.read_bytes(), None)
    signature = key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256()))  # signed over the SET OF encoding
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value={
            "issuer": signer.issuer, "serial_number": signer.serial_number}),
        "digest_algorithm": sha, "signed_attrs": attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
        "signature": signature,
    })
    certs = [cms.CertificateChoices(name="certificate", value=signer)]
    if req["cert_req"].native:
        certs.append(cms.CertificateChoices(name="certificate", value=ax509.Certificate.load(ca_der)))
    signed = cms.SignedData({
        "version": "v3", "digest_algorithms": [sha],
        "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(tst_der)},
        "certificates": certs if req["cert_req"].native else None, "signer_infos": [signer_info],
    })
    token = cms.ContentInfo({"content_type": "signed_data", "content": signed})
    return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()


class TsaServer:
    """An RFC 3161 TSA on http://127.0.0.1:<port>/ for the length of a `with` block.

    `backend`: "openssl" or "python"; `clock` (python backend only): the genTime
    to stamp. `mode` can be set to "http-500", "garbage" or "rejection" to test
    what a client does with a failing TSA. `requests` counts the requests served.
    """

    def __init__(self, pki: Pki, backend: str = "openssl", clock: Callable[[], datetime] | None = None):
        if backend not in ("openssl", "python"):
            raise ValueError(backend)
        self.pki = pki
        self.backend = backend
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.mode = "ok"
        self.requests = 0
        self._serial = 0
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/tsa"

    def answer(self, request: bytes) -> bytes:
        with self._lock:
            self.requests += 1
            self._serial += 1
            serial = self._serial
        if self.mode == "rejection":
            from asn1crypto import tsp
            status = tsp.PKIStatusInfo({"status": "rejection", "status_string": ["bad request"]}).dump()
            return b"\x30" + bytes([len(status)]) + status  # TimeStampResp without a token (short form length)
        if self.mode == "garbage":
            return b"this is not DER"
        if self.backend == "openssl":
            return openssl_reply(self.pki, request)
        return python_reply(self.pki, request, self.clock(), serial)

    def __enter__(self) -> "TsaServer":
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if server.mode == "http-500" or self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(500 if server.mode == "http-500" else 415)
                    return
                reply = server.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):  # keep test output clean
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-tsa", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def signing_key(dir: Path, kind: str = "ed25519", name: str = "key") -> tuple[Path, Path]:
    """(private PEM, public PEM) of a new Ed25519 or ECDSA P-256 key, written under `dir`."""
    dir.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    priv, pub = dir / f"{name}.pem", dir / f"{name}.pub.pem"
    priv.write_bytes(_pem_key(key))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


# --- a small package with evidence, written the way the protocol runner writes one ---------------

GATE = "g1"
RULES = "preanalysis/g1.rules.json"
DECISION = "analysis/g1_decision.json"
STAGE = "s1"
HOSTS = ("alpha", "beta")
SEEDS = (1, 2)
CONFIGS = ("bridge", "greedy")


def csv_path(host: str) -> str:
    return f"remote-results/{host}_{STAGE}_summary.csv"


def write_rows(root: Path, rel: str, rows: list[dict]) -> None:
    from auditkit.rows import write_csv_text

    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(write_csv_text(list(rows[0]), rows), encoding="utf-8")


def build_package(root: Path, *, tsa_urls=(), signers=(), anchored: bool = False):
    """A one-gate package under `root` with an event log (and tokens, attestations, anchored seeds as asked).

    Returns the gate's `level.GateRef`.
    """
    import json

    from auditkit.evidence.canonical import sha256_hex, utc_now
    from auditkit.evidence.level import GateRef
    from auditkit.evidence.record import Recorder, seed_for
    from auditkit.rows import RUN_COLUMNS

    root.mkdir(parents=True, exist_ok=True)
    rules = {"schema": "auditkit/rules/v1", "gate": GATE, "frozen_at": utc_now(),
             "inputs": {"stages": [STAGE], "hosts": list(HOSTS), "seeds": list(SEEDS), "candidates": list(CONFIGS)},
             "metric": {"column": "val_bpb", "better": "lower"}, "promote": {"top_k": 1, "always_keep": []},
             "checks": []}
    (root / RULES).parent.mkdir(parents=True, exist_ok=True)
    (root / RULES).write_text(json.dumps(rules, indent=2, sort_keys=True) + "\n")
    rec = Recorder(root, tsa_urls=tsa_urls, signers=signers)
    rec.frozen(GATE, RULES)
    anchor = rec.anchor_seeds(STAGE, RULES) if anchored else None
    for host in HOSTS:
        rows = []
        for cid in CONFIGS:
            for seed in SEEDS:
                run_id = f"{host}-{STAGE}-{cid}-s{seed}"
                rec.cell_started(run_id, host, STAGE, cid, seed)
                row = {k: "" for k in RUN_COLUMNS}
                row.update(run_id=run_id, host=host, stage=STAGE, seed=str(seed), config_id=cid, status="ok",
                           val_bpb=f"{1.5 + 0.01 * seed + (0.02 if cid == 'greedy' else 0):.6f}",
                           started_at=utc_now(), finished_at=utc_now())
                row["rng_seed"] = str(seed_for(anchor, STAGE, seed)) if anchor else ""
                rows.append(row)
                write_rows(root, csv_path(host), rows)
                rec.row_landed(run_id, csv_path(host), row)
    inputs = [{"path": csv_path(h), "sha256": sha256_hex((root / csv_path(h)).read_bytes())} for h in HOSTS]
    decision = {"schema": "auditkit/decision/v1", "gate": GATE,
                "rules": {"path": RULES, "sha256": sha256_hex((root / RULES).read_bytes())},
                "inputs": inputs, "promoted": ["bridge"], "decided_at": utc_now()}
    (root / DECISION).parent.mkdir(parents=True, exist_ok=True)
    (root / DECISION).write_text(json.dumps(decision, indent=2, sort_keys=True) + "\n")
    rec.decided(GATE, DECISION)
    rec.finalized()
    return GateRef(GATE, RULES, DECISION, tuple(csv_path(h) for h in HOSTS), rules["frozen_at"])


def rewrite_log(root: Path, edit) -> None:
    """Forge the event log: `edit(list of event dicts)` changes it, then every seq and prev is recomputed."""
    import json

    from auditkit.evidence import EVENTS_PATH
    from auditkit.evidence.canonical import sha256_hex
    from auditkit.evidence.events import COMMON_FIELDS, GENESIS, event_line

    path = root / EVENTS_PATH
    docs = [json.loads(line) for line in path.read_bytes().splitlines()]
    docs = edit(docs) or docs
    prev, out = GENESIS, []
    for seq, d in enumerate(docs):
        line = event_line(seq, prev, d["time"], d["type"], {k: v for k, v in d.items() if k not in COMMON_FIELDS})
        out.append(line)
        prev = sha256_hex(line)
    path.write_bytes(b"".join(x + b"\n" for x in out))


# --- pytest fixtures (import them by name into a test module) ------------------------------------

@pytest.fixture(scope="module")
def good_pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("good-pki"), "Good")


@pytest.fixture(scope="module")
def rogue_pki(tmp_path_factory) -> Pki:
    """A CA nobody trusts, valid since 2019: its TSA can claim any time since then."""
    return make_pki(tmp_path_factory.mktemp("rogue-pki"), "Rogue", not_before=datetime(2019, 1, 1, tzinfo=timezone.utc))


@pytest.fixture(scope="module")
def tsa_server(good_pki):
    with TsaServer(good_pki, "openssl") as server:
        yield server


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("keys")
    return {"trusted": signing_key(d, "ed25519", "trusted"), "trusted-ec": signing_key(d, "ecdsa", "trusted-ec"),
            "other": signing_key(d, "ed25519", "other")}


@pytest.fixture(scope="module")
def evidence_package(tmp_path_factory, tsa_server, keys):
    """(package dir, GateRef): timestamped, signed by keys['trusted'], seeds anchored. Copy before changing."""
    from auditkit.evidence.attest import load_signer

    root = tmp_path_factory.mktemp("evidence-pkg") / "pkg"
    gate = build_package(root, tsa_urls=[tsa_server.url], signers=[load_signer(keys["trusted"][0])], anchored=True)
    return root, gate


@pytest.fixture
def package_copy(evidence_package, tmp_path):
    import shutil

    root, gate = evidence_package
    dest = tmp_path / "pkg"
    shutil.copytree(root, dest)
    return dest, gate
