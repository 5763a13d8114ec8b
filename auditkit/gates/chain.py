"""The ``promoted-by:`` chain, in one place: the one resolver of a gate's candidates (`resolve_candidates`), the one cycle
check (`cycle_path`), the walk over gates that follows the chain (`GateWalk`: each gate once,
parents first) and the static bound the chain puts on a gate's candidates (`chain_bound`).

Pure: what a gate's rules, the matrix or a parent's promoted list are is asked of callbacks,
so the same code serves a SPEC package read through its store and a package read through a
profile. The one parser of a candidates spec (`parent_gate`) is the package model's
(`auditkit.package.protocol`), re-exported here; `tests/test_gate_pipeline.py` fails when another
module parses the prefix itself.
"""

from __future__ import annotations

from typing import Callable, Collection, Generic, NamedTuple, TypeVar

from auditkit.package.protocol import parent_gate   # the one parser, in the package model

T = TypeVar("T")


def rules_parent(rules) -> str | None:
    """The gate named by ``promoted-by:`` in the candidates of `rules` (any document), or None."""
    ins = rules.get("inputs") if isinstance(rules, dict) else None
    return parent_gate(ins.get("candidates")) if isinstance(ins, dict) else None


def resolve_candidates(spec, *, matrix: Callable[[], list[str]], promoted: Callable[[str], T]) -> list[str] | T:
    """A gate's candidates from its rules' `spec`: ``matrix()`` for ``matrix``, ``promoted(parent)``
    (the parent gate's promoted list, recorded or replayed as the caller decides) for
    ``promoted-by:<parent>``, else the explicit list."""
    if spec == "matrix":
        return matrix()
    parent = parent_gate(spec)
    if parent is not None:
        return promoted(parent)
    return list(spec)


def cycle_path(stack: tuple[str, ...], gate: str) -> tuple[str, ...] | None:
    """`stack` + (`gate`,) when `gate` is already on `stack` (the gates whose candidates are being
    resolved, outermost first): following the chain again would never end. None otherwise."""
    return stack + (gate,) if gate in stack else None


class GateWalk(Generic[T]):
    """Each gate visited once (memoised), a gate's parents on demand: `visit(gate, walk)` computes a
    gate and calls `walk(parent)` for the parent it needs; a gate met again while its own chain is
    being resolved is `on_cycle(gate, path)` (not memoised: the gate itself is still computed)."""

    def __init__(self, visit: Callable[[str, "GateWalk[T]"], T], on_cycle: Callable[[str, tuple[str, ...]], T]):
        self._visit, self._on_cycle = visit, on_cycle
        self.done: dict[str, T] = {}
        self._stack: tuple[str, ...] = ()

    def __call__(self, gate: str) -> T:
        if gate in self.done:
            return self.done[gate]
        path = cycle_path(self._stack, gate)
        if path is not None:
            return self._on_cycle(gate, path)
        outer = self._stack
        self._stack = outer + (gate,)
        try:
            self.done[gate] = result = self._visit(gate, self)
        finally:
            self._stack = outer
        return result


class ChainBound(NamedTuple):
    """What the candidates of a gate can be, found by following its ``promoted-by:`` chain to
    the matrix or an explicit list: `configs` (None when a link of the chain cannot be read,
    or the chain ends at the matrix and the matrix is not known) and the `cycle` of gates the
    chain runs into (empty when it ends)."""

    configs: frozenset[str] | None
    cycle: tuple[str, ...] = ()


def chain_bound(gate: str, rules_of: Callable[[str], dict | None],
                matrix: Collection[str] | None = None) -> ChainBound:
    """Follow ``promoted-by:`` from `gate` (`rules_of(name)` gives a gate's schema-valid rules,
    or None when unknown or unreadable). A gate promoted by another decides among a subset of
    that gate's candidates, so the chain's end bounds every name its rules may use. Pure."""
    path: tuple[str, ...] = (gate,)
    name = gate
    while True:
        doc = rules_of(name)
        if doc is None:
            return ChainBound(None)
        cands = doc["inputs"]["candidates"]
        if isinstance(cands, list):
            return ChainBound(frozenset(cands))
        if cands == "matrix":
            return ChainBound(None if matrix is None else frozenset(matrix))
        parent = parent_gate(cands)
        cycle = cycle_path(path, parent)
        if cycle is not None:
            return ChainBound(None, cycle[cycle.index(parent):])
        path += (parent,)
        name = parent
