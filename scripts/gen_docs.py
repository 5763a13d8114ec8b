"""Regenerate what the docs show from the code and the shipped package, or check it is current.

    python scripts/gen_docs.py            # rewrite docs/CLI.md and every example block
    python scripts/gen_docs.py --check    # exit 1 naming each stale page (tests/test_docs.py runs this)

Two kinds of generated text:

- `docs/CLI.md`: every command's `--help` (auditkit/cli/reference.py).
- example blocks in README.md and docs/**/*.md: a marker line

      <!-- example: auditkit verify ancillary/ -->

  followed by a ```text block. The block is the shell command (`$ ...`) and what it printed
  (stdout then stderr, as a terminal shows them when nothing else is written), run with bash in
  a scratch directory that holds a fresh copy of the shipped `ancillary/` (so an example may
  edit the copy first: `echo x >> ancillary/README.txt; auditkit verify ancillary/`). `auditkit`
  there is this checkout's. A marker may give `lines=N` (`<!-- example lines=12: ... -->`) to
  keep the first N lines and a `...` line, for long outputs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI_PAGE = REPO / "docs" / "CLI.md"   # also written by `python -m auditkit.cli.reference`
MARKER = re.compile(r"^<!-- example(?: lines=(\d+))?: (.+?) -->\n```text\n.*?^```\n", re.M | re.S)


def doc_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def cli_reference() -> str:
    from auditkit.cli.reference import render_markdown

    return render_markdown()


def run_example(command: str, work: Path, keep: int | None) -> str:
    shutil.rmtree(work / "ancillary", ignore_errors=True)   # only the copy this script made
    shutil.copytree(REPO / "ancillary", work / "ancillary", symlinks=True)
    (work / "docs").mkdir(exist_ok=True)       # the authors' public key, as the docs name it
    shutil.copy2(REPO / "docs" / "ancillary-signer.pub.pem", work / "docs" / "ancillary-signer.pub.pem")
    bindir = work / "bin"
    bindir.mkdir(exist_ok=True)
    shim = bindir / "auditkit"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m auditkit "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "NO_COLOR": "1",
           "COLUMNS": "100", "TMPDIR": str(work)}
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    lines = (proc.stdout + proc.stderr).rstrip("\n").splitlines()
    if keep is not None and len(lines) > keep:
        lines = lines[:keep] + ["..."]
    return "\n".join([f"$ {command}", *lines]) + "\n"


def render(text: str, work: Path) -> str:
    def one(m: re.Match) -> str:
        keep = int(m.group(1)) if m.group(1) else None
        head = m.group(0).split("\n", 1)[0]
        return f"{head}\n```text\n{run_example(m.group(2), work, keep)}```\n"
    return MARKER.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page is stale")
    args = ap.parse_args(argv)
    stale = []
    with tempfile.TemporaryDirectory(prefix="gen-docs-") as tmp:
        wanted = {CLI_PAGE: cli_reference()}
        for page in doc_pages():
            text = page.read_text(encoding="utf-8")
            if MARKER.search(text):
                wanted[page] = render(text, Path(tmp))
        for page, text in wanted.items():
            have = page.read_text(encoding="utf-8") if page.exists() else None
            if have != text:
                stale.append(page.relative_to(REPO))
                if not args.check:
                    page.parent.mkdir(parents=True, exist_ok=True)
                    tmp_page = page.with_name(f".{page.name}.tmp")
                    tmp_page.write_text(text, encoding="utf-8")
                    os.replace(tmp_page, page)
    for page in stale:
        print(f"{page}: {'stale: run python scripts/gen_docs.py' if args.check else 'rewritten'}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
