"""The package's protocol (SPEC section 3, `protocol.json`) as typed values, validated once.

Owns `Budget`, `Stage`, `Gate` and `Protocol` (frozen dataclasses), `protocol_from_dict` (schema
check, then what the schema cannot say) and `load_package_protocol` (read through a package's
store).  Every layer that reads a package's protocol (gates, derived, profile, evidence, report)
imports it from here; the writer side (`auditkit.study.spec`) adds the hand-written TOML manifest
on top.  `Protocol.to_json()` is the package form.
"""

from __future__ import annotations

from dataclasses import dataclass

from auditkit.package.schemas import schema_errors
from auditkit.errors import defect
from auditkit.package.store import PackageStore


PROMOTED_BY = "promoted-by:"


def parent_gate(candidates) -> str | None:
    """The gate named by a ``promoted-by:<gate>`` candidates spec, or None for ``matrix``, a list
    or anything else: the library's one parser of the prefix (tests/test_gate_pipeline.py)."""
    if isinstance(candidates, str) and candidates.startswith(PROMOTED_BY):
        return candidates[len(PROMOTED_BY):]
    return None


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
        return parent_gate(self.candidates)

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


def load_package_protocol(store: PackageStore, rel: str = PROTOCOL_JSON) -> Protocol:
    """The protocol of a package (`rel`, normally `protocol.json`), read through its store (no link
    followed, strict JSON).  Raises PackageDefect when it is unreadable or does not follow the SPEC."""
    doc = store.read_json(rel)
    if not isinstance(doc, dict):
        raise defect(rel, "json-not-object", "the protocol is not a JSON object", location="$",
                     expected="a JSON object", found=type(doc).__name__)
    return protocol_from_dict(doc, rel)
