"""`auditkit run` (one cell) and `auditkit protocol run|merge` (a staged study)."""

from __future__ import annotations

import sys

import click

from auditkit.cli.output import emit


def _log(message: str) -> None:
    click.echo(message, err=True)


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
    from auditkit.app.study import run_cell

    settings = {k: v for k, v in (("data", data), ("eval_tokens", eval_tokens), ("eval_seq_len", eval_seq_len),
                                  ("tokenizer", tokenizer), ("vocab_size", vocab_size), ("compile", compile_)) if v}
    sys.exit(emit(run_cell(matrix_path, config_id, seed=seed, budget=budget, out=out, device=device, threads=threads,
                           timeout=timeout, settings=settings, host=host, rng_seed=rng_seed)))


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
    from auditkit.app.study import protocol_run

    sys.exit(emit(protocol_run(manifest_path, out, hosts, log=_log, executor=executor, scheduler=scheduler,
                               wait=not no_wait, tsa_urls=list(tsa_urls), sign_keys=list(sign_keys), evidence=evidence,
                               tsa_timeout=tsa_timeout)))


@protocol_group.command("merge")
@click.argument("sources", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--into", required=True, type=click.Path(file_okay=False), help="Directory to merge into.")
def protocol_merge_cmd(sources, into) -> None:
    """Join host output directories SOURCES into one (sources are not changed; a refused merge writes nothing)."""
    from auditkit.app.study import protocol_merge

    sys.exit(emit(protocol_merge(sources, into, log=_log)))


COMMANDS = [run_cmd, protocol_group]
