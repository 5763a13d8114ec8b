"""The finding-code catalogue (auditkit/codes.py, docs/FINDINGS.md) against the code.

- docs/FINDINGS.md is exactly what the catalogue renders;
- every kebab-case string constant in auditkit/ is a catalogued code or an
  explicitly allowed non-code string, and every catalogued code is still in the
  source (no dead entries);
- the advice in the catalogue and in the messages of the findings themselves
  never tells an auditor to regenerate the evidence a finding is about;
- `Finding` records the codes it is made with, and the session hook in
  conftest.py fails a session that made an uncatalogued one.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from auditkit import codes
from auditkit.codes import BY_CODE, CODES, Family, render_markdown, uncatalogued
from auditkit.findings import EMITTED_CODES, Finding

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "auditkit"
FINDINGS_MD = REPO / "docs" / "FINDINGS.md"

KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+")
CODE_SHAPE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# an f-string whose text is kebab-case around its {fields}: f"{key}-differs" makes codes at run time
TEMPLATE = re.compile(r"(?:\{\}|[a-z0-9]+)(?:-(?:\{\}|[a-z0-9]+))+")

# Kebab-case strings in auditkit/ that are not finding codes. Keep it short and say what each is.
NON_CODES = {
    "utf-8",                                   # an encoding
    "replay-gate", "seeds-bound",              # a command name; a --require choice
    "remote-results",                          # the run-CSV directory of a package
    "auditkit-warm",                           # a thread's name
    "re-evaluated",                            # a count in verify's report (`checked`)
    "re-evaluation",                           # the report's verdict for `verify --deep` (report/build.py)
    "content-root", "package-root",            # what a timestamp token covers / its label
    "other-bytes",                             # a timestamp token's status
    # signature schemes (securesystemslib's names, auditkit.evidence.keys)
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsassa-pss-sha256",
    # JSON Schema names (auditkit.package.schemas.SCHEMA_NAMES)
    "run-row", "matrix-row", "run-summary", "checkpoint-metadata", "table-manifest", "figure-manifest",
    "dsse-envelope",
    # event types of evidence/events.jsonl (auditkit.evidence.events)
    "rules-frozen", "cell-started", "row-landed", "gate-decided", "package-finalized", "seeds-anchored",
    "log-repaired",
    "system-out",                              # a JUnit XML element (report/junit.py)
    "date-time",                               # a JSON Schema format (auditkit.package.schemas.format_checker)
    "could-not-check",                         # SARIF notification / JUnit error type of an exit 2 (cli/output.py)
    "utf-16-le",                               # an encoding (GitHub's line hash, report/sarif.py)
    # interval methods of replay-gate's uncertainty (auditkit.stats.uncertainty.Method)
    "paired-t-hosts-fixed", "paired-t-cells", "paired-t-hosts-random",
}
# Codes built at run time from an f-string template, and the codes each makes.
DYNAMIC = {
    "{}-differs": {"eligible-differs", "rank-differs", "wins-differs"},   # gates/replay.py, profile/audit.py
    "{}-mismatch": {"host-mismatch", "stage-mismatch"},                  # profile/view.py
}
NON_CODE_TEMPLATES = {"cell-{}-{}",            # a dask task key
                      "auditkit-cancel-{}",    # a dask cancellation event's name
                      # claim ids that report/claims.py:claims_from_study writes into claims.json
                      "{}-{}", "{}-{}-{}", "{}-winner", "{}-winner-cells", "host-spearman-{}-{}-{}",
                      "winner-mean-best-at-{}"}

# Advice that regenerates the evidence a finding is about (the finding would vanish, unexplained).
REGENERATE = re.compile(
    r"manifest build|auditkit (?:tables|figures|decide)\b|\brebuild\b|\bregenerate (?:it|them|the|with)\b"
    r"|\bdecide it\b|to write it\b|\bgenerate the\b", re.I)


@lru_cache(maxsize=None)
def _trees() -> tuple[tuple[str, ast.AST], ...]:
    return tuple((p.relative_to(REPO).as_posix(), ast.parse(p.read_text("utf-8"), str(p)))
                 for p in sorted(SOURCE.rglob("*.py")))


def _template(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)


@lru_cache(maxsize=None)
def _scan() -> tuple[dict[str, list[str]], set[str], dict[str, list[str]]]:
    """(kebab constant -> where, every string constant, kebab f-string template -> where)."""
    kebab: dict[str, list[str]] = {}
    strings: set[str] = set()
    templates: dict[str, list[str]] = {}
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
                if KEBAB.fullmatch(node.value):
                    kebab.setdefault(node.value, []).append(f"{rel}:{node.lineno}")
            elif isinstance(node, ast.JoinedStr):
                t = _template(node)
                if "{}" in t and TEMPLATE.fullmatch(t):
                    templates.setdefault(t, []).append(f"{rel}:{node.lineno}")
    return kebab, strings, templates


def test_findings_md_is_generated_from_the_catalogue():
    want = render_markdown()
    got = FINDINGS_MD.read_text("utf-8") if FINDINGS_MD.is_file() else "(no such file)"
    assert got == want, ("docs/FINDINGS.md is not what auditkit/codes.py renders; "
                         "run `python -m auditkit.codes > docs/FINDINGS.md`")


def test_module_prints_the_document():
    out = subprocess.run([sys.executable, "-m", "auditkit.codes"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == render_markdown()


def test_catalogue_entries_are_well_formed():
    seen = set()
    for c in CODES:
        assert c.code not in seen, f"{c.code} is catalogued twice"
        seen.add(c.code)
        assert CODE_SHAPE.fullmatch(c.code), c.code
        assert isinstance(c.family, Family), c.code
        for text in (c.meaning, c.action):
            assert text.strip() and text.rstrip().endswith((".", ")", "?")), f"{c.code}: {text!r}"
        assert not REGENERATE.search(c.action), f"{c.code}: its advice regenerates evidence: {c.action!r}"
    assert set(BY_CODE) == seen
    assert codes.lookup("file-changed").family is Family.MANIFEST
    assert codes.lookup("no-such-code") is None


def test_every_family_is_rendered_with_its_codes():
    text = render_markdown()
    for fam in {c.family for c in CODES}:
        assert f'<a id="{fam.value}"></a>' in text
    for c in CODES:
        assert f"| `{c.code}` |" in text


def test_every_kebab_constant_is_a_code_or_allowed():
    kebab, _, _ = _scan()
    unknown = {s: where for s, where in kebab.items() if s not in BY_CODE and s not in NON_CODES}
    assert not unknown, (
        "kebab-case strings in auditkit/ that are neither catalogued codes nor allowed non-codes: "
        + "; ".join(f"{s} ({', '.join(w[:3])})" for s, w in sorted(unknown.items()))
        + ". A new finding code: add it to auditkit/codes.py and run `python -m auditkit.codes > docs/FINDINGS.md`; "
          "another kind of string: add it to NON_CODES in tests/test_codes.py.")


def test_every_code_template_is_known():
    _, _, templates = _scan()
    unknown = {t: w for t, w in templates.items() if t not in DYNAMIC and t not in NON_CODE_TEMPLATES}
    assert not unknown, f"f-strings that look like codes made at run time: {unknown}; list them in DYNAMIC"
    for t, made in DYNAMIC.items():
        assert t in templates, f"no f-string {t!r} in auditkit/ any more: remove it from DYNAMIC"
        assert not uncatalogued(made), f"{t} makes uncatalogued codes {uncatalogued(made)}"


def test_no_dead_catalogue_entries():
    _, strings, templates = _scan()
    made = set().union(*(DYNAMIC[t] for t in templates if t in DYNAMIC))
    dead = sorted(c.code for c in CODES if c.code not in strings and c.code not in made)
    assert not dead, f"catalogued codes that no source file in auditkit/ emits any more: {dead}"


def test_allowed_non_codes_are_not_codes_and_are_still_used():
    kebab, _, _ = _scan()
    assert not NON_CODES & BY_CODE.keys()
    stale = sorted(NON_CODES - kebab.keys())
    assert not stale, f"NON_CODES lists strings auditkit/ no longer holds: {stale}"


def test_finding_messages_do_not_advise_regenerating_evidence():
    bad = []
    for rel, tree in _trees():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            args = list(node.args) + [k.value for k in node.keywords]
            if not any(isinstance(a, ast.Constant) and a.value in BY_CODE for a in args):
                continue          # not a call that makes a finding
            for sub in ast.walk(node):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value not in BY_CODE \
                        and REGENERATE.search(sub.value):
                    bad.append(f"{rel}:{sub.lineno}: {sub.value!r}")
    assert not bad, ("finding messages that tell an auditor to regenerate the evidence the finding is about "
                     "(say what it means and how to investigate instead): " + "; ".join(bad))


def test_regenerate_pattern_catches_the_old_advice():
    for text in ("build it with `auditkit manifest build PATH`", "run `auditkit figures` to write it",
                 "regenerate with auditkit tables", "decide it: auditkit decide g1", "rebuild both",
                 "generate the tables: auditkit tables --package PATH"):
        assert REGENERATE.search(text), text
    for text in ("the recorded hash is not the regenerated table's", "compare it with the published copy"):
        assert not REGENERATE.search(text), text


def test_finding_records_its_code():
    Finding("a.csv", "row-not-in-log")
    assert "row-not-in-log" in EMITTED_CODES
    assert uncatalogued(["row-not-in-log", "zz-not-a-code"]) == ["zz-not-a-code"]


def _inner_session(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """A pytest session (in a subprocess: EMITTED_CODES is per process) using conftest.py's hook,
    whose one passing test makes a finding with `code`."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('_repo_conftest', {str(REPO / 'tests' / 'conftest.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "pytest_sessionfinish = mod.pytest_sessionfinish\n")
    (tmp_path / "test_inner.py").write_text(
        "from auditkit.findings import Finding\n\n"
        f"def test_makes_a_finding():\n    Finding('x', {code!r})\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "test_inner.py"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})


def test_session_fails_on_an_uncatalogued_code(tmp_path):
    out = _inner_session(tmp_path, "zz-uncatalogued-code")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "zz-uncatalogued-code" in out.stdout + out.stderr
    assert "1 passed" in out.stdout


def test_session_passes_with_catalogued_codes(tmp_path):
    out = _inner_session(tmp_path, "file-changed")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_lazy_command_map_names_every_command_of_every_cli_module():
    """auditkit.cli.main loads a command's module when it runs; its map must be complete and exact."""
    import importlib
    import pkgutil

    import auditkit.cli as cli_pkg
    from auditkit.cli.main import COMMAND_MODULES

    found = {}
    for info in pkgutil.iter_modules(cli_pkg.__path__):
        if info.name.startswith("cmd_"):
            for command in importlib.import_module(f"auditkit.cli.{info.name}").COMMANDS:
                found[command.name] = info.name
    assert found == COMMAND_MODULES


def test_verify_loads_no_plotting_table_or_profile_code():
    import subprocess
    import sys

    code = ("import sys\nfrom auditkit.cli.main import cli\ncli.get_command(None, 'verify')\n"
            "print(sorted(m for m in ('matplotlib', 'tabulate', 'pandas', 'auditkit.profile', 'auditkit.derived')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
