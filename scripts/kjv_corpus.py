"""Write the King James Bible as plain text, one chapter a paragraph (a runner document).

    python scripts/kjv_corpus.py OUT.txt

Source: Debian's `bible-kjv` and `bible-kjv-text` packages (public domain text;
`apt-get install bible-kjv`), read with their `bible` program, so anyone can
rebuild the same bytes offline; the sha256 of the output is checked against
EXPECTED_SHA256 (the text of bible-kjv-text 4.38) and printed.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

EXPECTED_SHA256 = "5f516b7ea6167d4bbb3c67b0a8f3dca10b2b8e1df7f8ccac05052daa610e2d67"  # bible-kjv-text 4.38


def chapters(raw: str) -> list[str]:
    """'Genesis 1' headings and their verses -> one paragraph per chapter, verse numbers dropped."""
    out, title, verses = [], None, []
    for line in raw.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^\s+\d+\s+(.*)$", line)
        if m:
            verses.append(m.group(1).strip())
        elif re.match(r"^[1-3]?\s?[A-Z][A-Za-z ]+ \d+$", line.strip()):
            if title and verses:
                out.append(title + "\n" + "\n".join(verses))
            title, verses = line.strip(), []
        elif verses:
            verses[-1] += " " + line.strip()  # a verse wrapped onto the next line
    if title and verses:
        out.append(title + "\n" + "\n".join(verses))
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    if not shutil.which("bible"):
        print("error: no `bible` program: apt-get install bible-kjv", file=sys.stderr)
        return 2
    raw = subprocess.run(["bible", "-l", "100000", "gen1:1-rev22:21"], capture_output=True, text=True,
                         check=True).stdout
    text = "\n\n".join(chapters(raw)) + "\n"
    data = text.encode("utf-8")
    digest = hashlib.sha256(data).hexdigest()
    if EXPECTED_SHA256 and digest != EXPECTED_SHA256:
        print(f"error: sha256 {digest} is not the expected {EXPECTED_SHA256} (another bible-kjv version?)",
              file=sys.stderr)
        return 1
    Path(argv[0]).write_bytes(data)
    print(f"{argv[0]}: {len(data)} bytes, {text.count(chr(10) + chr(10)) + 1} chapters, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
