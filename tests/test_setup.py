"""The two commands at the top of README.md work as written on a fresh machine whose only
Python is a system one that refuses `pip install` (Debian's externally-managed-environment),
and `.ci/run` goes the same way."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def readme_commands() -> list[str]:
    """The lines of the first ```bash block of README.md."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    setup_and_audit, setup_and_test = readme_commands()[:2]
    for cmd in (setup_and_audit, setup_and_test):
        assert cmd.startswith("bash scripts/bootstrap.sh && ")
        # no "activate first": every command names the environment's own executables
        assert re.findall(r"&& (\S+)", cmd) and all(exe.startswith(".venv/bin/") for exe in re.findall(r"&& (\S+)", cmd))
    assert "auditkit verify ancillary/" in setup_and_audit and "pytest" in setup_and_test
    ci = (REPO / ".ci/run").read_text()
    assert setup_and_test.split(" && ", 1)[1] in ci and "bash scripts/bootstrap.sh" in ci


def fake_system_python(where: Path) -> Path:
    """A Python outside any virtual environment whose `pip install` is refused the way Debian's
    is: this interpreter's binary under a prefix of its own whose stdlib carries an
    EXTERNALLY-MANAGED marker (pip honours it only outside a venv, as here)."""
    base_stdlib = Path(sysconfig.get_paths(vars={"installed_base": sys.base_prefix,
                                                 "base": sys.base_prefix})["stdlib"])
    base_exe = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    lib = where / "lib" / PYVER
    lib.mkdir(parents=True)
    for entry in base_stdlib.iterdir():
        (lib / entry.name).symlink_to(entry)
    # Debian's python3 keeps pip outside the stdlib, in <prefix>/lib/python3/dist-packages, found
    # from the prefix: mirror it, or the copy would have no pip to refuse with
    debian = Path(sys.base_prefix) / "lib" / "python3" / "dist-packages"
    if debian.is_dir():
        (where / "lib" / "python3").mkdir()
        (where / "lib" / "python3" / "dist-packages").symlink_to(debian)
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=this Python is managed by the system: use a virtual environment\n")
    (where / "bin").mkdir()
    exe = where / "bin" / "python3"
    shutil.copy2(base_exe, exe)  # a copy, not a link: the prefix is found from where it lies
    return exe


def fresh_clone(dest: Path) -> Path:
    """The checkout's files as a fresh clone would have them (tracked and new, none ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def system_env(fake_bin: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PYTHONSAFEPATH", "CONDA_PREFIX")
           and not k.startswith("PYTEST")}
    env["PATH"] = f"{fake_bin}:{SYSTEM_PATH}"
    return env


@pytest.mark.slow
def test_readme_first_command_in_a_fresh_clone_under_an_externally_managed_python(tmp_path):
    system = fake_system_python(tmp_path / "system")
    env = system_env(system.parent)
    # the emulation is faithful: not a venv, and pip refuses to install into it
    probe = subprocess.run([str(system), "-c", "import sys; print(sys.prefix == sys.base_prefix, sys.prefix)"],
                           capture_output=True, text=True, env=env, check=True)
    assert probe.stdout.split() == ["True", str(tmp_path / "system")]
    refused = subprocess.run([str(system), "-m", "pip", "install", "--dry-run", "six"], capture_output=True,
                             text=True, env=env)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr

    clone = fresh_clone(tmp_path / "clone")
    setup_and_audit = readme_commands()[0]
    r = subprocess.run(["bash", "-c", setup_and_audit], cwd=clone, env=env, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "creating .venv" in r.stderr
    for line in ("OK: verify ancillary/", "OK: replay-gate ancillary", "OK: tables --check"):
        assert line in r.stdout, r.stdout[-3000:]
    venv_python = clone / ".venv" / "bin" / "python"
    where = subprocess.run([str(venv_python), "-c", "import auditkit, sys; print(sys.prefix != sys.base_prefix, "
                            "auditkit.__file__)"], capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert where.stdout.split() == ["True", str(clone / "auditkit" / "__init__.py")]
    # nothing went into the system Python
    assert not list((tmp_path / "system").glob("lib/*/site-packages/auditkit*"))
    # run again (README's second command starts the same way): quick, nothing reinstalled
    again = subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=clone, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "already set up" in again.stderr, again.stderr
