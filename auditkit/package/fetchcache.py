"""The fetch cache and what one fetch may cost: `Limits` (bytes, seconds, workers; from the
environment) and `Cache`, content-addressed (a blob is kept only under its checked sha256), with
the index of what each URL served last.  Nothing is written outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.atomic import atomic_write_text, rename


def _env_num(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AuditError(f"{name} must be a number", hint=f"unset it or give a number such as {default:g}") from None
    if value <= 0:
        raise AuditError(f"{name} must be positive", hint=f"unset it or give a number such as {default:g}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one fetch may cost. Bytes are per file, per package and per MANIFEST; seconds are per read
    (`timeout`) and per file (`deadline` plus one second per MiB the file declares)."""

    file_bytes: int = 64 << 30
    total_bytes: int = 256 << 30
    doc_bytes: int = 64 << 20
    redirects: int = 5
    timeout: float = 30.0
    deadline: float = 300.0
    workers: int = 4

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(file_bytes=int(_env_num("AUDITKIT_REMOTE_MAX_FILE", d.file_bytes)),
                   total_bytes=int(_env_num("AUDITKIT_REMOTE_MAX_TOTAL", d.total_bytes)),
                   doc_bytes=int(_env_num("AUDITKIT_REMOTE_MAX_DOC", d.doc_bytes)),
                   timeout=_env_num("AUDITKIT_REMOTE_TIMEOUT", d.timeout),
                   deadline=_env_num("AUDITKIT_REMOTE_DEADLINE", d.deadline))

    def file_deadline(self, size: int | None) -> float:
        return self.deadline + (size or 0) / (1 << 20)


def cache_dir() -> Path:
    """AUDITKIT_CACHE_DIR, else $XDG_CACHE_HOME/auditkit, else ~/.cache/auditkit."""
    explicit = os.environ.get("AUDITKIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditkit"


class Cache:
    """Content-addressed: `blobs/sha256/ab/<sha256>` (a file is there only once its hash was checked),
    `refs/<sha256 of the redacted URL>.json` (what a URL served last), `work/` (temporaries)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir()
        try:
            for d in ("blobs/sha256", "refs", "work"):
                (self.root / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AuditError(f"cannot use the cache directory: {exc.strerror}", path=str(self.root),
                             hint="set AUDITKIT_CACHE_DIR to a directory you can write") from None

    def blob(self, sha: str) -> Path:
        return self.root / "blobs" / "sha256" / sha[:2] / sha

    def has(self, sha: str, size: int | None = None) -> bool:
        p = self.blob(sha)
        try:
            st = os.lstat(p)
        except OSError:
            return False
        return st.st_mode & 0o170000 == 0o100000 and (size is None or st.st_size == size)

    def temporary(self):
        fd, name = tempfile.mkstemp(dir=self.root / "work", prefix="fetch-")
        return os.fdopen(fd, "wb"), Path(name)

    def keep(self, tmp: Path, sha: str) -> Path:
        dest = self.blob(sha)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(tmp, 0o444)
        rename(tmp, dest)
        return dest

    def ref_path(self, url: str) -> Path:
        return self.root / "refs" / (hashlib.sha256(url.encode("utf-8")).hexdigest() + ".json")

    def read_ref(self, url: str) -> dict | None:
        try:
            doc = json.loads(self.ref_path(url).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def write_ref(self, url: str, doc: dict) -> None:
        atomic_write_text(self.ref_path(url), json.dumps({"url": url, **doc}, indent=2, sort_keys=True) + "\n")

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root / "work", prefix="tree-"))
