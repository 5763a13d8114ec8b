"""The catalogue of finding codes: for every code auditkit can emit, what it means and what to do.

`CODES` is the catalogue as data (one frozen `Code` per code, grouped by
`Family`); `render_markdown()` is the text of docs/FINDINGS.md, and
``python -m auditkit.codes > docs/FINDINGS.md`` writes it.  tests/test_codes.py
checks that the document is current, that every code in the source is
catalogued and every catalogued code is still in the source, and (through
`auditkit.findings.EMITTED_CODES`) that no finding made during the test session
carries an uncatalogued code.

"What to do" is written for an auditor: how to investigate what the finding
says.  It never advises regenerating the evidence the finding is about (a
rebuilt MANIFEST or a rewritten table would hide the finding, not explain it).
"""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Iterable


class Family(str, enum.Enum):
    """Where a code comes from; the order is the order of docs/FINDINGS.md."""

    FILESYSTEM = "filesystem"
    TEXT = "text"
    ARCHIVE = "archive"
    MANIFEST = "manifest"
    JSON = "json"
    CSV = "csv"
    SCHEMA = "schema"
    ROWS = "rows"
    CHECKPOINT = "checkpoint"
    SOURCE = "source"
    DECISION = "decision"
    RULES = "rules"
    REPLAY = "replay"
    DERIVED = "derived"
    TABLES = "tables"
    FIGURES = "figures"
    CLAIMS = "claims"
    EVIDENCE = "evidence"
    PROFILE = "profile"
    DEEP = "deep"

    @property
    def heading(self) -> str:
        return _TITLES[self][0]

    @property
    def summary(self) -> str:
        return _TITLES[self][1]


_TITLES: dict[Family, tuple[str, str]] = {
    Family.FILESYSTEM: ("Files and paths",
                        "What the package holds on disk: only regular files at safe relative paths are read."),
    Family.TEXT: ("Text encoding", "Every text file of a package (JSON, CSV, prose) is UTF-8 without a byte-order mark."),
    Family.ARCHIVE: ("Archives", "A package given as a .tar, .tar.gz or .tgz is read in one pass and never extracted."),
    Family.MANIFEST: ("MANIFEST", "MANIFEST.json (and MANIFEST.csv) record the sha256 and size of every file "
                                  "(SPEC section 9); with a profile, the manifests the authors wrote."),
    Family.JSON: ("JSON", "JSON documents are read strictly: what two readers could read differently is refused."),
    Family.CSV: ("CSV", "Run rows, matrices and MANIFEST.csv: UTF-8 CSV with a header row and `\\n` line endings."),
    Family.SCHEMA: ("Schemas and required files",
                    "Each JSON document follows its JSON Schema; SPEC section 1 names the files a package must hold."),
    Family.ROWS: ("Run rows and the matrix", "Each row of a run CSV (SPEC section 4) and of the matrix (section 2)."),
    Family.CHECKPOINT: ("Checkpoints", "safetensors files: the format as the reference library reads it, finite "
                                       "values, the metadata, and the architecture its `model_config` names."),
    Family.SOURCE: ("Runner source (`source/runner/`)", "The runner snapshot a package carries, against the "
                                                        "`runner_sha256` every run row records."),
    Family.DECISION: ("Decisions (verify)", "What a recorded gate decision names: its rules and its inputs, with hashes."),
    Family.RULES: ("Gate rules", "The frozen rules of a gate (`preanalysis/*.rules.json`, or a profile's transcription)."),
    Family.REPLAY: ("Replay (`replay-gate`)", "A gate's decision recomputed from its rules and the raw rows, "
                                             "compared field by field with the recorded one."),
    Family.DERIVED: ("Derived files (verify)", "The files table_manifest.json and figure_manifest.json list, "
                                                "as `verify` checks them (presence and hashes)."),
    Family.TABLES: ("Tables (`tables --check`)", "Every table regenerated in memory from the package and compared "
                                                 "with the recorded one."),
    Family.FIGURES: ("Figures (`figures --check`)", "Every figure's plotted data regenerated from the package and "
                                                    "compared with the recorded figure."),
    Family.EVIDENCE: ("Freeze evidence (`evidence/`, SPEC v1.1)",
                      "The event log, timestamp tokens, attestations and anchored seeds that show when rules were "
                      "frozen."),
    Family.PROFILE: ("Profiles (`--profile`)", "A package auditkit did not write, read through a reviewer's profile "
                                               "(docs/PROFILES.md)."),
    Family.CLAIMS: ("Claims (`auditkit claims`)", "Each statement of claims.json, decided from the raw rows through "
                                                  "the engine replay uses (SPEC v1.1)."),
    Family.DEEP: ("Re-evaluation (`verify --deep`)", "Each checkpoint a row names, rebuilt with torch and re-evaluated."),
}


@dataclass(frozen=True)
class Code:
    """One finding code: its family, what it means, and what an auditor should do about it."""

    code: str
    family: Family
    meaning: str
    action: str


def _family(family: Family, *entries: tuple[str, str, str]) -> list[Code]:
    return [Code(code, family, meaning, action) for code, meaning, action in entries]


_GROUPS: tuple[list[Code], ...] = (
    _family(
        Family.FILESYSTEM,
        ("symlink", "A symbolic link in the package (or a symbolic or hard link in an archive). It is never "
                    "followed: its target is not part of the check.",
         "A package holds regular files. Find out where the link points and why it is there; ask for the file "
         "itself if it is evidence."),
        ("special-file", "A FIFO, socket or device in the package or archive. It is never opened (reading one "
                         "could hang).",
         "No writer of packages makes one: find out who placed it there. The entry is not checked."),
        ("not-regular-file", "A read met something other than a regular file (a FIFO, socket, device or "
                             "directory) where a file was expected; it was refused before it was read.",
         "Look at the entry with `ls -l`; a package holds regular files only."),
        ("unsafe-path", "A path that is absolute, has a `..`, `.` or empty component, a backslash, a NUL or a line "
                        "break, or (in an archive) bytes that are not UTF-8 or control characters. It is never "
                        "read.",
         "Such a name is a sign of a hostile or damaged package: extracting it could write outside the target "
         "directory. Find out which tool made it."),
        ("missing-file", "A file that another part of the package refers to is not in it.",
         "Check the published copy of the package for the file; without it, what refers to it cannot be checked."),
        ("file-too-large", "A JSON or CSV document is larger than auditkit reads as one document (64 MiB).",
         "Find out why a document is this large; its content is not checked."),
        ("document-too-large", "`verify` met a JSON or CSV document larger than it parses (64 MiB): it is hashed "
                               "but its content is not checked.",
         "Find out why the document is this large; check its content by other means."),
        ("name-not-utf8", "A file name in the package directory is not UTF-8: it cannot be listed in a MANIFEST "
                          "and is not read.",
         "Find out which tool made the name; a copy of the package on another system may spell it differently."),
        ("path-collision", "Two paths differ only in letter case or Unicode normalisation: on a case-insensitive "
                           "file system (macOS, Windows) one overwrites the other.",
         "Compare the two files; a copy of the package made on such a system holds only one of them."),
    ),
    _family(
        Family.TEXT,
        ("text-bom", "A text file starts with a UTF-8 byte-order mark.",
         "The file was saved by an editor or tool that adds a BOM, so it is not the writer's original bytes: "
         "find out who edited it and compare it with the published copy."),
        ("text-not-utf8", "A text file is not valid UTF-8 (the location gives the byte offset).",
         "Look at the bytes at that offset: a file in another encoding, or a damaged one. Find out which tool "
         "wrote it."),
    ),
    _family(
        Family.ARCHIVE,
        ("archive-duplicate-member", "The same path appears twice in the archive; only the first copy is read, "
                                     "while extracting the archive would keep the last.",
         "Two readers of the archive see different files: list the members (`tar tvf`) and compare both copies."),
        ("archive-trailing-data", "Bytes other than zeros follow the end-of-archive marker: members hidden from a "
                                  "normal read but seen by `tar --ignore-zeros`.",
         "List the archive with `tar --ignore-zeros -tvf` to see what is hidden, and ask why it was appended."),
        # fetched packages (auditkit.package.remote, docs/REMOTE.md)
        ("remote-file-mismatch", "A file served at the package's URL is not the file its MANIFEST.json lists: "
                                 "its sha256 or its size differs. It was not kept, and nothing read it.",
         "Fetch the file by hand and compare it with the MANIFEST entry; ask the host or the authors which copy "
         "is the published one (a mirror out of date, or a file changed after the MANIFEST was built)."),
    ),
    _family(
        Family.MANIFEST,
        ("manifest-missing", "The package has no MANIFEST.json: nothing records which files it holds or their "
                             "hashes, so no file's integrity can be checked.",
         "Obtain the MANIFEST.json that was published with the package (its root may be cited in the paper). A "
         "manifest made now from the files at hand would vouch for whatever is there now."),
        ("manifest-empty", "A manifest lists no file: it vouches for nothing.",
         "Obtain the published manifest; treat every file as unchecked until then."),
        ("manifest-unsafe-path", "A manifest entry names an absolute path, a `..` component or another unsafe "
                                 "path; it is refused and never opened.",
         "A manifest made by a package writer has relative paths only: the manifest was edited or made by a "
         "hostile tool."),
        ("manifest-duplicate-entry", "A manifest lists the same path twice.",
         "The two entries may record different hashes: find out which was added and when."),
        ("manifest-lists-itself", "MANIFEST.json lists MANIFEST.json or MANIFEST.csv (a file cannot record its "
                                  "own hash).",
         "The manifest was edited or made by another tool; compare it with the published one."),
        ("manifest-unsorted", "MANIFEST.json's entries are not sorted by path as SPEC section 9 requires.",
         "A SPEC writer sorts the entries: the manifest was edited by hand or made by another tool. Check the "
         "other manifest findings closely."),
        ("file-missing", "A file the manifest lists is not in the package.",
         "The package is incomplete: obtain the file from the published copy. Everything that depends on it is "
         "unchecked."),
        ("file-changed", "A file's sha256 differs from the one its manifest records: its content changed after "
                         "the manifest was written (or the manifest was edited).",
         "Compare the file with the published copy; treat every result that reads it (decisions, tables) as "
         "unverified until the difference is explained."),
        ("file-size-changed", "A file's hash matches its manifest entry but the recorded size does not: the "
                              "entry was edited.",
         "Find out who edited the manifest and what else they changed."),
        ("file-unlisted", "A file is in the package but not in its manifest: nothing vouches for its bytes.",
         "Find out who added it and when; do not rely on it. Compare the package with the published copy."),
        ("manifest-root-mismatch", "MANIFEST.json's `root` is not the hash of the entries it lists: entries were "
                                   "changed after the root was computed.",
         "Compare the root with the one cited where the package was published; find which entries changed."),
        ("manifest-csv-missing", "MANIFEST.csv is absent; SPEC section 9 asks for it beside MANIFEST.json.",
         "MANIFEST.json still lists the files. Obtain the published MANIFEST.csv if a reader of the package "
         "relies on it."),
        ("manifest-csv-mismatch", "MANIFEST.csv and MANIFEST.json disagree about a path (hash, size or presence).",
         "One of them was edited after the pair was written: compare both with the file and with the published "
         "copies."),
        ("manifest-unreadable", "With a profile: a manifest the profile names cannot be read as the profile "
                                "describes it (unreadable, no list of entries where `entries` points, an entry "
                                "without the named fields, a size that is not an integer).",
         "Check the profile's `[[manifests]]` against the file; if the profile is right, the manifest is damaged."),
    ),
    _family(
        Family.JSON,
        ("json-invalid", "A JSON document does not parse (or, read by `verify`, is not UTF-8).",
         "Open it at the location given: a truncated or damaged file, or not JSON at all. Compare it with the "
         "published copy."),
        ("json-duplicate-key", "A key appears twice in one JSON object. Readers disagree on which value counts, so "
                               "a second value can hide a forged one (a late `frozen_at`, say).",
         "Look at both values of the key named; find out who added the second."),
        ("json-non-finite", "`NaN` or `Infinity`, or a number that overflows to infinity: not JSON, and no value "
                            "a check can compare.",
         "Find out which tool wrote the value; a SPEC writer never does."),
        ("json-number-too-long", "An integer with more digits than auditkit parses (64).",
         "No package value needs this many digits: the document is hostile or damaged."),
        ("json-not-object", "A JSON document that must be an object (protocol, rules, decision) is an array, "
                            "string or number.",
         "The file is damaged or not the document its name says: compare it with the published copy."),
        ("json-too-deep", "A JSON document nested deeper than auditkit reads (64 levels).",
         "No package document nests this deep: the document is hostile or damaged."),
    ),
    _family(
        Family.CSV,
        ("csv-bom", "A CSV file starts with a UTF-8 byte-order mark.",
         "The file was re-saved by a spreadsheet or editor after the writer made it: compare it with the "
         "published copy for other changes."),
        ("csv-crlf", "A CSV file has `\\r\\n` line endings where a SPEC writer writes `\\n`.",
         "The file was re-saved by another tool (often a spreadsheet, or git's line-ending conversion): compare "
         "its bytes with the published copy."),
        ("csv-extra-cells", "A row has more cells than the header has columns; the extra cells are not read.",
         "Look at the row: a stray comma or an edited row. Find out which value belongs to which column."),
        ("csv-invalid", "A CSV file cannot be read (not UTF-8, or malformed quoting); its rows are not checked.",
         "Open the file at the reported place; compare it with the published copy."),
        ("csv-unreadable", "The CSV reader refused the file (malformed quoting, a stray quote, a NUL).",
         "Open the file near the reported line; it was damaged or written by another tool."),
        ("csv-duplicate-column", "Two columns of a CSV header share a name: readers keep different ones, so which "
                                 "value counts is ambiguous.",
         "Compare the two columns' values; find out which tool wrote the header."),
        ("csv-missing-cells", "A row ends before its last columns (fewer cells than the header).",
         "Look at the row: a truncated or hand-edited line. The missing cells are read as empty."),
        ("run-csv-missing-column", "A run CSV (or the matrix) lacks a column that replay or the tables need "
                                   "(SPEC sections 4 and 2); the file cannot be used.",
         "Compare the header with SPEC.md: a file from another writer or version, or an edited one."),
        ("csv-missing-column", "The header lacks a column the format requires (SPEC lists them), or, with a "
                               "profile, one the profile names.",
         "Compare the header with SPEC.md (or the profile): a file from another writer or another version, or an "
         "edited one. Rows without the column cannot be checked."),
        ("csv-empty", "A CSV file has a header and no row: an empty table proves nothing.",
         "Find out whether rows were removed; compare with the published copy."),
    ),
    _family(
        Family.SCHEMA,
        ("schema-invalid", "A JSON document (protocol, rules, decision, manifest, table or figure manifest) breaks "
                           "its JSON Schema at the location given; the message says how.",
         "Read the value at that location against SPEC.md: a writer of another version, or a hand edit. What "
         "reads the document is not checked until it follows the schema."),
        ("protocol-invalid", "protocol.json does not follow SPEC section 3 (the first broken key is given); "
                             "nothing can be checked against it.",
         "Read the key named against SPEC.md: a writer of another version, or a hand edit."),
        ("protocol-senseless", "protocol.json contradicts itself: a host, stage or gate defined twice, a stage on "
                               "a host the protocol does not name, a seed twice, or candidates promoted by a gate "
                               "it does not define.",
         "Find out which part of the protocol the study actually ran (the run rows show the stages, hosts and "
         "seeds)."),
        ("required-missing", "A file SPEC section 1 requires is absent: protocol.json, the matrix it names, a "
                             "gate's rules or decision, or any run CSV under remote-results/.",
         "The package is incomplete: obtain the file from the published copy. What depends on it is not checked."),
    ),
    _family(
        Family.ROWS,
        ("row-invalid", "A run-row or matrix-row value breaks SPEC (sections 4 and 2): a bad status, seed, host, "
                        "stage or config_id, or a val_bpb that does not fit the status (finite for `ok`, empty "
                        "otherwise).",
         "Look at the row and column given; a value like this was not written by the runner. Find out who "
         "edited the row."),
        ("host-mismatch", "A row's host is not the host in its file's name (`<host>_<stage>_summary.csv`, or the "
                          "profile's pattern).",
         "The row was moved between files or edited: find which run it really belongs to."),
        ("stage-mismatch", "A row's stage is not the stage in its file's name.",
         "The row was moved between files or edited: find which stage it really belongs to."),
        ("run-id-duplicate", "Two rows carry the same run_id.",
         "Compare the two rows: a copied row, or a run recorded twice with different results."),
        ("unknown-stage", "A row names a stage protocol.json does not define.",
         "Find where the row came from; it is not part of the protocol the gates decide on."),
        ("unknown-config", "A row names a config_id that is not in the matrix.",
         "Find where the configuration came from; the matrix is the list of what was meant to run."),
        ("time-order", "A row's finished_at is before its started_at.",
         "The times were edited or the host clock jumped: compare with the run's own log and with the "
         "neighbouring rows."),
        ("config-id-duplicate", "The matrix lists a config_id twice.",
         "Compare the two rows: which definition did the runs use?"),
        ("row-bad-seed", "A run row's seed is not an integer, so the row cannot be placed in a (host, seed) cell.",
         "Look at the row; a runner writes integer seeds. Find out who edited it."),
        ("value-not-finite", "A decimal in a run row overflows to infinity when read (a 400-digit val_bpb, say), "
                             "though it looks like a number.",
         "No run writes such a value: the row was edited. Compare it with the run's own log."),
        ("value-too-long", "An integer in a run row has more digits than any reader takes (64).",
         "No run writes such a value: the row was edited."),
        ("eval-protocol-mismatch", "A gate compares val_bpb measured on different evaluations: this row's "
                                   "eval_sha256, eval_seq_len or tokenizer differs from most of the gate's rows.",
         "The gate's ranking mixes numbers that are not comparable: find which runs were evaluated differently "
         "and whether the decision changes without them."),
        ("eval-protocol-unrecorded", "A gate's other input rows record how they were evaluated (eval_sha256, "
                                     "eval_seq_len, tokenizer) and this one does not.",
         "Its val_bpb cannot be shown to be comparable with the others': find out how the run was evaluated "
         "(its log, its checkpoint's metadata)."),
        # per-document evaluation losses (SPEC v1.2 eval_docs; auditkit/verify/checks/evaldocs.py)
        ("eval-docs-missing", "A run row names a per-document evaluation file (eval_docs) that the package does not "
                              "hold as a regular file.",
         "Find the file in the published copy; without it the run's document-level uncertainty cannot be checked "
         "and the statistics fall back to cells."),
        ("eval-docs-unlisted", "A per-document evaluation file a run row names is not listed in MANIFEST.json.",
         "The MANIFEST does not vouch for the file: find out whether it was added after the package was sealed."),
        ("eval-docs-hash-mismatch", "A per-document evaluation file's sha256 differs from the row's "
                                    "eval_docs_sha256.",
         "The file or the row changed after the run: compare both with the run's own log."),
        ("eval-docs-unreadable", "A per-document evaluation file is not `doc,nats,bytes` with one row per document "
                                 "(integer doc in increasing order, finite nats >= 0, positive integer bytes).",
         "Find out what wrote the file; its losses are not used."),
        ("eval-docs-val-bpb-mismatch", "A per-document evaluation file's sum(nats) / (ln 2 * sum(bytes)) is not the "
                                       "row's val_bpb (to its 6-decimal rounding).",
         "The per-document losses are not the evaluation the row reports: find which of the two is the run's."),
        ("eval-docs-columns", "A run row names an eval_docs file without its eval_docs_sha256, or the other way "
                              "round, or a path other than `eval-docs/<run_id>.csv`.",
         "Writers fill both columns or neither (SPEC v1.2): find out who edited the row."),
        ("eval-docs-set-mismatch", "Within one gate, a run's per-document evaluation file lists other documents "
                                   "(or other byte counts) than most of the gate's files, although every run a gate "
                                   "compares is scored on the same documents.",
         "The runs were not scored on one evaluation set: find which documents this run's evaluation read and "
         "whether the gate's ranking holds on the documents all runs share."),
        ("run-csv-name", "A CSV under remote-results/ is not named `<host>_<stage>_summary.csv`, so its rows are "
                         "not read as run rows.",
         "Find out what the file holds and why it is there; rows in it are not part of any gate."),
        ("row-bad-timestamp", "A row's started_at is not an ISO-8601 time with an offset, so the freeze of the "
                              "rules cannot be checked against it.",
         "Look at the value; a runner writes a full UTC time. Find out who edited it."),
        ("duplicate-run-row", "Two or more rows claim the same candidate in the same (host, seed) cell of a gate; "
                              "the gate cannot be decided from them.",
         "Compare the rows named (run_id, started_at, val_bpb): was a run repeated and the better result kept?"),
    ),
    _family(
        Family.CHECKPOINT,
        ("checkpoint-header-too-large", "A checkpoint's header length is larger than the safetensors reference "
                                        "accepts (100,000,000 bytes).",
         "The file is not a safetensors file the reference loads: damaged or hostile. Do not load it with other "
         "tools."),
        ("checkpoint-header-too-complex", "A checkpoint's header holds more JSON values than auditkit parses "
                                          "(1,000,000 commas and brackets; a real header holds about ten per "
                                          "tensor).",
         "The header is hostile or damaged: do not load the file with other tools."),
        ("checkpoint-header-invalid", "A checkpoint's header is not JSON as the safetensors reference reads it, an "
                                      "entry lacks dtype, shape or data_offsets, or `__metadata__` is not a map of "
                                      "strings.",
         "The file is damaged or not a safetensors file; compare its hash with the row's checkpoint_sha256."),
        ("checkpoint-duplicate-key", "A key appears twice in a checkpoint's header; readers may keep different "
                                     "copies, so two tools could load different weights.",
         "Treat the file as tampered; compare it with the published copy."),
        ("checkpoint-dtype", "A tensor's dtype is not one safetensors defines.",
         "The file is damaged or not a safetensors file."),
        ("checkpoint-tensor-size", "A tensor's data_offsets do not span exactly the bytes its shape and dtype need.",
         "The header was edited or the file damaged: the tensor cannot be read as declared."),
        ("checkpoint-overlap", "Two tensors' data overlap in the file.",
         "A safetensors writer never does this: the header was edited."),
        ("checkpoint-gap", "Bytes between tensors belong to no tensor.",
         "A safetensors writer never leaves a gap: the header was edited, or data hidden in the file."),
        ("checkpoint-truncated", "The checkpoint ends before its header or data does.",
         "An incomplete copy: compare its size and hash with the row's checkpoint_sha256 and the published copy."),
        ("checkpoint-trailing-bytes", "Bytes follow the last tensor's data.",
         "Something was appended after the writer finished: compare with the published copy."),
        ("checkpoint-empty", "A checkpoint holds no tensor: it proves nothing.",
         "Find out why the run wrote (or someone left) an empty file."),
        ("checkpoint-nonfinite", "A floating-point tensor holds inf or nan values (the count is given).",
         "A model with inf/nan weights cannot score the val_bpb its row claims: find out whether the run "
         "diverged, and re-evaluate it with `verify --deep`."),
        ("checkpoint-missing", "A run row names a checkpoint file that is not in the package.",
         "Obtain the checkpoint from the published copy; the row's result cannot be re-checked without it."),
        ("checkpoint-hash", "The checkpoint a row names does not have the sha256 the row records: it is not the "
                            "file the run wrote.",
         "Compare with the published copy; treat the row's result as unchecked."),
        ("checkpoint-run-mismatch", "The checkpoint's metadata names another run_id than the row that names it.",
         "The row points at another run's checkpoint: find which run the file belongs to."),
        ("checkpoint-metadata-missing", "A checkpoint has no `__metadata__` (run_id, config_id, seed, step, "
                                        "model_config; SPEC section 8).",
         "Nothing ties the file to a run: find out which tool wrote it."),
        ("checkpoint-metadata-invalid", "A checkpoint's metadata breaks SPEC section 8 at the key given.",
         "Look at the metadata (`safetensors.safe_open(...).metadata()`): another writer or an edit."),
        ("checkpoint-model-config", "A checkpoint's model_config is not one the runner knows (unreadable, or "
                                    "implying far more tensors than the file holds).",
         "Read the metadata's model_config; without it the architecture cannot be checked."),
        ("checkpoint-tensor-missing", "The architecture its model_config names has a tensor the checkpoint lacks.",
         "The file is not the model its metadata describes: find out where it came from."),
        ("checkpoint-tensor-unexpected", "The checkpoint holds a tensor the architecture its model_config names "
                                         "does not have.",
         "The file is not the model its metadata describes: find out where it came from."),
        ("checkpoint-shape", "A tensor's shape is not what the model_config implies.",
         "The file is not the model its metadata describes: find out where it came from."),
        ("num-params-mismatch", "A row's num_params_M is not the parameter count of the architecture its "
                                "checkpoint names.",
         "The row or the checkpoint was changed, or the row names another configuration's checkpoint: compare "
         "the row's config_id with the checkpoint's metadata."),
    ),
    _family(
        Family.SOURCE,
        ("runner-sha-mismatch", "The runner snapshot under source/runner/ does not hash to the runner_sha256 the "
                                "run rows record: it was changed after the runs, or they ran another version.",
         "Compare the snapshot with the runner the authors published (and its history); the rows' results "
         "come from the source they record, not necessarily from this one."),
    ),
    _family(
        Family.DECISION,
        ("decision-no-inputs", "A recorded decision names no input file: nothing shows what rows it was made from.",
         "Read the decision with its gate's rules; find out which tool wrote it."),
        ("decision-input-missing", "A decision names a rules or input file that is not in the package.",
         "Obtain the file from the published copy; the decision cannot be replayed without it."),
        ("decision-input-hash", "A file a decision names does not have the sha256 the decision records: it is not "
                                "the file the decision was made from.",
         "Find what changed (the file, or the decision); `replay-gate` shows whether the decision still follows."),
        ("decision-missing", "`replay-gate`: the gate's recorded decision (`analysis/<gate>_decision.json`) is "
                             "absent or unreadable, so there is nothing to compare the replay with.",
         "Obtain the decision from the published copy; the replayed one alone shows what the rules give, not "
         "what the authors recorded."),
    ),
    _family(
        Family.RULES,
        ("rules-duplicate", "A stage, host, seed or always_keep entry is repeated in a gate's rules.",
         "Read the rules as the authors froze them; a repeat can change what the gate counts."),
        ("rules-unknown-config", "The rules name a candidate that is not in the matrix.",
         "Find out where the configuration came from."),
        ("rules-chain-cycle", "A gate's `promoted-by` chain never ends at the matrix or a list: the gate "
                              "promotes its own candidates, or gates promote each other's.",
         "The rules cannot be decided as written: find which gate's promoted list the authors meant."),
        ("chain-cycle", "`promoted-by` candidates form a cycle across gates, so none of them can be decided.",
         "Read the gates' `inputs.candidates` along the cycle shown."),
        ("rules-always-keep-too-long", "always_keep names more candidates than top_k promotes.",
         "The rules contradict themselves: read them with the study's prose."),
        ("rules-unknown-check", "A check kind that SPEC section 5 does not define.",
         "The rules come from another version or writer: the check cannot be evaluated."),
        ("rules-non-finite-threshold", "A check's threshold is NaN or infinite: the check has no outcome.",
         "Read the check with the study's prose; the gate cannot be recomputed as written."),
        ("rules-bad-frozen-at", "The rules' frozen_at is not an ISO-8601 UTC time.",
         "A freeze time that is no time shows nothing about when the rules were written: look for other freeze "
         "evidence (evidence/, a timestamp) or treat the gate as not pre-registered."),
        ("rules-negative-threshold", "A check's threshold is below zero (thresholds bound an absolute gap).",
         "Read the check with the study's prose: a sign error makes it pass or fail regardless of the data."),
        ("rules-self-reference", "A check compares a candidate with itself.",
         "The check is vacuous: read it with the study's prose."),
        ("rules-not-a-candidate", "always_keep or a check names a configuration that is not among the gate's "
                                  "candidates.",
         "The rules do not fit the gate: find which candidate list the authors meant."),
        ("rules-unreadable", "`replay-gate`: the gate's rules file cannot be read (missing, not UTF-8, not strict "
                             "JSON, not a regular file).",
         "Obtain the rules from the published copy; without them the gate cannot be replayed."),
        ("rules-wrong-gate", "The rules file the protocol gives a gate names another gate.",
         "Find out whether rules files were swapped."),
        ("rules-path-mismatch", "The decision names other rules than protocol.json gives its gate.",
         "The decision was made under other rules: find which rules were actually used."),
        ("rules-hash-mismatch", "The rules' sha256 is not the one the decision records: the rules changed after "
                                "the decision was made.",
         "Compare the rules with the published copy; a change after the decision invalidates the freeze."),
        ("rules-frozen-after-data", "The rules' frozen_at is not before every input row's started_at: the rules "
                                    "were written after data they decide on existed.",
         "Read the rows named; the gate's rules could have been chosen knowing the results. Look for stronger "
         "freeze evidence (evidence/, a timestamp) or treat the gate as not pre-registered."),
    ),
    _family(
        Family.REPLAY,
        ("input-missing", "A run CSV the gate's rules select (host x stage) is not in the package.",
         "Obtain the file from the published copy; the replay without it decides on fewer rows."),
        ("input-not-recorded", "The decision's inputs leave out a run CSV its rules select.",
         "The gate was decided on fewer rows than its rules select: find which rows were left out and whether "
         "they change the outcome."),
        ("input-extra", "The decision names an input its rules do not select.",
         "The gate was decided on rows its rules exclude: find out why."),
        ("input-hash-mismatch", "An input CSV does not have the sha256 the decision records: rows changed after "
                                "the gate was decided.",
         "Compare the file with the published copy; the other replay findings show whether the change alters the "
         "decision."),
        ("input-unreadable", "An input CSV the rules select cannot be read (the message says why).",
         "The message says what is wrong with the file; compare it with the published copy. The gate is not "
         "replayed without it."),
        ("gate-no-rows", "No row matches the gate's stages, hosts and seeds: a gate with no data decides nothing.",
         "Compare the rules' inputs with the rows' stage, host and seed values."),
        ("gate-no-candidates", "The gate has no candidate to decide among.",
         "Read the rules' `inputs.candidates` and, for `promoted-by`, the parent gate's promoted list."),
        ("candidates-unresolved", "The gate's candidate list cannot be resolved (the matrix or the parent gate's "
                                  "decision is unreadable; with a profile, the parent gate has neither a recorded "
                                  "nor a replayable promoted list).",
         "Resolve the message's cause first; the gate cannot be replayed until then."),
        ("chain-broken", "A `promoted-by` gate did not decide among exactly the candidates its parent gate "
                         "promoted (with a profile: a stage the gate adds did not run exactly them).",
         "Compare the two lists: a candidate was added or dropped between the gates."),
        ("chain-broken-on-replay", "The parent gate's replayed promoted list differs from the recorded one this "
                                   "gate used.",
         "The parent gate's decision does not follow from its rules: start with the parent's findings."),
        ("decision-differs", "The recorded decision differs from the replay in its gate name, its cells, the "
                             "order of its candidates or the cells a candidate has.",
         "Compare the recorded and replayed values shown; `replay-gate --json` gives the whole replay."),
        ("promoted-differs", "The rules applied to the raw rows promote a different list than the recorded one.",
         "This is the outcome of the gate: compare the candidates' recomputed values and ranks with the recorded "
         "ones to see where they part."),
        ("promoted-order-differs", "With a profile: the promoted candidates are the same but the recorded order "
                                   "(which the profile says is a ranking) differs.",
         "Compare the ranks; check whether the profile is right that the list is ranked."),
        ("candidates-differ", "The recorded decision lists other candidates than the rules select.",
         "Compare the two lists: the gate was decided over a different field of candidates."),
        ("eligible-differs", "A candidate's recorded eligibility differs from the replay's.",
         "Look at the candidate's cells: a missing or failed run changes eligibility."),
        ("rank-differs", "A recorded rank (overall or in one cell) differs from the replay's.",
         "Compare the cell values behind the rank; a changed val_bpb or a different tie rule moves it."),
        ("wins-differs", "A candidate's recorded number of wins differs from the replay's.",
         "Compare the per-cell ranks behind the count."),
        ("value-differs", "A recorded number (a mean, min, max, std or a cell's val_bpb) differs from the replay "
                          "beyond the tolerance (1e-9, or the profile's).",
         "Compare the value with the raw rows it comes from: an edited row or an edited decision."),
        ("cells-differ", "With a profile: the recorded cells are not the cells the replay has.",
         "Compare the (candidate, host, seed) cells recorded with the rows the rules select."),
        ("checks-differ", "The recorded checks differ from the replay's in number, kind, candidate or reference.",
         "Read the rules' checks with the recorded ones: the decision was made under other checks."),
        ("check-value-differs", "A check's recorded value or threshold differs from the replay's.",
         "Compare with the raw rows the check reads."),
        ("check-outcome-differs", "A check's recorded outcome (passed or not) differs from the replay's.",
         "This changes what the gate concludes: compare the check's value and threshold."),
    ),
    _family(
        Family.DERIVED,
        ("derived-missing", "A table or figure manifest lists a file that is not in the package.",
         "Obtain the file from the published copy."),
        ("derived-hash", "A file a table or figure manifest lists does not have the sha256 it records.",
         "The file changed after the manifest was written: compare with the published copy, and see "
         "`tables --check` or `figures --check` for what the data gives."),
        ("derived-input-missing", "A table or figure manifest names an input that is not in the package.",
         "Obtain the input from the published copy; the derived file cannot be checked without it."),
    ),
    _family(
        Family.TABLES,
        ("table-manifest-missing", "The package has no table_manifest.json, so its tables cannot be checked "
                                   "against the data they come from.",
         "Obtain the manifest from the published copy. Tables made now would describe the package as it is now, "
         "not the tables the authors published."),
        ("table-manifest-empty", "table_manifest.json lists no table: it checks nothing.",
         "Obtain the published manifest; treat the package's tables as unchecked."),
        ("table-unknown", "The manifest lists a table auditkit does not derive from this package.",
         "Find out where the table came from; it cannot be checked against the data."),
        ("table-kind-differs", "A manifest entry's kind differs from the kind of the table at that path.",
         "The manifest was edited or written by another tool."),
        ("table-inputs-differ", "A manifest entry's inputs are not the files the table is derived from.",
         "The table was made from other inputs: find which, and compare the table with the current data."),
        ("table-hash-differs", "A manifest entry's sha256 is not that of the table derived from the package.",
         "The recorded table differs from what the data gives; see the table-differs findings for where."),
        ("table-missing", "A table the manifest lists is not in the package.",
         "Obtain it from the published copy."),
        ("table-not-listed", "A table auditkit derives from this package is not in the recorded manifest.",
         "The table was not published, or removed from the list: find out which and why."),
        # generator versions (older packages keep checking against the generator that made them)
        ("table-generator-unknown", "A manifest entry records a version of its table's generator that this auditkit "
                                    "cannot rerun.",
         "Check the package with the auditkit that wrote it (or a newer one); an edited version number is "
         "another tool's or a person's doing."),
        ("table-differs", "A recorded table is not what its inputs give; the location is the first differing line "
                          "(row and column for a CSV).",
         "Compare the recorded value with the one shown and with the raw rows: an edited table, or inputs "
         "changed after the table was made (see `verify` and `replay-gate`)."),
        ("table-unreadable", "With a profile: an authors' table cannot be read as a UTF-8 CSV.",
         "Look at the file; compare with the published copy."),
        ("table-row-duplicate", "With a profile: an authors' table has two rows with the same key.",
         "Compare the two rows; which one did the paper report?"),
        ("table-row-extra", "With a profile: an authors' table has a row the package's data does not give.",
         "Find where the row came from: data not in the package, or a hand-added row."),
        ("table-row-missing", "With a profile: the package's data gives a row the authors' table lacks.",
         "Find out why the row was left out of the table."),
        ("table-value-differs", "With a profile: a value in an authors' table differs from the one the package's "
                                "rows give (beyond the profile's tolerance).",
         "Compare the value with the raw rows; check the profile's key and column mapping."),
    ),
    _family(
        Family.FIGURES,
        ("figure-manifest-missing", "The package has no figure_manifest.json, so its figures cannot be checked "
                                    "against the data they plot.",
         "Obtain the manifest from the published copy. Figures drawn now would show the package as it is now, "
         "not the figures the authors published."),
        ("figure-unlisted", "The package's data gives a figure the manifest does not list.",
         "The figure was not published, or removed from the list: find out which and why."),
        ("figure-generator-unknown", "A figure manifest entry records a version of its figure's generator that "
                                     "this auditkit cannot rerun.",
         "Check the package with the auditkit that drew it (or a newer one)."),
        ("figure-not-derivable", "The manifest lists a figure the package's data does not give.",
         "Find where the figure came from: data not in the package."),
        ("figure-data-differs", "The data a figure plots, derived from the package now, differs from the data "
                                "recorded when it was drawn.",
         "The figure shows other data than the package holds: find which input changed (see `verify`)."),
        ("figure-missing", "A figure the manifest lists is not in the package.",
         "Obtain it from the published copy."),
        ("figure-changed", "A figure's PNG does not have the sha256 the manifest records.",
         "The image was replaced or edited after it was drawn: compare it with the published copy."),
        ("figure-size-differs", "A figure's PNG has other pixel dimensions than a figure drawn from its data.",
         "The image was replaced or drawn by another tool: compare it with the published copy."),
    ),
    _family(
        Family.CLAIMS,
        ("claim-not-held", "A claim of claims.json does not hold on the package's raw rows: the gate check, rank, "
                           "table value, promotion fact or host correlation it names is not what it states.",
         "Run the claim's command (it is printed with the claim) and compare the found value with the paper's "
         "sentence: a changed row, or a sentence the data never supported."),
        ("claim-not-checkable", "A claim names what the package cannot decide: no such gate, table, row, column or "
                                "check, a candidate that was not at the gate, or a gate that cannot be decided.",
         "Read the reason given; correct the claim's check, or find what the package lacks."),
    ),
    _family(
        Family.EVIDENCE,
        ("event-log-torn", "The event log's last line has no newline: a write did not finish (a crash?). The "
                           "line is not part of the log.",
         "A writer records a repair with a log-repaired event; a torn tail left in place means the log was not "
         "extended after the crash. Read the torn bytes."),
        ("event-line-invalid", "A line of the event log is not one canonical event.",
         "The log was edited or written by another tool: freezes it records after that line cannot be trusted."),
        ("event-seq-broken", "An event's seq is out of order: a line was inserted, dropped or moved.",
         "Compare the log with the published copy."),
        ("event-chain-broken", "An event's prev is not the hash of the line before: that line was changed, "
                               "inserted or removed after this one was written.",
         "Compare the log with the published copy; the chain proves nothing past this line."),
        ("rules-not-frozen-in-log", "The event log records no freeze of this gate's rules.",
         "The freeze is only the package's own claim (frozen_at): treat it as asserted."),
        ("rules-changed-after-freeze", "No freeze in the log names the rules' current sha256: the rules file is "
                                       "not the one whose freeze the log records.",
         "The rules were changed after they were frozen: compare them with the published copy."),
        ("rules-refrozen", "The gate's rules were frozen more than once, with different contents.",
         "Read the freezes on the lines given: were the rules changed once data existed?"),
        ("row-not-in-log", "An input row has no row-landed event: it was not written by a run the log records.",
         "Find where the row came from; it was added to the CSV by other means."),
        ("row-landed-before-freeze", "An input row landed before its gate's rules were frozen.",
         "The rules could have been chosen knowing this row: the gate is not pre-registered for it."),
        ("cell-started-before-freeze", "A run whose row a gate reads started before the gate's rules were frozen.",
         "The run began before the rules existed: read the times on the log lines given."),
        ("landed-row-missing", "A row the log records as landed is no longer in its CSV.",
         "A row was removed or changed afterwards: find out which and why (a dropped unfavourable run?)."),
        ("decision-not-in-log", "The event log records no decision of this gate.",
         "The decision was not made by the run the log records: find out how it was made."),
        ("decision-changed-after-log", "The decision file is not the one the log recorded.",
         "The decision was changed after it was made: compare with the published copy and replay the gate."),
        ("tsa-token-missing", "A timestamp token the log names is not in evidence/timestamps/.",
         "A recorded timestamp was removed: obtain it from the published copy."),
        ("tsa-token-changed", "A timestamp token file is not the one the log recorded.",
         "The token was replaced: compare with the published copy."),
        ("tsa-subject-missing", "What a timestamp token covered (a file, an event line or the content root) is no "
                                "longer in the package.",
         "Find out what was removed; the token proves nothing without it."),
        ("tsa-token-other-bytes", "A timestamp token is over other bytes than its subject has now.",
         "The timestamped file or line changed after the token was made: compare it with the published copy."),
        ("tsa-token-invalid", "A timestamp token is not a valid RFC 3161 token (damaged, or its signature or chain "
                              "does not verify).",
         "Treat the token as absent; inspect it with `openssl ts -reply -in FILE -text`."),
        ("tsa-untrusted", "A timestamp token chains to no TSA root the reviewer trusts, and no token from a "
                          "trusted one covers the same subject.",
         "Anyone can run a TSA with any clock: decide whether you trust its issuer, and if so name its root with "
         "--trusted-tsa (or --system-trust)."),
        ("tsa-token-after-data", "A token over the rules was made (genTime plus accuracy) at or after the first "
                                 "input row's start or its first row-landed event.",
         "The timestamp does not show the rules came first: look for an earlier token, or treat the freeze as "
         "asserted."),
        ("attestation-invalid", "An attestation is not a DSSE envelope with an in-toto Statement of the expected "
                                "predicate type.",
         "Treat it as absent; find out which tool wrote it."),
        ("attestation-bad-signature", "A signature on an attestation does not verify: the attestation was changed "
                                      "after it was signed, or the signature forged.",
         "Treat the attestation as forged until explained; compare with the published copy."),
        ("attestation-untrusted-signer", "An attestation is signed only by keys the reviewer did not name as "
                                         "trusted.",
         "Decide whether you trust the signer's key; if so, pass it with --trusted-key."),
        ("attestation-subject-mismatch", "A file, root or event-log head an attestation covers is not what the "
                                         "package holds now (or a file was added after attesting).",
         "The package changed after it was attested: compare the files named with the published copy."),
        ("seed-not-from-anchor", "A run's rng_seed is not the one derived from its stage's freeze token (or the "
                                 "anchor the seeds name is not a recorded token).",
         "The seed was chosen by other means, after or apart from the freeze: find out how."),
        # hostile evidence (issue 20): one piece auditkit cannot handle hides no other finding
        ("evidence-unchecked", "A piece of evidence (a token, an attestation, a gate's evidence) could not be "
                               "checked: it holds something no check foresaw. Every other piece was checked.",
         "Treat that piece as absent; read the file named and what was found, and report the input to auditkit "
         "(each known defect has a code of its own)."),
        ("evidence-below-required", "The reviewer asked for stronger freeze evidence (`--require`) than the gate "
                                    "has; the message says what is missing or untrusted.",
         "This is the reviewer's requirement, not a defect found in the files: read the gate's evidence and the "
         "untrusted items listed, and decide whether to trust more roots or keys."),
    ),
    _family(
        Family.PROFILE,
        ("profile-invalid", "The profile breaks its schema or does not make sense at the key given (a JSON path "
                            "that does not compile, an unknown column or generator, gates out of order...).",
         "Fix the profile at that key (docs/PROFILES.md): the profile is the reviewer's own file."),
        ("profile-file-missing", "A file the profile names is not a regular file in the package.",
         "Check the profile's path against the package: a wrong profile, or a file missing from the package."),
        ("profile-column-missing", "A run-row file lacks the columns the profile's rules need; its rows are not "
                                   "used.",
         "Check rows.columns in the profile against the file's header."),
        ("profile-prose-changed", "A prose file the profile transcribed rules from has another sha256 than the "
                                  "profile pins: the transcribed rules may no longer say what the prose does.",
         "Re-read the prose; if the rules still match it, update the pinned sha256 in the profile."),
        ("matrix-unreadable", "With a profile: the matrix file cannot be read as a UTF-8 CSV.",
         "Look at the file; compare with the published copy."),
        ("rows-none", "No file in the package matches the profile's rows.files pattern.",
         "Check the pattern against the package's file names."),
        ("row-unconvertible", "A value cannot be converted as the profile's rule for its column says.",
         "Check the profile's rule for that column against the value; if the rule is right, the value is not "
         "what the authors' other rows hold."),
        ("freeze-date-invalid", "A date in a prose file's name or text is not a calendar date.",
         "Read the date; the freeze cannot be dated from it."),
        ("freeze-contradicted", "Input rows started before the day the prose is dated, in every time zone: the "
                                "rules were written after data they decide on existed.",
         "Read the rows named and the prose: the gate is not pre-registered as its date claims."),
        ("recorded-unreadable", "The authors' recorded decision cannot be read where the profile points (the file "
                                "is unreadable, or a value is absent or of the wrong type).",
         "Check the profile's `recorded` mapping against the file; if the mapping is right, the file lacks what "
         "it should record."),
        ("recorded-unresolved", "A JSON path in the profile does not match exactly one value in the recorded "
                                "decision.",
         "Check the JSON path in the profile against the file."),
        ("recorded-duplicate", "The authors' recorded decision has two records for the same candidate or cell.",
         "Compare the two records: which one did the paper report?"),
        ("stage-budget-inconsistent", "The rows of one stage record more than one budget.",
         "Runs of one stage should have one budget: find which runs ran longer or shorter, and why."),
    ),
    _family(
        Family.DEEP,
        ("deep-unreadable", "A checkpoint cannot be re-evaluated: its metadata or model_config cannot be read.",
         "See the checkpoint findings for the same file; without a model_config the model cannot be rebuilt."),
        ("deep-checkpoint-mismatch", "The checkpoint's metadata (run_id, config_id or seed) differs from the row "
                                     "that names it.",
         "The row names another run's checkpoint: find which run the file belongs to."),
        ("deep-data-mismatch", "The validation bytes regenerated from the checkpoint's data spec differ from those "
                               "the run scored (eval_sha256).",
         "The data the run was scored on cannot be reproduced from its spec: find which data it really used."),
        ("deep-rebuild-failed", "The model could not be built, loaded or evaluated from the checkpoint.",
         "The message gives the error; the checkpoint does not match the architecture its metadata names."),
        ("deep-val-bpb-mismatch", "The re-evaluated val_bpb differs from the row's beyond the tolerance.",
         "The checkpoint does not score what its row claims: the row was edited, or the row names another "
         "checkpoint. Compare with the run's own log."),
    ),
)

CODES: tuple[Code, ...] = tuple(c for group in _GROUPS for c in group)
BY_CODE: dict[str, Code] = {c.code: c for c in CODES}


def lookup(code: str) -> Code | None:
    """The catalogue entry of `code`, or None when it is not catalogued."""
    return BY_CODE.get(code)


def uncatalogued(codes: Iterable[str]) -> list[str]:
    """The codes of `codes` that the catalogue lacks, sorted."""
    return sorted(set(codes) - BY_CODE.keys())


_INTRO = """\
# Finding codes

<!-- Generated by `python -m auditkit.codes > docs/FINDINGS.md` from auditkit/codes.py;
     tests/test_codes.py fails when this file is not what the catalogue gives. -->

Every check auditkit runs reports what it found wrong as a *finding*: a stable
code, the package-relative path, a location (`row 3, column val_bpb` or a JSON
path such as `$.candidates[2].rank`), what was expected and what was found, and
a message. A command with findings exits 1; one that could not check at all
exits 2 with an error (not a finding) and says why.

This page lists every code, what it means, and what to do about it. The advice
is written for an auditor: it says how to investigate. It never says to
regenerate the evidence a finding is about. A MANIFEST built now, a decision
made again or a table written again would describe the package as it is
now, and so hide the finding instead of explaining it. Where a file is
missing or changed, the reference is the copy the authors published.

A code appears in the JSON output (`--json`) under `code`; the same code
always means the same thing, whichever command reports it.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    """The text of docs/FINDINGS.md: the introduction, then one table per family."""
    out = [_INTRO]
    families = [f for f in Family if any(c.family is f for c in CODES)]
    out.append("## Families\n")
    for f in families:
        n = sum(1 for c in CODES if c.family is f)
        out.append(f"- [{f.heading}](#{f.value}): {n} code{'s' if n != 1 else ''}")
    out.append("")
    for f in families:
        out.append(f'<a id="{f.value}"></a>\n')
        out.append(f"## {f.heading}\n")
        out.append(f"{f.summary}\n")
        out.append("| Code | Meaning | What to do |")
        out.append("|---|---|---|")
        for c in sorted((c for c in CODES if c.family is f), key=lambda c: c.code):
            out.append(f"| `{c.code}` | {_cell(c.meaning)} | {_cell(c.action)} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    sys.stdout.write(render_markdown())


if __name__ == "__main__":
    main()
