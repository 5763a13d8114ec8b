"""Run seeds derived from a freeze token: data that provably came after the anchor.

For a stage whose seeds are anchored, the run of cell (stage, seed n) trains
with the random seed

    anchored_seed(A, stage, n) = first 31 bits of sha256(A || utf8(stage) || u64be(n))

where A is the 32-byte sha256 of the stored token file (the TSA's
TimeStampResp, DER, as `evidence/timestamps/*.tsr` holds it), `utf8(stage)` the
stage slug's UTF-8 bytes and `u64be(n)` the nominal seed `n` (the protocol's
seed, the row's `seed` column, 0 <= n < 2**64) as 8 bytes big-endian. "First 31
bits" is the first 4 bytes of the digest read big-endian, shifted right by one,
so the seed is in [0, 2**31) and fits every framework's seed argument. The
index has a fixed width, so no two (stage, n) pairs give the same message.

The row keeps the nominal seed in `seed` (cells and rules are unchanged) and
records the derived one in the extra column `rng_seed`. The token's signature
makes A unpredictable before the TSA answered, so a run trained with that seed
cannot have been started before the token existed — as far as the run is a
function of its seed, which a reviewer confirms by re-running a cell (see the
README for the argument and its limits).
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from auditkit.findings import Finding

SEED_COLUMN = "rng_seed"


def anchored_seed(anchor_sha256: str, stage: str, index: int) -> int:
    """The random seed of (stage, nominal seed `index`) under the anchor (hex sha256 of the token file)."""
    anchor = bytes.fromhex(anchor_sha256)
    if len(anchor) != 32:
        raise ValueError("the anchor is a sha256 digest (64 hex digits)")
    if not 0 <= index < 2 ** 64:
        raise ValueError(f"seed {index} is outside 0 .. 2**64-1")
    msg = anchor + stage.encode("utf-8") + index.to_bytes(8, "big")
    return int.from_bytes(hashlib.sha256(msg).digest()[:4], "big") >> 1


def seed_findings(anchor_sha256: str, stage: str, rows: Iterable[tuple[str, int, dict]]) -> list[Finding]:
    """`seed-not-from-anchor` for every row of `stage` whose `rng_seed` is not the one the anchor gives.

    `rows`: (CSV path, 1-based row number, row as strings). Rows of other stages are ignored.
    """
    out = []
    for path, i, row in rows:
        if row.get("stage") != stage:
            continue
        got = (row.get(SEED_COLUMN) or "").strip()
        try:
            want = str(anchored_seed(anchor_sha256, stage, int(row.get("seed", ""))))
        except ValueError:
            want = "a seed derived from the anchor (the row's seed is not an integer)"
        if got != want:
            out.append(Finding(path, "seed-not-from-anchor", f"row {i}, column {SEED_COLUMN}", want, got or "empty",
                               f"stage {stage}'s seeds are derived from its freeze token; this run's is not"))
    return out
