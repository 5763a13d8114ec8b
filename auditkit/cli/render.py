"""Text rendering for the commands that print tables (kept apart from the commands)."""

from __future__ import annotations

from tabulate import tabulate


def counterfactual_table(rows: list[dict]) -> str:
    cols = ("item", "stage", "gate", "candidates", "cells", "budget_seconds")
    return tabulate([[r[k] for k in cols] + [f"{r['gpu_hours']:.1f}" if r["gpu_hours"] is not None else "-"]
                     for r in rows],
                    headers=["item", "stage", "gate", "candidates", "cells", "budget_s", "gpu_hours"],
                    disable_numparse=True, missingval="-")


def run_row_table(row: dict) -> str:
    return tabulate(list(row.items()), tablefmt="plain")
