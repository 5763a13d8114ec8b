"""The JSON Schemas (schemas/, shipped as auditkit.schemas): valid draft 2020-12, accept every
example of SPEC.md, refuse what SPEC.md forbids."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from auditkit.package.schemas import SCHEMA_NAMES, load_schema, schema_errors

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).resolve().parent / "data" / "spec_examples"
SPEC = REPO / "docs" / "SPEC.md"   # the format (a verbatim copy of the study's SPEC.md), kept with its code
SCHEMA_OF = {"auditkit/rules/v1": "rules", "auditkit/decision/v1": "decision", "auditkit/protocol/v1": "protocol",
             "auditkit/manifest/v1": "manifest", "auditkit/tables/v1": "table-manifest",
             "auditkit/figures/v1": "figure-manifest", "auditkit/claims/v1": "claims"}


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_schema_is_valid_draft_2020_12(name):
    text = (REPO / "schemas" / f"{name}.schema.json").read_text()
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert load_schema(name) == schema  # the installed copy is the repository's


def test_every_schema_file_is_known():
    assert sorted(p.name.removesuffix(".schema.json") for p in (REPO / "schemas").glob("*.schema.json")) == \
        sorted(SCHEMA_NAMES)


def spec_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", SPEC.read_text(), re.S)


def test_every_json_example_in_spec_validates():
    blocks = spec_blocks()
    assert len(blocks) >= 2
    for text in blocks:
        doc = json.loads(text)
        name = SCHEMA_OF[doc["schema"]]
        assert schema_errors(doc, name) == [], name
        assert json.loads((EXAMPLES / f"{name}.json").read_text()) == doc, f"tests/data copy of {name} is stale"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_kept_examples_validate(path):
    assert schema_errors(json.loads(path.read_text()), path.stem) == []


def example(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


def breaks(name: str, edit) -> list:
    doc = copy.deepcopy(example(name))
    edit(doc)
    return schema_errors(doc, name)


def _set(d, *path_value):
    *path, value = path_value
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


BAD = [
    ("run-row", lambda d: _set(d, "val_bpb", "nan")),
    ("run-row", lambda d: _set(d, "val_bpb", "")),                        # ok needs a value
    ("run-row", lambda d: (_set(d, "status", "failed"))),                   # not ok: val_bpb must be empty
    ("run-row", lambda d: _set(d, "status", "crashed")),
    ("run-row", lambda d: _set(d, "host", "Linux")),
    ("run-row", lambda d: _set(d, "seed", "4.5")),
    ("run-row", lambda d: _set(d, "started_at", "yesterday")),
    ("run-row", lambda d: _set(d, "checkpoint", "../x.safetensors")),
    ("run-row", lambda d: _set(d, "checkpoint_sha256", "")),              # a checkpoint needs its hash
    ("run-row", lambda d: d.pop("runner_sha256")),
    ("matrix-row", lambda d: _set(d, "config_id", "a b")),
    ("matrix-row", lambda d: d.pop("role")),
    ("manifest", lambda d: _set(d, "files", 0, "path", "../etc")),
    ("manifest", lambda d: _set(d, "files", 0, "path", "/abs")),
    ("manifest", lambda d: _set(d, "files", 0, "path", "a/./b")),
    ("manifest", lambda d: _set(d, "files", 0, "sha256", "ABC")),
    ("manifest", lambda d: _set(d, "files", 0, "bytes", -1)),
    ("manifest", lambda d: _set(d, "algorithm", "md5")),
    ("protocol", lambda d: _set(d, "stages", 0, "candidates", "promoted-by:")),
    ("protocol", lambda d: _set(d, "stages", 0, "budget", "kind", "tokens")),
    ("protocol", lambda d: _set(d, "gates", 0, "rules", "/etc/rules.json")),
    ("rules", lambda d: d["checks"][0].pop("threshold")),
    ("rules", lambda d: _set(d, "metric", "better", "smaller")),
    ("rules", lambda d: _set(d, "frozen_at", "2026-04-28")),
    ("decision", lambda d: _set(d, "cells", 0, ["linux"])),
    ("decision", lambda d: _set(d, "decided_at", "soon")),
    ("decision", lambda d: _set(d, "candidates", 0, "eligible", "yes")),
    ("checkpoint-metadata", lambda d: _set(d, "seed", 44)),                 # safetensors metadata is strings
    ("checkpoint-metadata", lambda d: d.pop("model_config")),
    ("run-summary", lambda d: _set(d, "val_bpb", None)),
    ("table-manifest", lambda d: _set(d, "tables", 0, "sha256", "x")),
    ("figure-manifest", lambda d: d["figures"][0].pop("kind")),
]


@pytest.mark.parametrize("name,edit", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_schemas_refuse_what_spec_forbids(name, edit):
    from auditkit.verify.fastschema import fast_valid

    assert breaks(name, edit)
    doc = copy.deepcopy(example(name))
    edit(doc)
    fast = fast_valid(name)
    assert fast is None or not fast(doc)


def test_run_row_status_and_val_bpb_coherence():
    for status in ("failed", "diverged", "oom", "timeout"):
        assert not breaks("run-row", lambda d: d.update(status=status, val_bpb=""))
    assert not breaks("run-row", lambda d: d.update(checkpoint="", checkpoint_sha256=""))


def test_extra_columns_and_keys_are_allowed():
    assert not breaks("run-row", lambda d: d.update(note="anything"))
    assert not breaks("rules", lambda d: d.update(comment="free text"))
    assert not breaks("manifest", lambda d: d.update(created_by="another lab"))


@pytest.mark.slow
def test_a_wheel_ships_the_schemas(tmp_path):
    src = tmp_path / "src"  # a copy: building writes egg-info next to the sources, never into the repository
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "auditkit", "runner", "schemas"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(src)], capture_output=True, text=True)
    assert r.returncode == 0, f"cannot build a wheel: {r.stderr[-500:]}"
    wheel = next(tmp_path.glob("pretrain_auditkit-*.whl"))   # the distribution is pretrain-auditkit
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.startswith("auditkit/schemas/") and n.endswith(".schema.json")) == \
        sorted(f"auditkit/schemas/{n}.schema.json" for n in SCHEMA_NAMES)


# -- the compiled fast path (auditkit.verify.fast_valid) says exactly what jsonschema says ---------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CELL = st.one_of(
    st.sampled_from(["", "ok", "failed", "diverged", "seconds", "steps", "nan", "1.5", "-2", "1e3", "0.000000",
                     "0.405152\n", "linux\n", "2026-01-01T00:00:00Z\n", "2026-02-30T00:00:00Z", "2026-13-45T99:00:00Z",
                     "linux", "Linux", "a b", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00", "2026-01-01",
                     "checkpoints/x.safetensors", "../x", "/abs", "a" * 64, "A" * 64, "reference"]),
    st.text(max_size=6), st.integers(), st.none(), st.booleans())


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(["run-row", "matrix-row", "checkpoint-metadata"]),
       edits=st.dictionaries(st.sampled_from(["run_id", "host", "stage", "seed", "config_id", "budget_kind", "status",
                                              "val_bpb", "num_steps", "started_at", "checkpoint", "checkpoint_sha256",
                                              "role", "model_config", "step", "extra", "finished_at"]), CELL,
                             max_size=4),
       drop=st.lists(st.sampled_from(["run_id", "val_bpb", "checkpoint", "role", "seed", "status"]), max_size=2))
def test_fast_path_agrees_with_jsonschema(name, edits, drop):
    from auditkit.verify.fastschema import fast_valid

    doc = {**example(name), **{k: v for k, v in edits.items()}}
    for k in drop:
        doc.pop(k, None)
    fast = fast_valid(name)
    assert fast is not None
    assert fast(doc) == (schema_errors(doc, name) == []), doc


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_fast_path_on_every_example(name):
    from auditkit.verify.fastschema import fast_valid

    fast = fast_valid(name)
    if fast is not None and (EXAMPLES / f"{name}.json").exists():
        assert fast(example(name))


# -- patterns match the whole value; timestamps are real dates ----------------------------------------

def _patterns(node, where=""):
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield where, node["pattern"]
        for k, v in node.items():
            yield from _patterns(v, f"{where}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _patterns(v, f"{where}/{i}")


ALL_PATTERNS = [(name, where, p) for name in SCHEMA_NAMES for where, p in _patterns(load_schema(name))]


def test_every_anchored_pattern_says_the_whole_value():
    """`$` alone lets Python's re.search (jsonschema's) accept a final newline; `(?!\\n)$` does not, in
    Python and ECMA alike.  The prefix patterns (no `$`) are the only others."""
    assert len(ALL_PATTERNS) > 50
    for name, where, p in ALL_PATTERNS:
        if p.endswith("$"):
            assert p.startswith("^") and p.endswith("(?!\\n)$"), (name, where, p)
        else:
            assert (name, p) in {("checkpoint-metadata", "^\\s*\\{"), ("event", "^https?://")}, (name, where, p)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("name,where,pattern", [c for c in ALL_PATTERNS if c[2].endswith("$")],
                         ids=[f"{n}{w}" for n, w, p in ALL_PATTERNS if p.endswith("$")])
def test_a_final_newline_never_matches(name, where, pattern, data):
    value = data.draw(st.from_regex(pattern, fullmatch=True))
    assert re.search(pattern, value) is not None
    assert re.search(pattern, value + "\n") is None
    assert re.search(pattern.removesuffix("(?!\\n)$") + "$", value + "\n") is not None  # what `$` alone did


@pytest.mark.parametrize("name,edit", [
    ("run-row", lambda d: _set(d, "val_bpb", "0.405152\n")),
    ("run-row", lambda d: _set(d, "run_id", d["run_id"] + "\n")),
    ("run-row", lambda d: _set(d, "runner_sha256", d["runner_sha256"] + "\n")),
    ("run-row", lambda d: _set(d, "started_at", "2026-02-30T10:00:00Z")),
    ("rules", lambda d: _set(d, "frozen_at", d["frozen_at"] + "\n")),
    ("rules", lambda d: _set(d, "frozen_at", "2026-13-45T99:00:00Z")),
    ("decision", lambda d: _set(d, "decided_at", "2026-04-31T10:00:00Z")),
    ("manifest", lambda d: _set(d, "files", 0, "path", "a\nb")),
    ("manifest", lambda d: _set(d, "files", 0, "path", d["files"][0]["path"] + "\n")),
], ids=["val_bpb-newline", "run_id-newline", "sha-newline", "feb-30", "frozen_at-newline", "frozen_at-not-a-date",
        "april-31", "path-inner-newline", "path-final-newline"])
def test_values_with_a_final_newline_or_an_impossible_date_fail(name, edit):
    from auditkit.verify.fastschema import fast_valid

    assert breaks(name, edit)
    doc = copy.deepcopy(example(name))
    edit(doc)
    fast = fast_valid(name)
    assert fast is None or not fast(doc)


# -- the compiled predicates decide whole documents as jsonschema does ------------------------------------

VERIFY_EXAMPLES = ["manifest", "protocol", "rules", "decision", "table-manifest", "figure-manifest",
                   "checkpoint-metadata", "run-row", "matrix-row", "claims"]
JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2, allow_nan=False), st.sampled_from(
        ["", "x", "a b", "ok", "lower", "higher", "matrix", "promoted-by:s1", "near_equivalence", "mean_gap",
         "gate_check", "rank", "PASS", "every_cell", "winner_of", "host_sensitivity",
         "2026-05-01T09:00:00Z", "2026-02-30T09:00:00Z", "2026-05-01T09:00:00Z\n", "a" * 64, "../x", "steps",
         "seconds", "auditkit/rules/v1", "linux", "bridge"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "path", "gate", "kind",
                                                                                          "winner_of"]),
                                                                         inner, max_size=2)),
    max_leaves=4)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(VERIFY_EXAMPLES), data=st.data())
def test_fast_path_agrees_with_jsonschema_on_edited_documents(name, data):
    from auditkit.verify.fastschema import fast_valid

    doc = copy.deepcopy(example(name))
    for _ in range(data.draw(st.integers(1, 2))):
        paths = list(_paths(doc))
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["set", "delete", "duplicate"]))
        if not path:
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if action == "set":
            parent[path[-1]] = data.draw(JSON_VALUE)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
    fast = fast_valid(name)
    assert fast is not None
    assert fast(doc) == (schema_errors(doc, name) == []), doc


@pytest.mark.parametrize("schema", [{"minItems": "2"}, {"type": "strnig"}, {"required": "a"}, {"pattern": "("},
                                    {"properties": {"a": 5}}, {"oneOf": []}, {"$ref": "#/x"}, {"uniqueItems": 1},
                                    {"maximum": 3}])
def test_the_compiler_refuses_what_it_cannot_vouch_for(schema):
    import re as re_mod

    from auditkit.verify import fastschema

    with pytest.raises((fastschema._Unsupported, re_mod.error)):
        fastschema._compile(schema)


@pytest.mark.parametrize("ref", ["#/x", "#/$defs/missing", "other.json#/a", "#anchor", 5, "#/$defs/list/9",
                                 "#/$defs/a/b"])
def test_a_reference_that_points_at_nothing_or_outside_is_refused(ref):
    from auditkit.verify import fastschema

    schema = {"$defs": {"a": {"type": "string"}, "list": [{"type": "integer"}]}, "properties": {"p": {"$ref": ref}}}
    with pytest.raises(fastschema._Unsupported):
        fastschema._compile(schema)
    schema["properties"]["p"]["$ref"] = "#/$defs/list/0"     # and one that points at a schema compiles
    assert fastschema._compile(schema)({"p": 3}) and not fastschema._compile(schema)({"p": "3"})


RECURSIVE = {"$defs": {"node": {"type": "object", "required": ["v"], "additionalProperties": False,
                                 "properties": {"v": {"$ref": "#/$defs/leaf"},
                                                "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
                        "leaf": {"type": "integer", "minimum": 0}, "a~b/c": {"const": 1}},
             "type": "object", "minProperties": 1, "properties": {"tree": {"$ref": "#/$defs/node"},
                                                                  "odd": {"$ref": "#/$defs/a~0b~1c"}}}
TREE = st.recursive(st.fixed_dictionaries({"v": st.one_of(st.integers(-1, 2), st.just("x"))}),
                    lambda inner: st.fixed_dictionaries({"v": st.integers(-1, 2)}, optional={"kids": st.lists(inner, max_size=3),
                                                                                             "w": st.just(1)}),
                    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(doc=st.one_of(st.fixed_dictionaries({}, optional={"tree": TREE, "odd": st.integers(0, 2)}), JSON_VALUE))
def test_local_references_and_recursion_compile_to_what_jsonschema_says(doc):
    from jsonschema import Draft202012Validator

    from auditkit.verify import fastschema

    fast = fastschema._compile(RECURSIVE)
    assert fast(doc) == Draft202012Validator(RECURSIVE).is_valid(doc), doc


def test_a_valid_package_is_verified_without_jsonschema(tmp_path):
    """jsonschema is needed only to say why a document breaks its schema."""
    code = ("import sys\nsys.path.insert(0, 'tests')\nfrom fixtures import pkgbuild\n"
            "from auditkit.verify import verify_package\n"
            f"p = pkgbuild.build({str(tmp_path / 'pkg')!r})\n"
            "import importlib; sys.modules.pop('jsonschema', None)\n"
            "r = verify_package(p)\nassert r.ok, r.render_text()\n"
            "assert 'jsonschema' not in sys.modules, 'jsonschema was imported'\n"
            "(p / 'protocol.json').write_text('{}')\n"
            "assert {f.code for f in verify_package(p).findings} >= {'schema-invalid'}\n"
            "assert 'jsonschema' in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_shipped_package_is_verified_without_jsonschema():
    """Its claims and observations too (the claims schema's $ref, $defs and minProperties compile)."""
    code = ("import sys\nfrom auditkit.verify import verify_package\n"
            "r = verify_package('ancillary')\nassert r.ok, r.render_text()\n"
            "assert 'jsonschema' not in sys.modules, 'jsonschema was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
