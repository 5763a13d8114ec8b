"""Staged protocols (SPEC section 3): `protocol.json` in a package, TOML in `manifests/`.

A hand-written manifest (TOML) holds the protocol plus what only the writer
needs: the matrix file, each gate's rules before they are frozen (everything
but `schema`, `gate` and `frozen_at`), per-host runner profiles and runner
settings.  `Protocol.to_json()` is the package form (`protocol.json`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from auditkit.errors import AuditError
from auditkit.package.schemas import schema_errors
from auditkit.package.store import PackageStore, defect


@dataclass(frozen=True)
class Budget:
    kind: str  # "seconds" | "steps"
    value: float

    def to_json(self) -> dict:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return {"kind": self.kind, "value": v}

    def label(self) -> str:
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{v}s" if self.kind == "seconds" else f"{v}steps"


@dataclass(frozen=True)
class Stage:
    stage: str
    budget: Budget
    seeds: tuple[int, ...]
    hosts: tuple[str, ...]
    candidates: str | tuple[str, ...]  # "matrix" | "promoted-by:<gate>" | explicit ids
    rng_seeds: str = "nominal"  # "anchored": train with seeds derived from the freeze token (SPEC v1.1)

    @property
    def anchored(self) -> bool:
        return self.rng_seeds == "anchored"

    @property
    def promoted_by(self) -> str | None:
        if isinstance(self.candidates, str) and self.candidates.startswith("promoted-by:"):
            return self.candidates.split(":", 1)[1]
        return None

    def to_json(self) -> dict:
        cands = list(self.candidates) if isinstance(self.candidates, tuple) else self.candidates
        doc = {"stage": self.stage, "budget": self.budget.to_json(), "seeds": list(self.seeds),
               "hosts": list(self.hosts), "candidates": cands}
        if self.anchored:  # written only when set, so a v1 protocol keeps its bytes
            doc["rng_seeds"] = self.rng_seeds
        return doc


@dataclass(frozen=True)
class Gate:
    gate: str
    rules: str  # package-relative path of the frozen rules

    @property
    def decision_path(self) -> str:
        return f"analysis/{self.gate}_decision.json"

    def to_json(self) -> dict:
        return {"gate": self.gate, "rules": self.rules}


@dataclass(frozen=True)
class Protocol:
    name: str
    matrix: str
    hosts: tuple[str, ...]
    stages: tuple[Stage, ...]
    gates: tuple[Gate, ...]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(name)

    def gate(self, name: str) -> Gate:
        for g in self.gates:
            if g.gate == name:
                return g
        raise KeyError(name)

    def to_json(self) -> dict:
        return {"schema": "auditkit/protocol/v1", "name": self.name, "matrix": self.matrix,
                "hosts": list(self.hosts), "stages": [s.to_json() for s in self.stages],
                "gates": [g.to_json() for g in self.gates]}


PROTOCOL_JSON = "protocol.json"


def protocol_from_dict(doc: dict, path: str = PROTOCOL_JSON) -> Protocol:
    """Protocol from its JSON form. Raises `PackageDefect` (an AuditError carrying a finding)
    naming the first bad key: in a package that is a finding, in a manifest a usage error."""
    errors = schema_errors(doc, "protocol")
    if errors:
        loc, msg = errors[0]
        raise defect(path, "protocol-invalid", f"the protocol does not follow SPEC.md section 3: {msg}",
                     location=loc, expected="a protocol following SPEC.md section 3", found=msg,
                     hint="every gate and stage is read from the protocol; nothing can be checked against "
                          "a protocol that does not follow the SPEC")
    stages = tuple(
        Stage(s["stage"], Budget(s["budget"]["kind"], float(s["budget"]["value"])),
              tuple(s["seeds"]), tuple(s["hosts"]),
              tuple(s["candidates"]) if isinstance(s["candidates"], list) else s["candidates"],
              s.get("rng_seeds", "nominal"))
        for s in doc["stages"]
    )
    gates = tuple(Gate(g["gate"], g["rules"]) for g in doc["gates"])
    proto = Protocol(doc["name"], doc["matrix"], tuple(doc["hosts"]), stages, gates)
    _check_sense(proto, path)
    return proto


def _senseless(path: str, location: str, expected: str, found: str, message: str):
    return defect(path, "protocol-senseless", message, location=location, expected=expected, found=found,
                  hint="the protocol contradicts itself; find out which part the study actually ran")


def _check_sense(p: Protocol, path: str) -> None:
    """What the schema cannot say: names unique, stages on the protocol's hosts, each stage's seeds
    once, and `promoted-by:` naming a gate the protocol defines."""
    for key, names in (("hosts", list(p.hosts)), ("stages", [s.stage for s in p.stages]),
                       ("gates", [g.gate for g in p.gates])):
        seen = set()
        for i, n in enumerate(names):
            if n in seen:
                raise _senseless(path, f"$.{key}[{i}]", "each name once", n, f"{key[:-1]} {n!r} is defined twice")
            seen.add(n)
    gnames = [g.gate for g in p.gates]
    for i, s in enumerate(p.stages):
        bad = [h for h in s.hosts if h not in p.hosts]
        if bad:
            raise _senseless(path, f"$.stages[{i}].hosts", f"hosts of $.hosts {list(p.hosts)}", str(bad),
                             f"stage {s.stage!r} runs on hosts the protocol does not name")
        if len(set(s.seeds)) != len(s.seeds):
            raise _senseless(path, f"$.stages[{i}].seeds", "each seed once", str(list(s.seeds)),
                             f"stage {s.stage!r} names a seed twice")
        if s.promoted_by and s.promoted_by not in gnames:
            raise _senseless(path, f"$.stages[{i}].candidates", f"a gate of $.gates {gnames}", s.candidates,
                             f"stage {s.stage!r} takes its candidates from a gate the protocol does not define")


def load_package_protocol(store: PackageStore) -> Protocol:
    """The protocol of a package, read through its store (no link followed, strict JSON).
    Raises PackageDefect when `protocol.json` is unreadable or does not follow the SPEC."""
    doc = store.read_json(PROTOCOL_JSON)
    if not isinstance(doc, dict):
        raise defect(PROTOCOL_JSON, "json-not-object", "the protocol is not a JSON object", location="$",
                     expected="a JSON object", found=type(doc).__name__)
    return protocol_from_dict(doc, PROTOCOL_JSON)


def load_protocol(path: str | Path) -> Protocol:
    """Protocol from `protocol.json` (read through a store rooted at its directory) or a manifest TOML."""
    path = Path(path)
    if path.suffix == ".toml":
        return load_manifest(path).protocol
    store = PackageStore(path.parent)
    doc = store.read_json(path.name)
    if not isinstance(doc, dict):
        raise defect(path.name, "json-not-object", "the protocol is not a JSON object", location="$",
                     expected="a JSON object", found=type(doc).__name__)
    return protocol_from_dict(doc, path.name)


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
