"""The layering of docs/ARCHITECTURE.md, checked from the source (issue 23).

Every test reads the modules of `auditkit/` and `runner/` (installed as `auditkit.runner`) with `ast`,
imports nothing of them, and fails with one line per offender (`file:line: rule: what`), so a failure
says exactly what to move.  What counts as an import: every `import` and `from ... import` statement,
at module level, inside a function or class, and under `if TYPE_CHECKING:` (a type named from a higher
layer is a dependency on it all the same); relative imports are resolved.

- (a) no import circle between library modules;
- (b) no import of another module's private name (`from m import _x`, `m._x` on an imported module,
  or a private module `_m` imported from outside its own package);
- (c) `LAYERS` (the paragraph "Layers" of docs/ARCHITECTURE.md, made exact): a module imports only
  from its own layer and the layers below; the runner imports nothing of the library; only the
  command line imports click;
- (d) no library module over `MAX_LINES` lines, except the finding-code data (`codes.py`);
- (e) at most two CSV read sites and at most two atomic-rename sites in the library.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"auditkit": REPO / "auditkit", "auditkit.runner": REPO / "runner"}

# Bottom up; a module may import from its own layer and the layers below it (docs/ARCHITECTURE.md).
# A name stands for that module and, for a package, every module below it; the most specific name wins.
# A module in no layer fails test_every_module_has_a_layer: give it one here and in ARCHITECTURE.md.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("runner", ("auditkit.runner",)),
    ("primitives", ("auditkit", "auditkit.errors", "auditkit.text", "auditkit.findings", "auditkit.codes",
                    "auditkit.userfiles", "auditkit.clock", "auditkit.stats")),
    ("package", ("auditkit.package",)),
    ("gates", ("auditkit.gates", "auditkit.evalproto")),
    ("checking", ("auditkit.verify", "auditkit.evidence", "auditkit.derived", "auditkit.profile")),
    ("study", ("auditkit.study",)),
    ("report", ("auditkit.report",)),
    ("app", ("auditkit.app",)),
    ("cli", ("auditkit.cli", "auditkit.__main__")),
)
RUNNER = "auditkit.runner"
MAX_LINES = 450
EXEMPT_FROM_SIZE = {"auditkit/codes.py": "the finding-code catalogue is data (docs/FINDINGS.md is generated from it)"}
MAX_CSV_READ_SITES = 2
MAX_RENAME_SITES = 2
CSV_READERS = {"csv.reader", "csv.DictReader", "pandas.read_csv", "dask.dataframe.read_csv", "pyarrow.csv.read_csv",
               "polars.read_csv"}
RENAMES = {"os.replace", "os.rename", "os.renames"}
PATH_RENAMES = {"replace", "rename"}   # Path.replace(target) / Path.rename(target): one argument (str.replace has two)


# ---------------------------------------------------------------------------------------------- reading


def _module_name(path: Path) -> str:
    for root_name, root in ROOTS.items():
        if path.is_relative_to(root):
            parts = [*root_name.split("."), *path.relative_to(root).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(path)


@lru_cache(maxsize=None)
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for root in ROOTS.values() for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts}


@lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name


@dataclass(frozen=True)
class Import:
    importer: str     # module that imports
    path: Path        # its file
    line: int
    target: str       # the module imported (for `from m import x`: `m.x` when that is a module, else `m`)
    name: str | None  # the name taken by `from m import name` (None for `import m`)
    name_is_module: bool = False  # `from package import module`

    def where(self) -> str:
        return f"{_rel(self.path)}:{self.line}"


def _absolute(importer: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def _imports() -> tuple[Import, ...]:
    mods = _modules()
    out = []
    for mod, path in mods.items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import):
                out += [Import(mod, path, node.lineno, a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(mod, path, node)
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    out.append(Import(mod, path, node.lineno, sub if sub in mods else base, a.name, sub in mods))
    return tuple(out)


def _library_imports(imports: tuple[Import, ...] | None = None) -> list[Import]:
    """Imports of a module of auditkit (runner included) by a module of auditkit."""
    return [i for i in (_imports() if imports is None else imports)
            if i.target == "auditkit" or i.target.startswith("auditkit.")]


def _owner(target: str) -> str | None:
    """The module of this repository that `target` names (a module, or a package's __init__)."""
    mods = _modules()
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def _layer(mod: str) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None
    for rank, (layer, names) in enumerate(LAYERS):
        for name in names:
            hit = mod == name or (name != "auditkit" and mod.startswith(name + "."))
            if hit and (best is None or len(name) > best[0]):
                best = (len(name), rank, layer)
    return None if best is None else (best[1], best[2])


def _fail_if(offenders: list[str], what: str) -> None:
    """Fail with every offender on its own line (`file:line: rule: what`), sorted, so the list is a to-do list."""
    if offenders:
        pytest.fail(f"{len(set(offenders))} {what}:\n" + "\n".join(sorted(set(offenders), key=_by_place)), pytrace=False)


def _by_place(line: str):
    file, _, rest = line.partition(":")
    number = rest.split(":", 1)[0]
    return file, int(number) if number.isdigit() else 0, rest


def _grouped(imports: list[Import]) -> dict[tuple[Path, int, str, str], list[str]]:
    """Import records by (file, line, importer, module imported), with the names each line takes."""
    out: dict[tuple[Path, int, str, str], list[str]] = defaultdict(list)
    for i in imports:
        names = out[(i.path, i.line, i.importer, _owner(i.target) or i.target)]
        if i.name and not i.name_is_module:
            names.append(i.name)
    return out


def _names(names: list[str]) -> str:
    return f" ({', '.join(names)})" if names else ""


# ------------------------------------------------------------------------------------------- (a) circles


def _cycles(imports: tuple[Import, ...] | None = None) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one module, or a module importing itself."""
    graph: dict[str, set[str]] = defaultdict(set)
    for i in _library_imports(imports):
        owner = _owner(i.target)
        if owner is not None:
            graph[i.importer].add(owner)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # recursive: the graph is a few hundred modules
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in sorted(_modules()):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    offenders = []
    for comp in _cycles():
        members = set(comp)
        inside = [i for i in _library_imports() if i.importer in members and _owner(i.target) in members]
        for (path, line, importer, owner), names in _grouped(inside).items():
            offenders.append(f"{_rel(path)}:{line}: import circle [{', '.join(comp)}]: {importer} imports "
                             f"{owner}{_names(names)}")
    _fail_if(offenders, "import lines inside an import circle (each circle lists its modules; break it)")


def test_the_circle_detector_sees_a_circle():
    """The detector itself: two modules that import each other inside functions form a circle."""
    fake = (Import("auditkit.errors", REPO / "auditkit/errors.py", 1, "auditkit.text", "x"),
            Import("auditkit.text", REPO / "auditkit/text.py", 2, "auditkit.errors", "y"),
            Import("auditkit.codes", REPO / "auditkit/codes.py", 3, "auditkit.text", "z"))
    assert _cycles(fake) == [["auditkit.errors", "auditkit.text"]]


# -------------------------------------------------------------------------------------- (b) private names


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package_of(mod: str) -> str:
    return mod if _modules()[mod].name == "__init__.py" else mod.rpartition(".")[0]


def _private_module_outside(i: Import, target: str) -> str | None:
    """A private component `_m` of `target` that the importer is not inside (its own package may use it)."""
    parts = target.split(".")
    for k, part in enumerate(parts):
        if _private(part):
            home = ".".join(parts[:k])
            if not (_package_of(i.importer) == home or _package_of(i.importer).startswith(home + ".")):
                return ".".join(parts[: k + 1])
    return None


def _private_offenders() -> list[str]:
    mods = _modules()
    out = []
    for i in _library_imports():
        mod = _private_module_outside(i, i.target)
        if mod is not None:
            out.append(f"{i.where()}: private module: {i.importer} imports {mod}, private to its package")
        elif i.name and _private(i.name) and not i.name_is_module:
            out.append(f"{i.where()}: private name: {i.importer} imports {i.target}.{i.name}")
    # `m._x` where m is a library module bound by an import in this file
    for mod, path in mods.items():
        bound: dict[str, str] = {}
        tree = _tree(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("auditkit.") and a.asname:
                        bound[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(mod, path, node)
                for a in node.names:
                    if f"{base}.{a.name}" in mods:
                        bound[a.asname or a.name] = f"{base}.{a.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                chain, v = [node.attr], node.value
                while isinstance(v, ast.Attribute):
                    chain.append(v.attr)
                    v = v.value
                if not isinstance(v, ast.Name):
                    continue
                dotted = ".".join([bound.get(v.id, v.id), *reversed(chain[1:])])
                owner = _owner(dotted) if dotted.startswith("auditkit") else None
                if owner is not None and owner == dotted and owner != mod:
                    out.append(f"{_rel(path)}:{node.lineno}: private name: {mod} uses {owner}.{node.attr}")
    return out


def test_no_private_name_imported_from_another_module():
    _fail_if(_private_offenders(), "uses of another module's private name (make it public in its home)")


# ------------------------------------------------------------------------------------------- (c) layers


def test_every_module_has_a_layer():
    _fail_if([f"{_rel(p)}:1: no layer: {m} is in no entry of LAYERS (add it there and in docs/ARCHITECTURE.md)"
              for m, p in _modules().items() if _layer(m) is None], "modules without a layer")


def _layer_offenders() -> list[str]:
    out = []
    for (path, line, importer, owner), names in _grouped(_library_imports()).items():
        mine, theirs = _layer(importer), _layer(owner)
        if mine is None or theirs is None:
            continue              # test_every_module_has_a_layer names it
        if theirs[0] > mine[0]:
            out.append(f"{_rel(path)}:{line}: upward import: {importer} [{mine[1]}] imports {owner}{_names(names)} "
                       f"[{theirs[1]}]")
    return out


def test_no_import_from_a_higher_layer():
    _fail_if(_layer_offenders(), "imports from a higher layer (move the name down, or the importer up)")


def test_only_the_command_line_imports_click():
    """The library is usable without its command line (docs/ARCHITECTURE.md's first line)."""
    _fail_if([f"{i.where()}: click outside cli: {i.importer} imports {i.target}" for i in _imports()
              if i.target.split(".")[0] == "click" and _layer(i.importer) is not None
              and _layer(i.importer)[1] != "cli"], "imports of click outside auditkit/cli/")


def test_the_runner_imports_nothing_of_the_library():
    """The runner runs alone (a package's snapshot of it runs without auditkit installed)."""
    _fail_if([f"{i.where()}: runner imports the library: {i.importer} imports {i.target}"
              for i in _imports() if i.importer.startswith(RUNNER)
              and (i.target == "auditkit" or i.target.startswith("auditkit."))
              and not (i.target == RUNNER or i.target.startswith(RUNNER + "."))], "runner imports of the library")


def _shown(name: str) -> tuple[str, ...]:
    """How docs/ARCHITECTURE.md names a module or package of LAYERS."""
    if name == RUNNER:
        return ("`runner/`",)
    if name == "auditkit":
        return ("`auditkit/__init__.py`",)
    path = "auditkit/" + "/".join(name.split(".")[1:])
    return (f"`{path}/`", f"`{path}.py`")


def test_the_layer_map_is_the_one_in_the_docs():
    """docs/ARCHITECTURE.md's section "Layers" names every layer of LAYERS in order, bold, each followed by
    exactly its modules (before the next layer's name)."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = doc.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    starts = [section.find(f"**{layer}**") for layer, _ in LAYERS]
    problems = [f"layer {layer!r} is not named as **{layer}**" for (layer, _), at in zip(LAYERS, starts) if at < 0]
    if not problems and starts != sorted(starts):
        problems.append(f"the layers are not named in the order of LAYERS: {[layer for layer, _ in LAYERS]}")
    if not problems:
        ends = starts[1:] + [len(section)]
        everything = {shown for _, names in LAYERS for name in names for shown in _shown(name)}
        for (layer, names), start, end in zip(LAYERS, starts, ends):
            text = section[start:end]
            for name in names:
                if not any(shown in text for shown in _shown(name)):
                    problems.append(f"layer {layer!r} does not name {' or '.join(_shown(name))}")
            for shown in everything - {s for name in names for s in _shown(name)}:
                if shown in text:
                    problems.append(f"layer {layer!r} names {shown}, which LAYERS puts elsewhere")
    assert not problems, "docs/ARCHITECTURE.md, section Layers, against LAYERS:\n" + "\n".join(problems)


# ------------------------------------------------------------------------------------------- (d) size


def test_no_library_module_over_the_limit():
    offenders = []
    for mod, path in _modules().items():
        if mod.startswith(RUNNER) or _rel(path) in EXEMPT_FROM_SIZE:
            continue
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            offenders.append(f"{_rel(path)}:{MAX_LINES + 1}: too long: {lines} lines > {MAX_LINES} "
                             "(split it by responsibility)")
    _fail_if(offenders, f"library modules over {MAX_LINES} lines")


# ------------------------------------------------------------------------------ (e) CSV reads and renames


def _qualified_calls(path: Path):
    """(line, dotted name, call) of every call whose function is an imported name, resolved through the
    file's imports (`import pandas as pd; pd.read_csv` -> pandas.read_csv), plus (line, None, call) for the rest."""
    tree = _tree(path)
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                alias[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        chain, v = [], node.func
        while isinstance(v, ast.Attribute):
            chain.append(v.attr)
            v = v.value
        if isinstance(v, ast.Name) and v.id in alias:
            yield node.lineno, ".".join([alias[v.id], *reversed(chain)]), node
        else:
            yield node.lineno, None, node


def _library_files() -> list[Path]:
    return [p for m, p in _modules().items() if not m.startswith(RUNNER)]


def _csv_read_sites(files: list[Path] | None = None) -> list[str]:
    return [f"{_rel(p)}:{line}: CSV read site: {name}" for p in (files or _library_files())
            for line, name, _ in _qualified_calls(p) if name in CSV_READERS]


def _rename_sites(files: list[Path] | None = None) -> list[str]:
    out = []
    for p in files or _library_files():
        for line, name, call in _qualified_calls(p):
            if name in RENAMES:
                out.append(f"{_rel(p)}:{line}: atomic-rename site: {name}")
            elif (name is None and isinstance(call.func, ast.Attribute) and call.func.attr in PATH_RENAMES
                  and len(call.args) == 1 and not call.keywords):
                out.append(f"{_rel(p)}:{line}: atomic-rename site: Path.{call.func.attr} (.{call.func.attr}(target))")
    return out


def test_at_most_two_csv_read_sites():
    sites = _csv_read_sites()
    if len(sites) > MAX_CSV_READ_SITES:
        _fail_if(sites, f"CSV read sites in the library, at most {MAX_CSV_READ_SITES} allowed "
                        "(parse CSV text in one place; read run rows through it)")


def test_at_most_two_atomic_rename_sites():
    sites = _rename_sites()
    if len(sites) > MAX_RENAME_SITES:
        _fail_if(sites, f"atomic-rename sites in the library, at most {MAX_RENAME_SITES} allowed "
                        "(write through the package's atomic writers)")


def test_the_site_counters_see_what_they_count(tmp_path):
    """The counters themselves, on a file that holds one of each (and look-alikes that are not)."""
    src = tmp_path / "m.py"
    src.write_text("import csv\nimport os\nimport pandas as pd\nfrom csv import DictReader as DR\n"
                   "def f(p, t, s, store):\n    csv.reader(s)\n    DR(s)\n    pd.read_csv(s)\n    os.replace(p, t)\n"
                   "    p.replace(t)\n    s.replace('a', 'b')\n    store.read_csv(p)\n    p.rename(t)\n",
                   encoding="utf-8")
    assert [s.split(": ")[0] for s in _csv_read_sites([src])] == ["m.py:6", "m.py:7", "m.py:8"]
    assert [s.split(": ")[0] for s in _rename_sites([src])] == ["m.py:9", "m.py:10", "m.py:13"]


@pytest.fixture
def toy_library(tmp_path, monkeypatch):
    """A small library of its own under tmp_path/auditkit, read instead of the real one."""
    me = sys.modules[__name__]

    def make(files: dict[str, str]) -> None:
        for rel, text in files.items():
            p = tmp_path / "auditkit" / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
        monkeypatch.setattr(me, "REPO", tmp_path)
        monkeypatch.setattr(me, "ROOTS", {"auditkit": tmp_path / "auditkit"})
        for cached in (_modules, _imports):
            cached.cache_clear()

    yield make
    for cached in (_modules, _imports):
        cached.cache_clear()


def test_the_private_name_and_layer_rules_see_their_offenders(toy_library):
    toy_library({
        "__init__.py": "", "errors.py": "def _hidden(): pass\nfrom auditkit.package import store\n",
        "package/__init__.py": "", "package/_p.py": "X = 1\n",
        "package/store.py": "from auditkit.package import _p\nfrom auditkit.errors import _hidden\n",
        "cli/__init__.py": "", "cli/main.py": "import auditkit.errors as e\nfrom auditkit.package._p import X\n"
                                             "def f():\n    return e._hidden()\n",
    })
    assert sorted(s.split(": ")[0] + " " + s.split(": ")[1] for s in _private_offenders()) == [
        "auditkit/cli/main.py:2 private module", "auditkit/cli/main.py:4 private name",
        "auditkit/package/store.py:2 private name"]        # package/_p from its own package is fine
    assert [s.split(": ")[0] for s in _layer_offenders()] == ["auditkit/errors.py:2"]   # primitives -> package
