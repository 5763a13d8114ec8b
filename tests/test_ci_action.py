"""The composite action (action.yml) and the pre-commit hooks (.pre-commit-hooks.yaml): their shell
steps, run locally as GitHub and pre-commit run them, pass on a clean package and fail as they
should on findings (1) and on a package that cannot be checked (2), always leaving whole SARIF
and JUnit files for the upload step."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft4Validator

from auditkit.package.manifest import build_manifest
from fixtures.paperpkg import build_paper_package

pytestmark = pytest.mark.slow   # about twenty auditkit processes

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SARIF = json.loads((DATA / "sarif" / "sarif-schema-2.1.0.json").read_text())
BIN = str(Path(sys.executable).parent)   # this environment's `auditkit`


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A repository checkout holding a clean package (with claims.json) at ancillary/."""
    repo = tmp_path_factory.mktemp("ci")
    (repo / ".git").mkdir()
    pkg = build_paper_package(repo / "ancillary")
    shutil.copy(DATA / "paper06_claims.json", pkg / "claims.json")
    build_manifest(pkg)
    return repo


def _env() -> dict:
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}


class Action:
    """Runs action.yml's steps the way a runner does: `if:` conditions, `${{ }}` expressions in `env`,
    each `run` with `bash --noprofile --norc -eo pipefail`, outputs through $GITHUB_OUTPUT."""

    def __init__(self, cwd: Path, inputs: dict):
        self.doc = yaml.safe_load((REPO / "action.yml").read_text())
        self.cwd = cwd
        self.inputs = {k: str(v.get("default", "")) for k, v in self.doc["inputs"].items()} | inputs
        self.outputs: dict[str, dict] = {}
        self.uses: list[dict] = []
        self.exits: list[int] = []

    def value(self, expr: str) -> str:
        expr = expr.strip()
        if expr.startswith("inputs."):
            return self.inputs[expr.removeprefix("inputs.")]
        if expr == "github.action_path":
            return str(REPO)
        m = re.fullmatch(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expr)
        if m:
            return self.outputs.get(m[1], {}).get(m[2], "")
        raise AssertionError(f"an expression the test does not know: {expr}")

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{\{(.*?)\}\}", lambda m: self.value(m[1]), str(text))

    def condition(self, cond: str | None) -> bool:
        if cond is None:
            return True
        ok = True
        for part in cond.split("&&"):
            part = part.strip()
            if part == "always()":
                continue
            m = re.fullmatch(r"(inputs\.[\w-]+) == '(.*)'", part)
            assert m, f"a condition the test does not know: {part}"
            ok &= self.value(m[1]) == m[2]
        return ok

    def run(self) -> list[int]:
        for step in self.doc["runs"]["steps"]:
            if not self.condition(step.get("if")):
                continue
            if "uses" in step:
                self.uses.append({"uses": step["uses"], "with": {k: self.expand(v) for k, v in step["with"].items()}})
                continue
            assert step["shell"] == "bash"
            out = self.cwd / ".github_output"
            out.write_text("")
            env = _env() | {k: self.expand(v) for k, v in step.get("env", {}).items()} | {"GITHUB_OUTPUT": str(out)}
            r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                               cwd=self.cwd, env=env, capture_output=True, text=True, timeout=300)
            assert "Traceback" not in r.stderr, r.stderr
            if "id" in step:
                self.outputs[step["id"]] = dict(line.split("=", 1) for line in out.read_text().splitlines())
            self.exits.append(r.returncode)
            if r.returncode:   # a failed step ends the job (the upload step runs on always())
                break
        return self.exits


def sarif_runs(sarif_dir: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(sarif_dir.glob("*.sarif")):
        log = json.loads(f.read_text())
        assert list(Draft4Validator(SARIF).iter_errors(log)) == []
        (out[f.stem],) = log["runs"]
    return out


def junit_files(junit_dir: Path) -> list[str]:
    for f in junit_dir.glob("*.xml"):
        ET.fromstring(f.read_bytes())
    return sorted(f.stem for f in junit_dir.glob("*.xml"))


def test_the_action_passes_on_a_clean_package(checkout):
    act = Action(checkout, {"install": "false", "output-dir": "out-clean"})
    assert act.run() == [0, 0]
    assert act.outputs["audit"] == {"status": "0", "sarif-dir": "out-clean/sarif"}
    runs = sarif_runs(checkout / "out-clean" / "sarif")
    assert set(runs) == {"verify", "replay-gate", "claims"}
    assert all(r["invocations"][0]["exitCode"] == 0 and not r["results"] for r in runs.values())
    assert junit_files(checkout / "out-clean" / "junit") == ["claims", "replay-gate", "verify"]
    (upload,) = act.uses
    assert upload["uses"].startswith("github/codeql-action/upload-sarif@")
    assert upload["with"]["sarif_file"] == "out-clean/sarif"


def test_the_action_fails_on_a_finding_and_passes_the_evidence_options(checkout, tmp_path):
    from fixtures.evidence import signing_key

    _, pub = signing_key(tmp_path)
    act = Action(checkout, {"install": "false", "output-dir": "out-signed", "require": "signed",
                            "trusted-keys": f"{pub}\n"})
    assert act.run() == [0, 1]   # the audit step records; the last step fails the job
    assert act.outputs["audit"]["status"] == "1"
    runs = sarif_runs(checkout / "out-signed" / "sarif")
    assert "evidence-below-required" in {r["ruleId"] for r in runs["verify"]["results"]}
    assert len(act.uses) == 1    # code scanning still gets the SARIF


def test_the_action_fails_with_two_when_nothing_can_be_checked(checkout):
    act = Action(checkout, {"install": "false", "output-dir": "out-gone", "package": "no-such-package",
                            "upload-sarif": "false"})
    assert act.run() == [0, 2]
    assert act.outputs["audit"]["status"] == "2"
    runs = sarif_runs(checkout / "out-gone" / "sarif")
    assert set(runs) == {"verify", "replay-gate"}
    for r in runs.values():   # whole documents that say the check could not run
        assert r["invocations"][0]["executionSuccessful"] is False and r["results"] == []
    assert junit_files(checkout / "out-gone" / "junit") == ["replay-gate", "verify"]
    assert act.uses == []


def test_the_install_step_installs_this_checkout_under_the_free_name():
    doc = yaml.safe_load((REPO / "action.yml").read_text())
    (install,) = [s for s in doc["runs"]["steps"] if "pip install" in s.get("run", "")]
    assert install["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert '"${ACTION_PATH}[figures]"' in install["run"]


@pytest.mark.parametrize("hook", [h["id"] for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())])
def test_pre_commit_hooks_pass_and_fail_as_they_should(checkout, tmp_path, hook):
    (h,) = [x for x in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text()) if x["id"] == hook]
    assert h["language"] == "python" and h["pass_filenames"] is False
    files = re.compile(h["files"])
    assert files.search("ancillary/remote-results/x.csv") and not files.search("src/model.py")
    cmd = shlex.split(h["entry"]) + h.get("args", [])

    def hook_exit(cwd: Path) -> subprocess.CompletedProcess:
        # pre-commit runs `entry args` from the repository root, with no file names
        return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)

    r = hook_exit(checkout)
    assert r.returncode == 0, r.stdout + r.stderr
    broken = tmp_path / "repo"
    shutil.copytree(checkout / "ancillary", broken / "ancillary")
    decision = broken / "ancillary" / "analysis" / "stage2_decision.json"
    doc = json.loads(decision.read_text())
    doc["promoted"] = list(reversed(doc["promoted"]))[:1]     # a decision edited by hand
    decision.write_text(json.dumps(doc, indent=2))
    r = hook_exit(broken)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
