"""`auditkit run` (one cell) and `auditkit protocol run|merge` (a staged study)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from auditkit.cli.common import EXIT_FINDINGS, EXIT_OK, fail
from auditkit.cli.render import run_row_table
from auditkit.errors import AuditError
from auditkit.study.signals import Stopped, stop_on_signals


def stopped(exc: Stopped) -> None:
    """A run stopped by SIGINT/SIGTERM/SIGHUP: its runner is gone; exit 128 + the signal."""
    click.echo(f"stopped by {exc}: the running cell was killed and left no row; run the same command "
               "again to resume", err=True)
    sys.exit(exc.exit_code)


@click.command("run")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(dir_okay=False), help="Candidate matrix CSV.")
@click.option("--config-id", required=True, help="The matrix row to train.")
@click.option("--seed", required=True, type=int)
@click.option("--rng-seed", type=click.IntRange(0, 2 ** 62 - 1),
              help="Seed the generators with this instead of --seed (kept as the run's identity), as an anchored stage does.")
@click.option("--budget", required=True, help="Wall-clock seconds (30s) or optimizer steps (200steps).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]))
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--timeout", type=float, help="Kill the run after this many seconds (default: 3x budget + 120).")
@click.option("--data", help="Data spec: markov:seed=N (default), text:PATH[,val=F], parquet:PATH[,val=F].")
@click.option("--eval-tokens", type=click.IntRange(1), help="Validation targets scored (runner default 524288).")
@click.option("--eval-seq-len", type=click.IntRange(1), help="Evaluation context in tokens (runner default 128).")
@click.option("--tokenizer", type=click.Choice(["auto", "bytes", "bpe"]), help="auto: bytes for markov, BPE for text.")
@click.option("--vocab-size", type=click.IntRange(260), help="BPE vocabulary size (runner default 8192).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model (its first steps are not timed).")
@click.option("--host", default="local", show_default=True, help="Host label for the printed row.")
def run_cmd(matrix_path, config_id, seed, rng_seed, budget, out, device, threads, timeout, data, eval_tokens, eval_seq_len,
            tokenizer, vocab_size, compile_, host) -> None:
    """Train one cell with the bundled runner and print its run row."""
    from auditkit.study.runs import run_adhoc

    settings = {k: v for k, v in (("data", data), ("eval_tokens", eval_tokens), ("eval_seq_len", eval_seq_len),
                                  ("tokenizer", tokenizer), ("vocab_size", vocab_size), ("compile", compile_)) if v}
    try:
        with stop_on_signals():
            summary, row = run_adhoc(matrix_path, config_id, seed=seed, budget=budget, out=Path(out),
                                     device=device, threads=threads, timeout=timeout, settings=settings, host=host,
                                     rng_seed=rng_seed)
    except AuditError as exc:
        fail(exc)
    except Stopped as exc:
        stopped(exc)
    click.echo(run_row_table(row))
    if summary.get("error"):
        click.echo(f"error: {summary['error']}", err=True)
    sys.exit(EXIT_OK if summary["status"] == "ok" else EXIT_FINDINGS)


@click.group("protocol")
def protocol_group() -> None:
    """Run a staged protocol and join host outputs into one package."""


@protocol_group.command("run")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Package directory to write.")
@click.option("--host", "hosts", multiple=True, required=True, help="Host(s) whose cells to run (repeat, or 'all').")
@click.option("--no-wait", is_flag=True, help="Stop at a gate that waits for another host's rows (exit 3).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True)
@click.option("--scheduler", help="Dask scheduler address (tcp://HOST:8786), with --executor dask.")
@click.option("--tsa", "tsa_urls", multiple=True, help="RFC 3161 TSA URL: timestamp every freeze and decision (repeatable).")
@click.option("--sign-key", "sign_keys", multiple=True, type=click.Path(dir_okay=False),
              help="Ed25519 or ECDSA P-256 private key (PEM): sign decisions and the package (repeatable).")
@click.option("--tsa-timeout", type=click.FloatRange(min=0, min_open=True, max=3600), default=30.0,
              show_default=True, help="Seconds one exchange with a TSA may take in all (connect, send, answer).")
@click.option("--evidence", is_flag=True, help="Keep the event log (evidence/) even without --tsa or --sign-key.")
def protocol_run_cmd(manifest_path, out, hosts, no_wait, executor, scheduler, tsa_urls, sign_keys, tsa_timeout,
                     evidence) -> None:
    """Run every cell of MANIFEST for the given host(s), stage by stage."""
    from auditkit.study.run import EXIT_WAITING, run_study

    try:
        with stop_on_signals():
            outcome = run_study(manifest_path, Path(out), list(hosts), executor=executor, scheduler=scheduler,
                                wait=not no_wait, log=lambda m: click.echo(m, err=True), tsa_urls=list(tsa_urls),
                                sign_keys=list(sign_keys), evidence=evidence, tsa_timeout=tsa_timeout)
    except AuditError as exc:
        fail(exc)
    except Stopped as exc:
        stopped(exc)
    if not outcome.complete:
        click.echo(f"waiting: {len(outcome.waiting_for)} cell(s) of other hosts are not in {out} yet, e.g.")
        for line in outcome.waiting_for[:5]:
            click.echo(f"  {line}")
        click.echo("merge their outputs (auditkit protocol merge) and run again.")
        sys.exit(EXIT_WAITING)
    state = "was finalized already and is unchanged" if outcome.finalized == "unchanged" else "is finalized"
    click.echo(f"complete: {outcome.cells_run} cell(s) run now; package {out} {state} "
               f"(verify it with: auditkit verify {out})")


@protocol_group.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--into", required=True, type=click.Path(file_okay=False), help="Directory to merge into.")
def protocol_merge_cmd(sources, into) -> None:
    """Join host output directories SOURCES into one (sources are not changed; a refused merge writes nothing)."""
    from auditkit.study.merge import merge_packages

    try:
        with stop_on_signals():
            counts = merge_packages([Path(s) for s in sources], Path(into), log=lambda m: click.echo(m, err=True))
    except AuditError as exc:
        fail(exc)
    except Stopped as exc:
        click.echo(f"stopped by {exc}: the target holds all of this merge or none of it", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"merged {len(sources)} output(s) into {into}: {counts['rows']} new row(s), {counts['files']} file(s)")


COMMANDS = [run_cmd, protocol_group]
