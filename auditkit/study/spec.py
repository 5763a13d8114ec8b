"""The writer's protocol manifest (TOML in `manifests/`), loaded and checked before anything runs.

A hand-written manifest (TOML) holds the protocol plus what only the writer
needs: the matrix file, each gate's rules before they are frozen (everything
but `schema`, `gate` and `frozen_at`), per-host runner profiles and runner
settings.  The protocol itself (`Protocol`, `Stage`, `Gate`, `Budget`, the
package form `protocol.json`) is `auditkit.package.protocol`'s.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.protocol import Protocol, load_package_protocol, protocol_from_dict
from auditkit.package.store import PackageStore


def load_protocol(path: str | Path) -> Protocol:
    """Protocol from `protocol.json` (read through a store rooted at its directory) or a manifest TOML."""
    path = Path(path)
    if path.suffix == ".toml":
        return load_manifest(path).protocol
    return load_package_protocol(PackageStore(path.parent), path.name)


@dataclass(frozen=True)
class Manifest:
    """A hand-written protocol manifest (TOML) and what the runner needs beside it."""

    path: Path
    protocol: Protocol
    matrix_file: Path                      # the candidate matrix CSV on disk
    rules: dict[str, dict]                 # gate -> rules body (no schema/gate/frozen_at)
    host_profiles: dict[str, dict] = field(default_factory=dict)  # host -> {threads, device, ...}
    runner: dict = field(default_factory=dict)   # runner settings shared by every run
    accounting: dict = field(default_factory=dict)  # e.g. {"unit": "gpu_hours"}
    claims: Path | None = None  # a claims file (auditkit/claims/v1) the package ships as claims.json


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest TOML. Raises AuditError naming the key at fault."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AuditError(f"cannot read manifest: {exc}", path=str(path),
                         hint="a manifest is a TOML file like manifests/micro.toml") from exc
    for key in ("name", "matrix", "hosts", "stages"):
        if key not in doc:
            raise AuditError(f"manifest has no {key!r}", path=str(path))
    _check_stage_keys(doc["stages"], str(path))
    matrix_file = (path.parent / doc["matrix"]).resolve()
    gates = []
    rules = {}
    for i, g in enumerate(doc.get("gates", [])):
        if "gate" not in g or "rules" not in g:
            raise AuditError(f"gates[{i}] needs 'gate' and a [gates.rules] table", path=str(path))
        gates.append({"gate": g["gate"], "rules": f"preanalysis/{g['gate']}.rules.json"})
        rules[g["gate"]] = dict(g["rules"])
    pdoc = {"schema": "auditkit/protocol/v1", "name": doc["name"],
            "matrix": f"matrices/{Path(doc['matrix']).name}", "hosts": doc["hosts"],
            "stages": doc["stages"], "gates": gates}
    proto = protocol_from_dict(pdoc, str(path))
    _check_gate_inputs(proto, rules, str(path))
    _check_anchored(proto, rules, str(path))
    _check_gate_rules(proto, rules, str(path), _matrix_ids(matrix_file))
    return Manifest(path=path, protocol=proto, matrix_file=matrix_file, rules=rules,
                    host_profiles=dict(doc.get("host_profiles", {})), runner=dict(doc.get("runner", {})),
                    accounting=dict(doc.get("accounting", {})),
                    claims=(path.parent / str(doc["claims"])).resolve() if doc.get("claims") else None)


def _matrix_ids(matrix_file: Path) -> list[str] | None:
    from auditkit.package.store import parse_csv

    try:
        header, rows = parse_csv(matrix_file.read_text("utf-8"), str(matrix_file))
    except (OSError, UnicodeDecodeError, AuditError):
        return None  # the runner reports an unreadable matrix when it copies it
    return [r["config_id"] for r in rows] if "config_id" in header else None


# what a manifest may not hold even before its rules are frozen
_MANIFEST_RULES_SENSE = ("rules-chain-cycle", "rules-non-finite-threshold", "rules-not-a-candidate",
                         "rules-unknown-config")


def _check_gate_rules(p: Protocol, rules: dict[str, dict], path: str, matrix: list[str] | None) -> None:
    """A gate's rules make sense through its ``promoted-by:`` chain: the chain ends, thresholds
    are finite, and every configuration the rules name can be a candidate (SPEC section 5).
    Refused here, before anything runs, rather than at the gate."""
    from auditkit.gates.chain import chain_bound
    from auditkit.gates.rules import validate_rules
    from auditkit.package.schemas import schema_errors as errors_of

    docs = {g: {"schema": "auditkit/rules/v1", "gate": g, "frozen_at": "1970-01-01T00:00:00Z", **body}
            for g, body in rules.items()}
    valid = {g: d for g, d in docs.items() if not errors_of(d, "rules")}
    for i, gate in enumerate(p.gates):
        doc = valid.get(gate.gate)
        if doc is None:
            continue  # the rules schema reports it when the gate is frozen
        chain = chain_bound(gate.gate, valid.get, matrix)
        bad = [f for f in validate_rules(doc, path, known_configs=matrix, chain=chain)
               if f.code in _MANIFEST_RULES_SENSE]
        if bad:
            f = bad[0]
            raise AuditError(f"gates[{i}].rules{f.location[1:]}: {f.code}: {f.message} (expected {f.expected}; "
                             f"found {f.found})", path=path,
                             hint="fix the gate's [gates.rules] before running: frozen rules cannot be changed")


def _check_gate_inputs(p: Protocol, rules: dict[str, dict], path: str) -> None:
    """A gate's rules select rows the protocol actually produces.

    A stage names its hosts and seeds, and so do the gate rules that read it
    (SPEC sections 3 and 5); when they disagree the gate waits for rows that
    never come, or silently reads fewer cells than planned.  Refuse it here,
    before anything runs.
    """
    stages = {s.stage: s for s in p.stages}
    for i, gate in enumerate(p.gates):
        inputs = rules.get(gate.gate, {}).get("inputs")
        if not isinstance(inputs, dict):
            continue  # the rules schema reports it when the gate is frozen
        key = f"gates[{i}].rules.inputs"
        names = inputs.get("stages") or []
        unknown = [n for n in names if n not in stages]
        if unknown:
            raise AuditError(f"{key}.stages names {unknown}, which the manifest's stages do not define",
                             path=path, hint=f"stages defined: {list(stages)}")
        for n in names:
            missing = [h for h in inputs.get("hosts") or [] if h not in stages[n].hosts]
            if missing:
                raise AuditError(f"{key}.hosts names {missing}, but stage {n!r} runs only on {list(stages[n].hosts)}",
                                 path=path, hint="make the gate's inputs.hosts and its stages' hosts agree")
        seeds = {seed for n in names for seed in stages[n].seeds}
        extra = [sd for sd in inputs.get("seeds") or [] if sd not in seeds]
        if extra:
            raise AuditError(f"{key}.seeds names {extra}, which none of its stages {names} runs",
                             path=path, hint="make the gate's inputs.seeds and its stages' seeds agree")


STAGE_KEYS = ("stage", "budget", "seeds", "hosts", "candidates", "rng_seeds")


def _check_stage_keys(stages, path: str) -> None:
    """A misspelt stage setting (say `rng_seed`) would be ignored and the stage run otherwise: refuse it."""
    if not isinstance(stages, list):
        return  # the protocol schema names it
    for i, s in enumerate(stages):
        unknown = sorted(set(s) - set(STAGE_KEYS)) if isinstance(s, dict) else []
        if unknown:
            raise AuditError(f"stages[{i}] has unknown key(s) {unknown}", path=path,
                             hint=f"a stage takes: {', '.join(STAGE_KEYS)}")


def anchor_gate(p: Protocol, rules: dict[str, dict], stage: str) -> str | None:
    """The gate whose freeze token anchors `stage`'s seeds: the first gate (manifest order) reading the stage."""
    return next((g.gate for g in p.gates if stage in ((rules.get(g.gate) or {}).get("inputs") or {}).get("stages", [])),
                None)


def _check_anchored(p: Protocol, rules: dict[str, dict], path: str) -> None:
    """An anchored stage needs a gate whose rules are frozen (and timestamped) before it runs."""
    for i, s in enumerate(p.stages):
        if s.anchored and anchor_gate(p, rules, s.stage) is None:
            raise AuditError(f"stages[{i}] ({s.stage}) sets rng_seeds = \"anchored\", but no gate reads it",
                             path=path, hint="its seeds are derived from the timestamp token of the rules of a gate "
                                             "whose inputs include the stage; add it to a gate's inputs.stages, "
                                             "or drop the setting")
