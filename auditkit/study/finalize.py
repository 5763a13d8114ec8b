"""Finalizing a complete study: tables, figures, observations, baseline, README.txt and the MANIFEST.

`finalize_package(study)` writes what a package derives from its own rows once every gate is
decided, or leaves a package finalized already exactly as it is (or refuses, when finalizing
again would change it).  What is derived comes from `auditkit.derived` through one function,
`derived_outputs`, the only place the write side reaches into the layers that read a package;
the README, the bigram baseline and the manifest's claims file are this module's own.
"""

from __future__ import annotations

import json
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.manifest import MANIFEST_CSV, MANIFEST_JSON, build_manifest, manifest_entries, manifest_json_text
from auditkit.package.canonical import canonical_json_bytes as json_bytes
from auditkit.package.store import loads_strict
from auditkit.package.writes import write_files
from auditkit.study.spec import Manifest
from auditkit.study.writer import StudyDir


def derived_outputs(out: Path) -> dict[str, bytes]:
    """Everything `auditkit.derived` makes from the package at `out`, in memory: its tables, its
    figures (when matplotlib, an extra, is installed) and `observations.json`.

    The one place the write side depends on the read side's derivations (imported here, lazily:
    pandas and matplotlib are loaded only when a study is finalized).  The observations are what
    the study's own rows show, whatever it is: they hold by construction, so they are not claims;
    `claims.json` is for what authors or reviewers claim (the manifest's `claims = FILE`), and
    `auditkit claims` decides it.
    """
    from auditkit.derived.tables import table_files

    files = dict(table_files(out)[1])
    try:
        from auditkit.derived.figures import figure_files
    except ImportError:  # matplotlib is an extra
        figure_files = None
    if figure_files is not None:
        files.update(figure_files(out)[1])
    # TODO(issue 23): observations are moving from report/claims.py into derived/; then import them
    # from there (this line only), and study/ no longer imports report/
    from auditkit.derived.observations import OBSERVATIONS_FILE, claims_text, observations_from_study

    files[OBSERVATIONS_FILE] = claims_text(observations_from_study(out)).encode("utf-8")
    return files


def derived_files(study: StudyDir) -> dict[str, bytes]:
    """What finalizing writes besides the MANIFEST: tables, figures (when matplotlib is
    installed), observations, README.txt, the baseline and the manifest's claims file, in memory."""
    files = derived_outputs(study.out)
    files["README.txt"] = readme_text(study).encode("utf-8")
    baseline = baseline_json(study)
    if baseline is not None:
        files[BASELINE_PATH] = baseline
    if study.manifest.claims is not None:
        files["claims.json"] = manifest_claims(study.manifest)
    return files




def manifest_claims(manifest: Manifest) -> bytes:
    """The bytes of the manifest's claims file (`claims = "FILE"`), checked against the claims schema."""
    from auditkit.package.schemas import schema_errors
    from auditkit.package.store import loads_strict

    path = manifest.claims
    try:
        data = path.read_bytes()
        doc = loads_strict(data, str(path))
    except (OSError, UnicodeDecodeError, ValueError, AuditError) as exc:
        raise AuditError(f"cannot read the manifest's claims file: {exc}", path=str(path)) from exc
    errors = schema_errors(doc, "claims")
    if errors:
        raise AuditError(f"the manifest's claims file is not auditkit/claims/v1: {errors[0][0]}: {errors[0][1]}",
                         path=str(path), hint="see tests/data/paper06_claims.json for the format")
    return data


BASELINE_PATH = "analysis/baseline.json"


def baseline_json(study: StudyDir) -> bytes | None:
    """analysis/baseline.json: the count-based bigram baseline (runner/baseline.py) on the study's
    evaluation tokens, rebuilt from the data the package carries, and each stage's mean val_bpb
    beside it.  None when the rows name no single evaluation, the data is not carried, or the
    runner's dependencies (numpy, the BPE tokenizer) are missing."""
    from statistics import fmean

    rows = [r for s in study.protocol.stages for h in s.hosts for r in study.rows(h, s.stage)]
    ok = [r for r in rows if r.get("status") == "ok" and r.get("val_bpb")]
    evals = {(r.get("eval_sha256"), r.get("eval_tokens"), r.get("eval_seq_len")) for r in ok}
    if len(evals) != 1 or not all(next(iter(evals))):
        return None
    sha, n_tokens, seq_len = next(iter(evals))
    settings = study.manifest.runner.get("settings", {})
    try:
        from auditkit.runner.baseline import bigram_bpb
        from auditkit.runner.data import load_corpus, parse_spec
        from auditkit.runner.evaluation import make_eval_set

        spec = str(settings.get("data", "markov:seed=0"))
        kind, opts = parse_spec(spec)
        def read(path: str) -> bytes:  # the package's own copy of the data (carried by carry_data), via the store
            try:
                data = study.read_own(path)
            except AuditError as exc:   # PackageDefect too: a link, FIFO or device is refused, never followed
                raise ValueError(f"{path}: {exc}") from None
            if data is None:
                raise ValueError(f"{path}: not carried in the package")
            return data

        corpus = load_corpus(spec, tokenizer=str(settings.get("tokenizer", "auto")),
                             vocab_size=int(settings.get("vocab_size", 8192)),
                             read=read if kind in ("text", "parquet") else None)
        es = make_eval_set(corpus.val, corpus.tokenizer.token_bytes, int(n_tokens), int(seq_len))
    except (ImportError, OSError, ValueError):
        return None
    if es.sha256 != sha:
        return None
    base = bigram_bpb(corpus.train, es.tokens, corpus.tokenizer.token_bytes, corpus.tokenizer.vocab_size)
    stages = {}
    for s in study.protocol.stages:
        vals = [float(r["val_bpb"]) for h in s.hosts for r in study.rows(h, s.stage)
                if r.get("status") == "ok" and r.get("val_bpb")]
        if vals:
            stages[s.stage] = {"runs": len(vals), "mean_val_bpb": round(fmean(vals), 6),
                               "worst_val_bpb": round(max(vals), 6),
                               "mean_beats_baseline": fmean(vals) < base["bigram_bpb"],
                               "runs_beating_baseline": sum(v < base["bigram_bpb"] for v in vals)}
    doc = {"schema": "auditkit/baseline/v1", "kind": "bigram",
           "definition": "count-based bigram model of the training tokens, p(b|a) = (c(a,b) + alpha u(b)) / "
                         "(c(a) + alpha), u(b) = (c(b)+1)/(N+V), alpha chosen on the training stream alone "
                         "(counts from its first 90%, scored on its last 10%); scored on the run rows' "
                         "evaluation tokens like val_bpb (runner/baseline.py)",
           "data": spec, "tokenizer": corpus.tokenizer.label(), "eval_sha256": sha, "eval_tokens": int(n_tokens),
           "eval_seq_len": int(seq_len), **base, "stages": stages}
    return json_bytes(doc)


def finalize_package(study: StudyDir) -> dict:
    """Tables, figures, README.txt and the MANIFEST of a complete study directory.

    A package that is finalized already (it has a MANIFEST) and gained nothing in this
    run is left exactly as it is when finalizing again gives the same bytes (state
    "unchanged"); when it would not (newer code, or files changed since the MANIFEST was
    written) finalizing is refused (AuditError) with how to finalize into a new directory.
    Otherwise everything is (re)written atomically (state "written"). Returns
    {"state": ..., "manifest": the MANIFEST document}.
    """
    out = study.out
    if study.finalized and not study.wrote:
        recorded = study.read_own(MANIFEST_JSON) or b""
        entries = manifest_entries(out)
        listed = {e.get("path"): e.get("sha256") for e in loads_strict(recorded, MANIFEST_JSON).get("files", [])}
        differ = sorted({e.path for e in entries if listed.get(e.path) != e.sha256}
                        | (set(listed) - {e.path for e in entries}))
        why = "its files differ from what its MANIFEST recorded"
        if not differ:
            files = derived_files(study)
            differ = [rel for rel, data in sorted(files.items()) if not _same_bytes(study, rel, data)]
            if not differ and manifest_json_text(entries).encode("utf-8") != recorded:
                differ = [MANIFEST_JSON]
            why = "this auditkit would write different bytes (newer code or libraries)"
        if not differ:
            study.log("the package is finalized already and finalizing again gives the same bytes: unchanged")
            return {"state": "unchanged", "manifest": loads_strict(recorded, MANIFEST_JSON)}
        raise AuditError(
            f"the package is finalized (it has a MANIFEST) and nothing was left to run, but finalizing "
            f"again would change {len(differ)} file(s) "
            f"({', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}): {why}; "
            f"nothing was written",
            path=str(out),
            hint=f"the package stays as it is (check it with: auditkit verify {out}); to finalize a copy with "
                 f"this auditkit: cp -a {out} NEW && rm NEW/{MANIFEST_JSON} NEW/{MANIFEST_CSV} && "
                 f"auditkit protocol run {study.manifest.path} --out NEW --host all")
    readme = readme_text(study).encode("utf-8")
    # README first: the figures label hosts with the profiles it lists (derived.figures.host_labels).
    # Both through the write rule: nothing under the output directory is followed; these files are
    # the run's own, so rewriting them needs no --force
    write_files(out, {"README.txt": readme}, force=True, what="protocol run")
    write_files(out, derived_files(study), force=True, what="protocol run")
    if study.evidence is not None:
        study.evidence.finalized()
    return {"state": "written", "manifest": build_manifest(out)}


def _same_bytes(study: StudyDir, rel: str, data: bytes) -> bool:
    try:
        return study.read_own(rel) == data
    except AuditError:
        return False


def readme_text(study: StudyDir) -> str:
    proto = study.protocol
    lines = [
        f"Ancillary package: {proto.name}",
        "",
        f"Produced by `auditkit protocol run {study.manifest.path.name}` (auditkit's bundled runner,",
        "source/runner/), from real training runs; nothing in it was edited by hand.",
        *_runs_line(study),
        "",
        f"Hosts: {', '.join(proto.hosts)}",
        "Stages:",
    ]
    for s in proto.stages:
        lines.append(f"  {s.stage}: budget {s.budget.label()}, seeds {list(s.seeds)}, candidates {s.to_json()['candidates']}")
    lines += ["Gates: " + ", ".join(g.gate for g in proto.gates), "",
              "Host profiles:"]
    for h in proto.hosts:
        lines.append(f"  {h}: {json.dumps(study.manifest.host_profiles.get(h, {}), sort_keys=True)}")
    settings = study.manifest.runner.get("settings")
    if settings:
        lines.append(f"Runner settings: {json.dumps(settings, sort_keys=True)}")
    lines += ["", "Audit it:",
              "  auditkit verify .              # whole and unaltered (MANIFEST, schemas, checkpoints)",
              "  auditkit replay-gate all --package .   # every decision re-derived from the raw rows",
              "  auditkit tables --package . --check     # every table regenerated",
              "  auditkit figures --package . --check    # every figure regenerated", ""]
    return "\n".join(lines)


def _runs_line(study: StudyDir) -> list[str]:
    """'auditkit X; N runs (status counts) from first start to last finish' — from the rows themselves."""
    from collections import Counter

    from auditkit import __version__

    rows = [r for s in study.protocol.stages for h in s.hosts for r in study.rows(h, s.stage)]
    if not rows:
        return [f"auditkit {__version__}; no runs yet."]
    status = ", ".join(f"{n} {k}" for k, n in sorted(Counter(r.get("status", "?") for r in rows).items()))
    return [f"auditkit {__version__}; {len(rows)} runs ({status}), "
            f"from {min(r.get('started_at', '') for r in rows)} to {max(r.get('finished_at', '') for r in rows)}."]
