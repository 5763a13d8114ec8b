"""The gate pipeline's shared steps, between reading and comparing: the declared source a gate is
read from (`GateSource`; `StoreSource` for a SPEC package), the rows a gate's rules select
(`select_rows`), the engine's columns built from them (`engine_columns`, the one builder) and the
decision (`decide_rows`), plus the freeze check on the selected rows (`frozen_before`).

Candidates, and the ``promoted-by:`` chain between gates, are `auditkit.gates.chain`'s. Users:
`replay` (replay-gate, decide), `outcomes` (the report, claims, robustness) and
`auditkit.profile.replay` (a package read through a profile, whose rows come from its view).
"""

from __future__ import annotations

import hashlib
from typing import Protocol as Interface

import numpy as np
import pandas as pd

from auditkit.findings import Finding
from auditkit.gates.documents import (MAX_DECISION_BYTES, json_object, matrix_config_ids, package_protocol,
                                      package_store)
from auditkit.gates.engine import Decision, decide_columns
from auditkit.package.columns import read_run_csv, with_file
from auditkit.package.schemas import validate_document
from auditkit.errors import PackageDefect


class GateSource(Interface):
    """What the pipeline reads of a package: a gate's rules (schema-valid, else None), the matrix's
    config_ids (None when unreadable) and a run CSV's rows as `read_run_csv`'s columns plus `_file`.
    `StoreSource` is it for a SPEC package. A package read through a profile has its rows converted
    whole by its view (`auditkit.profile.view`), so `auditkit.profile.replay` hands the same three
    things to the pipeline's steps directly: rules from the view, the matrix and parents to
    `chain.resolve_candidates`, the view's rows to `select_rows` and `decide_rows`."""

    def rules_of(self, gate: str) -> dict | None: ...

    def matrix(self) -> list[str] | None: ...

    def frame(self, rel: str, metric: str) -> pd.DataFrame: ...


class StoreSource:
    """A SPEC package as the pipeline reads it, through its store: caches what several gates share
    (protocol, documents, hashes, valid rules, matrix); every byte parsed is the byte hashed."""

    def __init__(self, package):
        self.store = package_store(package)
        self.pkg = self.store.root
        self.protocol = package_protocol(self.store)
        self.hashes: dict[str, str] = {}
        self.docs: dict[str, dict] = {}
        self.valid: dict[str, dict | None] = {}
        self._matrix: tuple | None = None

    def json(self, rel: str) -> dict:
        """A package JSON object, read strictly; the bytes parsed are the bytes hashed."""
        if rel not in self.docs:
            data = self.store.read_bytes(rel, MAX_DECISION_BYTES)
            self.hashes[rel] = hashlib.sha256(data).hexdigest()
            self.docs[rel] = json_object(data, rel)
        return self.docs[rel]

    def rules_of(self, gate: str) -> dict | None:
        """A gate's rules when readable and valid against the schema, else None (for `chain_bound`)."""
        if gate not in self.valid:
            doc = None
            try:
                rel = self.protocol.gate(gate).rules
                doc = self.json(rel)
                if validate_document(doc, "rules", rel):
                    doc = None
            except (KeyError, PackageDefect):
                doc = None
            self.valid[gate] = doc
        return self.valid[gate]

    def matrix(self) -> list[str] | None:
        """The matrix's config_ids, or None when it cannot be read (a gate over it reports why)."""
        if self._matrix is None:
            try:
                self._matrix = (matrix_config_ids(self.store, self.protocol),)
            except PackageDefect:
                self._matrix = (None,)
        return self._matrix[0]

    def sha(self, rel: str) -> str:
        if rel not in self.hashes:
            self.hashes[rel] = self.store.sha256(rel)
        return self.hashes[rel]

    def frame(self, rel: str, metric: str) -> pd.DataFrame:
        """A run CSV's rows (not kept: a gate's rows are freed once it is decided); its hash is."""
        df, self.hashes[rel] = read_run_csv(self.store, rel, metric)
        return with_file(df, rel)


def select_rows(df: pd.DataFrame, rules: dict) -> pd.DataFrame:
    """The rows of the gate's stages, hosts and seeds."""
    ins = rules["inputs"]
    return df[df["stage"].isin(ins["stages"]) & df["host"].isin(ins["hosts"]) & df["seed"].isin(ins["seeds"])]


def engine_columns(df: pd.DataFrame) -> dict:
    """The engine's columns (`decide_columns`) of rows with `stage, host, seed, config_id, status, value,
    _file, _row`; text columns stay as they are (categorical ones are never decoded per row)."""
    return {"stage": df["stage"], "host": df["host"], "seed": df["seed"].to_numpy(),
            "config_id": df["config_id"], "status": df["status"], "value": df["value"].to_numpy(),
            "where": _Where(df)}


def decide_rows(rules: dict, df: pd.DataFrame, candidates: list[str]) -> Decision:
    """The engine's decision on rows `df` (DuplicateRowError naming the rows: 'file row N')."""
    return decide_columns(rules, engine_columns(df), candidates)


class _Where:
    """Lazy 'file row N' names, built only when a duplicate is reported."""

    def __init__(self, df: pd.DataFrame):
        self.df = df

    def __getitem__(self, i: int) -> str:
        return f"{self.df['_file'].iat[i]} row {int(self.df['_row'].iat[i])}"

    def __len__(self) -> int:
        return len(self.df)


def frozen_before(rules: dict, sel: pd.DataFrame, rules_rel: str) -> list[Finding]:
    """SPEC 5.10: `frozen_at` earlier than every input row's `started_at` (compared as times)."""
    try:
        frozen = pd.to_datetime(rules["frozen_at"], utc=True, format="ISO8601")
    except (ValueError, OverflowError):
        return []  # validate_rules reported rules-bad-frozen-at
    started = sel["started"]
    out = []
    bad_ts = np.flatnonzero(started.isna().to_numpy())
    for i in bad_ts[:5]:
        text = sel["started_at"].iat[i] if "started_at" in sel.columns else ""
        out.append(Finding(str(sel["_file"].iat[i]), "row-bad-timestamp",
                           f"row {int(sel['_row'].iat[i])}, column started_at", "an ISO-8601 UTC timestamp", repr(text),
                           "without a start time the freeze cannot be checked for this row"))
    late = np.flatnonzero((started <= frozen).to_numpy())
    if len(late):
        i = int(late[np.argmin(started.to_numpy()[late])])
        out.append(Finding(rules_rel, "rules-frozen-after-data", "$.frozen_at",
                           "frozen_at earlier than every input row's started_at",
                           f"{rules['frozen_at']} is not before {iso(started.iat[i])} "
                           f"({sel['_file'].iat[i]} row {int(sel['_row'].iat[i])}; {len(late)} row(s) in all)",
                           "the rules were written after data they decide on existed: they are no pre-registration "
                           "for those rows"))
    return out


def iso(ts) -> str:
    """A UTC timestamp as ISO-8601 with a `Z` (what run rows record)."""
    return pd.Timestamp(ts).tz_convert("UTC").isoformat().replace("+00:00", "Z")
