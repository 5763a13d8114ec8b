"""The `auditkit` command line: thin commands over the library (see `main.py`)."""

from auditkit.cli.main import cli, main

__all__ = ["cli", "main"]
