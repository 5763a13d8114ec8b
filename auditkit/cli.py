"""The `auditkit` command line: thin wrappers over the library.

Each command parses its arguments, calls one library function, renders the
result and sets the exit code: 0 everything holds, 1 findings, 2 the check
could not run (usage, unreadable input, broken schema) — also with `--json`.
"""

from __future__ import annotations

import json
import sys

import click

from auditkit import __version__
from auditkit.errors import AuditError
from auditkit.findings import Report

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def fail(exc: AuditError, as_json: bool = False) -> None:
    """Report an AuditError (the check could not run) and exit 2."""
    if as_json:
        click.echo(json.dumps({"ok": False, "exit_code": EXIT_ERROR, **exc.to_dict()}, indent=2, sort_keys=True))
    else:
        click.echo(exc.diagnostics(), err=True)
    sys.exit(EXIT_ERROR)


def emit(report: Report, as_json: bool) -> None:
    """Print a report (text or JSON) and exit with its code."""
    click.echo(report.to_json() if as_json else report.render_text())
    sys.exit(report.exit_code)


class AuditGroup(click.Group):
    """Click group that turns usage errors into exit 2 and AuditError into a clean message."""

    def main(self, *args, **kwargs):
        kwargs.setdefault("standalone_mode", True)
        try:
            return super().main(*args, **kwargs)
        except AuditError as exc:  # raised outside a command's own handler
            fail(exc)


@click.group(cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditkit")
def cli() -> None:
    """Make ML pretraining studies auditable."""


# --- verify / manifest (issue 2) -------------------------------------------

@cli.command("verify")
@click.argument("package", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--jobs", type=click.IntRange(1, 256), help="Files read in parallel (default: the machine's cores).")
@click.option("--deep", is_flag=True, help="Also re-evaluate every checkpoint's val_bpb (needs torch).")
@click.option("--max-members", type=int, help="Refuse archives with more members than this.")
@click.option("--max-bytes", type=int, help="Refuse archives whose members add up to more bytes than this.")
def verify_cmd(package, as_json, jobs, deep, max_members, max_bytes) -> None:
    """Prove PACKAGE (a directory, .tar, .tar.gz or .tgz) is whole, unaltered and well formed."""
    from auditkit.verify import verify_package

    def bar(total):
        from auditkit.verify import PROGRESS_MIN_BYTES

        if total < PROGRESS_MIN_BYTES:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="B", unit_scale=True, desc="verify", leave=False)

    show_bar = sys.stderr.isatty()
    try:
        report = verify_package(package, jobs=jobs, deep=deep, progress_factory=bar if show_bar else None,
                                max_members=max_members, max_bytes=max_bytes)
    except AuditError as exc:
        fail(exc, as_json)
    emit(report, as_json)


@cli.group("manifest")
def manifest_group() -> None:
    """Build a package's content-hashed MANIFEST."""


@manifest_group.command("build")
@click.argument("package", type=click.Path(file_okay=False))
def manifest_build_cmd(package) -> None:
    """Write MANIFEST.json and MANIFEST.csv for PACKAGE (no other file changes)."""
    from auditkit.manifest import build_manifest

    try:
        doc = build_manifest(package)
    except AuditError as exc:
        fail(exc)
    click.echo(f"wrote MANIFEST.json and MANIFEST.csv: {len(doc['files'])} files, root {doc['root']}")

# --- decide / replay-gate / tables (issue 3) --------------------------------

@cli.command("decide")
@click.argument("gate")
@click.option("--package", "package", default="ancillary", show_default=True, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite a recorded decision (it is evidence: think twice).")
def decide_cmd(gate, package, force) -> None:
    """Decide GATE from the package's frozen rules and raw rows; write analysis/GATE_decision.json."""
    from datetime import datetime, timezone

    from auditkit.replay import write_decision

    try:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        path, doc = write_decision(package, gate, now, force=force)
    except AuditError as exc:
        fail(exc)
    click.echo(f"decided gate {gate}: promoted {', '.join(doc['promoted']) or '(none)'}")
    click.echo(f"wrote {path}")


@cli.command("replay-gate")
@click.argument("gate", metavar="GATE|all")
@click.option("--package", "package", default="ancillary", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def replay_gate_cmd(gate, package, as_json) -> None:
    """Recompute GATE's decision (or every gate's) from the rules and raw rows and diff it with the record."""
    from auditkit.replay import render_gate, replay_all, replay_gate, replay_report

    try:
        replays = replay_all(package) if gate == "all" else [replay_gate(package, gate)]
    except AuditError as exc:
        fail(exc, as_json)
    report = replay_report(replays, package)
    if not as_json:
        for r in replays:
            click.echo(render_gate(r) + "\n")
    emit(report, as_json)


@cli.command("tables")
@click.option("--package", "package", default="ancillary", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Write tables here instead of the package.")
@click.option("--check", is_flag=True, help="Regenerate in memory and compare with the recorded tables.")
@click.option("--json", "as_json", is_flag=True)
def tables_cmd(package, out, check, as_json) -> None:
    """Regenerate the package's derived tables (CSV + JSON) and table_manifest.json."""
    from auditkit.tables import check_tables, generate_tables

    try:
        if check:
            emit(check_tables(package), as_json)
        entries = generate_tables(package, out)
    except AuditError as exc:
        fail(exc, as_json)
    click.echo(json.dumps({"ok": True, "tables": entries}, indent=2, sort_keys=True) if as_json
               else f"wrote {len(entries)} table file(s) and table_manifest.json under {out or package}")


@cli.command("counterfactual")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def counterfactual_cmd(manifest_path, as_json) -> None:
    """Planned training GPU-hours of a protocol manifest, and each gate's continue-everything counterfactual."""
    from tabulate import tabulate

    from auditkit.tables import manifest_counterfactual

    try:
        rows = manifest_counterfactual(manifest_path)
    except AuditError as exc:
        fail(exc, as_json)
    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True))
    else:
        click.echo(tabulate([[r[k] for k in ("item", "stage", "gate", "candidates", "cells", "budget_seconds")]
                             + [f"{r['gpu_hours']:.1f}" if r["gpu_hours"] is not None else "-"] for r in rows],
                            headers=["item", "stage", "gate", "candidates", "cells", "budget_s", "gpu_hours"],
                            disable_numparse=True, missingval="-"))

# --- run (issue 4) -----------------------------------------------------------

@cli.command("run")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(dir_okay=False), help="Candidate matrix CSV.")
@click.option("--config-id", required=True, help="The matrix row to train.")
@click.option("--seed", required=True, type=int)
@click.option("--budget", required=True, help="Wall-clock seconds (30s) or optimizer steps (200steps).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--timeout", type=float, help="Kill the run after this many seconds (default: 3x budget + 120).")
@click.option("--data", help="Data spec: markov:seed=N (default), text:PATH, parquet:PATH.")
@click.option("--eval-tokens", type=click.IntRange(1), help="Validation tokens scored (default 32768).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (its first steps are not timed).")
@click.option("--host", default="local", show_default=True, help="Host label for the printed row.")
def run_cmd(matrix_path, config_id, seed, budget, out, device, threads, timeout, data, eval_tokens, compile_,
            host) -> None:
    """Train one cell with the bundled runner and print its run row."""
    from pathlib import Path

    from tabulate import tabulate

    from auditkit.rows import read_csv_text
    from auditkit.runs import parse_budget, run_cell, summary_to_row

    try:
        b = parse_budget(budget)
        try:
            rows = read_csv_text(Path(matrix_path).read_text("utf-8"), matrix_path)[1]
        except OSError as exc:
            raise AuditError(f"cannot read the matrix: {exc}", path=matrix_path) from exc
        row = next((r for r in rows if r.get("config_id") == config_id), None)
        if row is None:
            raise AuditError(f"no row with config_id {config_id!r}", path=matrix_path,
                             hint=f"config_ids there: {', '.join(r.get('config_id', '') for r in rows)}")
        if timeout is None:
            timeout = (b.value * 3 + 120) if b.kind == "seconds" else 1800
        summary = run_cell(matrix_row=row, seed=seed, budget=b, out_dir=Path(out), run_id=f"{host}-{config_id}-s{seed}",
                           device=device, threads=threads, timeout=timeout,
                           settings={k: v for k, v in (("data", data), ("eval_tokens", eval_tokens),
                                                       ("compile", compile_)) if v})
    except AuditError as exc:
        fail(exc)
    ckpt = "checkpoint.safetensors" if summary.get("checkpoint") else ""
    row_out = summary_to_row(summary, host=host, stage="adhoc", budget=b, checkpoint_relpath=ckpt,
                             checkpoint_sha256=summary.get("checkpoint_sha256") or "")
    click.echo(tabulate(list(row_out.items()), tablefmt="plain"))
    if summary.get("error"):
        click.echo(f"error: {summary['error']}", err=True)
    sys.exit(EXIT_OK if summary["status"] == "ok" else EXIT_FINDINGS)

# --- protocol / figures (issue 5, 6) ------------------------------------------

@cli.group()
def protocol() -> None:
    """Run a staged protocol and join host outputs into one package."""


@protocol.command("run")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Package directory to write.")
@click.option("--host", "hosts", multiple=True, required=True, help="Host(s) whose cells to run (repeat, or 'all').")
@click.option("--no-wait", is_flag=True, help="Stop at a gate that waits for another host's rows (exit 3).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", help="Dask scheduler address (tcp://HOST:8786), with --executor dask.")
def protocol_run_cmd(manifest_path, out, hosts, no_wait, executor, scheduler) -> None:
    """Run every cell of MANIFEST for the given host(s), stage by stage."""
    from pathlib import Path

    from auditkit.protocol import load_manifest
    from auditkit.protocol_run import EXIT_WAITING, run_protocol

    try:
        manifest = load_manifest(manifest_path)
        hosts = list(manifest.protocol.hosts) if hosts == ("all",) else list(hosts)
        ex = _make_executor(executor, scheduler, manifest)
        outcome = run_protocol(manifest, Path(out), hosts, executor=ex, wait=not no_wait,
                               log=lambda m: click.echo(m, err=True))
    except AuditError as exc:
        fail(exc)
    if not outcome.complete:
        click.echo(f"waiting: {len(outcome.waiting_for)} cell(s) of other hosts are not in {out} yet, e.g.")
        for line in outcome.waiting_for[:5]:
            click.echo(f"  {line}")
        click.echo("merge their outputs (auditkit protocol merge) and run again.")
        sys.exit(EXIT_WAITING)
    click.echo(f"complete: {outcome.cells_run} cell(s) run now; package {out} is finalized "
               f"(verify it with: auditkit verify {out})")


def _make_executor(kind: str, scheduler: str | None, manifest):
    if kind == "local":
        return None
    if not scheduler:
        raise AuditError("--executor dask needs --scheduler tcp://HOST:8786")
    from auditkit.dask_executor import DaskExecutor

    return DaskExecutor.connect(scheduler, manifest)


@protocol.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--into", required=True, type=click.Path(file_okay=False), help="Directory to merge into.")
def protocol_merge_cmd(sources, into) -> None:
    """Join host output directories SOURCES into one (sources are not changed)."""
    from pathlib import Path

    from auditkit.protocol_run import merge_packages

    try:
        counts = merge_packages([Path(s) for s in sources], Path(into), log=lambda m: click.echo(m, err=True))
    except AuditError as exc:
        fail(exc)
    click.echo(f"merged {len(sources)} output(s) into {into}: {counts['rows']} new row(s), {counts['files']} file(s)")


@cli.command("figures")
@click.option("--package", "package", default="ancillary", show_default=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Write figures here instead of the package.")
@click.option("--check", is_flag=True, help="Regenerate and compare with the recorded figures.")
@click.option("--json", "as_json", is_flag=True)
def figures_cmd(package, out, check, as_json) -> None:
    """Regenerate the package's figures (PNG) and figure_manifest.json."""
    from pathlib import Path

    try:
        from auditkit.figures import check_figures, generate_figures

        if not (Path(package) / "protocol.json").is_file():
            raise AuditError("not a package directory (no protocol.json)", path=package)
        if check:
            emit(check_figures(Path(package)), as_json)
        entries = generate_figures(Path(package), Path(out) if out else None)
    except ImportError as exc:
        fail(AuditError(f"figures need matplotlib: {exc}", hint="pip install 'auditkit[figures]'"), as_json)
    except AuditError as exc:
        fail(exc, as_json)
    click.echo(f"wrote {len(entries)} figure(s) and figure_manifest.json")


def main() -> None:
    cli(prog_name="auditkit")


if __name__ == "__main__":
    main()
