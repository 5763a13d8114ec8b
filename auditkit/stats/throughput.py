"""The wall-clock confound (docs/STATISTICS.md): under a budget in seconds, a run that trained fewer
steps than usual (a slow host moment, a throttled GPU) scores worse for a reason that is not its
configuration. Pure functions over hosts x seeds arrays.

A run is flagged when its steps fall below `FRACTION` of the median steps of the same configuration
on the same host (over the gate's seeds). A check's gap is shown beside the wall-clock one on the
cells where neither run is flagged (the comparison at the configurations' usual throughput), with
the median ratio of the candidate's steps to the reference's."""

from __future__ import annotations

import math

import numpy as np

FRACTION = 0.8


def flags(steps: np.ndarray) -> np.ndarray:
    """For steps of shape (..., hosts, seeds): True where a run's steps are below FRACTION of its
    configuration's median on its host."""
    med = np.median(steps, axis=-1, keepdims=True)
    return steps < FRACTION * med


def matched_gap(d: np.ndarray, flagged_a: np.ndarray, flagged_b: np.ndarray) -> tuple[float | None, int]:
    """(mean of the paired differences `d` over the cells where neither run is flagged, that count);
    None when no cell is left."""
    keep = ~(flagged_a | flagged_b)
    n = int(keep.sum())
    return (math.fsum(d[keep].tolist()) / n if n else None), n


def steps_ratio(steps_a: np.ndarray, steps_b: np.ndarray) -> float | None:
    """Median over cells of steps_a / steps_b (None where a run has no steps)."""
    ok = (steps_a > 0) & (steps_b > 0)
    return float(np.median(steps_a[ok] / steps_b[ok])) if ok.any() else None
