"""How sure is a gate's comparison?  Paired differences of val_bpb on the same evaluation windows.

    python scripts/paired_se.py ancillary [--reference bridge]

Each kept checkpoint of the package is re-scored (as `verify --deep` does, from the corpus the
package carries, read through the store) window by window.  For every cell (host, seed) of a
stage that kept checkpoints, and every candidate beside the reference, it prints the
difference of val_bpb (candidate - reference) and its standard error over the windows,
next to each score's own standard error: all candidates are scored on the same bytes, so
most of a score's sampling noise is shared and cancels in the difference the rules compare.
Needs the runner extra (torch).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import defaultdict


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("--reference", default="bridge")
    a = ap.parse_args(argv)

    import torch
    from safetensors.torch import load

    from auditkit.package.store import PackageStore
    from auditkit.runner.evaluation import bpb_and_se, window_nats
    from auditkit.runner.model import GPT
    from auditkit.runner.train import eval_set_for
    from auditkit.verify.deep import checkpoint_metadata, package_data_reader

    store = PackageStore(a.package)
    files = {e["path"] for e in store.read_json("MANIFEST.json")["files"]}
    read = package_data_reader(a.package, files)
    rows = []
    for rel in sorted(p for p in files if p.startswith("remote-results/") and p.endswith(".csv")):
        rows += [r for r in csv.DictReader(io.StringIO(store.read_text(rel))) if r.get("checkpoint")]
    cells: dict[tuple[str, str, str], dict[str, tuple]] = defaultdict(dict)
    eval_sets = {}
    for r in rows:
        data = store.read_bytes(r["checkpoint"], cap=1 << 30)
        meta = checkpoint_metadata(data)
        cfg = json.loads(meta["model_config"])
        key = (meta["data"], meta["tokenizer"], meta["tokenizer_vocab"], meta["eval_tokens"], meta["eval_seq_len"])
        if key not in eval_sets:
            eval_sets[key] = eval_set_for(key[0], key[1], int(key[2]), int(key[3]), int(key[4]), read=read)
        model = GPT(cfg)
        model.load_state_dict(load(data), strict=True)
        nats, nbytes = window_nats(model, eval_sets[key], torch.device("cpu"))
        cells[(r["stage"], r["host"], r["seed"])][r["config_id"]] = (nats, nbytes)
        print(f"scored {r['run_id']}", file=sys.stderr)
    print(f"{'stage':28} {'host':8} {'seed':>4} {'candidate':10} {'val_bpb':>9} {'se':>7} "
          f"{'minus ' + a.reference:>14} {'paired se':>9}")
    ses, pses = [], []
    for (stage, host, seed), by in sorted(cells.items()):
        if a.reference not in by:
            continue
        ref_nats, nbytes = by[a.reference]
        for cid, (nats, _) in sorted(by.items()):
            bpb, se = bpb_and_se(nats, nbytes)
            ses.append(se)
            if cid == a.reference:
                print(f"{stage:28} {host:8} {seed:>4} {cid:10} {bpb:9.6f} {se:7.4f}")
                continue
            diff, pse = bpb_and_se(nats - ref_nats, nbytes)   # the same ratio estimator, of the differences
            pses.append(pse)
            print(f"{stage:28} {host:8} {seed:>4} {cid:10} {bpb:9.6f} {se:7.4f} {diff:+14.6f} {pse:9.4f}")
    if pses:
        print(f"median: score se {sorted(ses)[len(ses) // 2]:.4f}, paired difference se "
              f"{sorted(pses)[len(pses) // 2]:.4f} ({len(pses)} differences)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
