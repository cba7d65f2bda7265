"""`laion-audit rematch`: match an existing audit's stored hashes against new or changed
takedown lists, with no network request and no image.

    AUDIT_DIR/audit/*.parquet (Arrow batches) -> match lists -> re-decide
      -> the output tail (transforms/outputs.py), as an audit writes:
         OUT_DIR/audit, review, removals, published, clean, report/summary.json

How the audit read its dataset and decided (thresholds, policies) comes from its run
manifest (AUDIT_DIR/report/manifest.json); the rematch writes its own.

Everything runs on Arrow record batches: at 5.85 billion rows the per-row cost is the
whole cost, so only rows whose takedown state changes are touched one by one.

It runs on any runner (`run_rematch(plan, runner)`; the CLI's --config / --runner /
--set runner.*). On the launching machine it reads the audit's manifest and summary and
the lists (parsed for errors and hashed for the manifest) and lists `audit/*.parquet`;
the audit rows and the dataset (for clean/) are read on the workers.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from pipelines.audit import finish_summary, run_pipeline
from pipelines.config import RunnerConfig
from pipelines.manifest import (
    PolicyInfo,
    RunManifest,
    list_files,
    now_utc,
    package_version,
    read_manifest,
)
from transforms.outputs import WriteOutputs
from transforms.paths import absolute, local_only, same_path
from transforms.read import DatasetSpec, match_inputs
from transforms.records import AUDIT_SCHEMA, conform_table
from transforms.table_audit import match_table
from transforms.policy import Policy, compile_policies, decide
from transforms.takedown import IndexSpec, TakedownIndex, Thresholds, kind_of, load_lists
from transforms.write import output_dir, read_json, summary_path

# The most audit rows gathered into one batch to match, in bytes (about 1.2 M rows of
# a fetched audit): see _RematchTables.
REMATCH_BATCH_BYTES = 512 << 20


def rematch_table(table: pa.Table, index: TakedownIndex,
                  remove: Sequence[Policy] = (), review: Sequence[Policy] = ()) -> pa.Table:
    """The audit rows of `table` with `matches` recomputed for the index's lists, and
    `action` / `reasons` decided again, with the audit's own policies, for every row
    whose takedown matches were or are now non-empty (no other row can change)."""
    table = conform_table(table, AUDIT_SCHEMA)
    had = _has_matches(table)
    # The new matches column from its offsets: no Python work for the rows without a hit.
    table, _ = match_table(table, index)
    changed = np.flatnonzero(_has_matches(table) | had)
    if changed.size == 0:
        return table
    actions = table.column("action").to_pylist()
    reasons = table.column("reasons").to_pylist()
    for i, row in zip(changed.tolist(), table.take(pa.array(changed)).to_pylist()):
        actions[i], reasons[i] = decide(row, remove, review)
    table = table.set_column(table.schema.get_field_index("action"), "action", pa.array(actions, pa.string()))
    return table.set_column(
        table.schema.get_field_index("reasons"), "reasons", pa.array(reasons, pa.list_(pa.string()))
    )


def _has_matches(table: pa.Table) -> np.ndarray:
    """Per row: its takedown ``matches`` are not empty."""
    return pc.fill_null(pc.greater(pc.list_value_length(table.column("matches")), 0), False).to_numpy(
        zero_copy_only=False)


class _RematchTables(beam.DoFn):
    """Audit tables -> the same rows rematched, in batches as long as the index asks for
    (``TakedownIndex.rows_per_batch``), within REMATCH_BATCH_BYTES. A batch many times
    longer than a Hamming list is searched the other way round, the entries probing an
    index of the rows (transforms/takedown/hamming.py): the search then costs per entry,
    not per row, so the more rows share it the less each pays."""

    def __init__(self, spec: IndexSpec, policy: PolicyInfo, batch_bytes: int = REMATCH_BATCH_BYTES):
        self._spec = spec
        self._policy = policy
        self._batch_bytes = batch_bytes
        self._shared = shared.Shared()

    def setup(self):
        # One index per worker process, shared by its threads.
        self._index = self._shared.acquire(self._spec.build, tag=self._spec)
        names = self._policy.names
        self._remove = compile_policies(self._policy.remove_if, names, "policy.remove_if")
        self._review = compile_policies(self._policy.review_if, names, "policy.review_if")
        # Rows audited are counted by the output tail, on their way into audit/.
        self._rows_in = Metrics.counter("audit", "rows_in")

    def start_bundle(self):
        self._tables: list[pa.Table] = []
        self._rows = self._bytes = 0

    def process(self, table: pa.Table):
        self._rows_in.inc(table.num_rows)
        # In the audit schema, so that a batch's tables concatenate (an older audit's
        # tables read with fewer columns).
        self._tables.append(conform_table(table, AUDIT_SCHEMA))
        self._rows += table.num_rows
        self._bytes += table.nbytes
        if self._rows >= self._index.rows_per_batch or self._bytes >= self._batch_bytes:
            yield self._rematch()

    def finish_bundle(self):
        if self._tables:
            yield GlobalWindows.windowed_value_at_end_of_window(self._rematch())

    def _rematch(self) -> pa.Table:
        tables, self._tables, self._rows, self._bytes = self._tables, [], 0, 0
        batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return rematch_table(batch, self._index, self._remove, self._review)


@dataclasses.dataclass
class RematchPlan:
    audit_dir: str
    lists: list[str]
    out_dir: str
    inputs: list[str] | None  # the dataset's files, for clean/ (None: a local one is missing, not written)
    spec: DatasetSpec
    index: IndexSpec
    rows_in: int  # rows of the audit being rematched, from its summary's counts
    policy: PolicyInfo  # the audit's remove_if / review_if and the names they may use
    warnings: list[str]
    audited: RunManifest  # the manifest of the run being rematched
    dataset: list[str]  # the dataset's files as recorded (or --input), readable here or not


def plan_rematch(audit_dir: str, lists: list[str], out_dir: str, inputs: list[str] | None = None,
                 **thresholds: float | None) -> RematchPlan:
    """Where the audit, its dataset and the lists are, and how the audit decided.

    The dataset, the policies and the match thresholds are taken from the audit's run
    manifest, its row count from its summary; `inputs` and explicit thresholds (not None)
    override them. A missing or unreadable manifest is a ManifestError (a ValueError)
    naming the file.
    """
    if same_path(audit_dir, out_dir):
        raise ValueError("--out: must not be the audit being rematched (it is read while written)")
    audited = read_manifest(audit_dir)
    summary = summary_path(audit_dir)
    if not FileSystems.exists(summary):
        raise ValueError(f"--audit: no run summary '{summary}' (the audit did not finish)")
    rows_audited = int(read_json(summary)["rows_audited"])
    dataset = audited.dataset
    spec = DatasetSpec(dataset.url_col, dataset.caption_col, dataset.id_col, dataset.format)
    if inputs is not None:
        recorded = [absolute(p) for p in match_inputs(inputs)]
        readable = recorded
    else:
        recorded = list(audited.inputs)
        # Local files are looked for here; remote ones (thousands of shards at full
        # scale) are not touched on this machine: the workers read them for clean/.
        readable = recorded if recorded and all(FileSystems.exists(p) for p in local_only(recorded)) else None
    # `thresholds` by kind (pdq=, phash=, clip=); None keeps the audit's own.
    settings = Thresholds(audited.thresholds).replace(**thresholds)
    warnings = []
    clip_entries = sum(n for kind, n in load_lists(lists).kind_counts().items() if kind_of(kind).needs_embedding)
    if clip_entries:
        warnings.append(f"{clip_entries} clip entries are not matched: an audit keeps no embeddings")
    return RematchPlan(audit_dir, list(lists), out_dir, readable, spec,
                       IndexSpec(paths=tuple(lists), thresholds=settings), rows_audited,
                       audited.policy, warnings, audited, recorded)


def rematch_manifest(plan: RematchPlan) -> RunManifest:
    """The rematch's own manifest: its lists and thresholds; the audit's dataset,
    policies, model and config."""
    audited = plan.audited
    return RunManifest(
        kind="rematch",
        rematch_of=absolute(plan.audit_dir),
        inputs=list(plan.dataset),
        dataset=audited.dataset,
        thresholds=plan.index.thresholds.to_dict(),
        policy=audited.policy,
        model=audited.model,
        takedown_lists=list_files(plan.lists),
        config_sha256=audited.config_sha256,
        laion_audit_version=package_version(),
        written_at=now_utc(),
    )


def build_rematch(pipeline: beam.Pipeline, plan: RematchPlan) -> None:
    tables = (
        pipeline
        # No Reshuffle after the read: the parquet source splits by row group (and
        # Dataflow rebalances its splits), so the reads spread the work already, and
        # moving every table through a shuffle would cost more than matching it. Typed
        # as tables so that whatever moves them uses the Arrow coder
        # (transforms/table_coder.py), not pickling.
        | "ReadAudit" >> beam.io.ReadFromParquetBatched(output_dir(plan.audit_dir, "audit/*.parquet"))
        .with_output_types(pa.Table)
        | "Rematch" >> beam.ParDo(_RematchTables(plan.index, plan.policy)).with_output_types(pa.Table)
    )
    rows_in = pipeline | "RowsIn" >> beam.Create([plan.rows_in])
    (tables, rows_in) | "WriteOutputs" >> WriteOutputs(
        plan.out_dir, dataset=plan.inputs, spec=plan.spec,
        summary_extra={"clean_written": bool(plan.inputs), "warnings": plan.warnings},
    )


def run_rematch(plan: RematchPlan, runner: RunnerConfig | None = None) -> dict:
    from pipelines.report import audit_thresholds, finish_report

    result, wall_s = run_pipeline(runner or RunnerConfig(), lambda p: build_rematch(p, plan), plan.out_dir,
                                  lambda: rematch_manifest(plan))
    summary = finish_summary(result, plan.out_dir, wall_s)
    # report/index.html, with the thresholds the audit scored with
    return finish_report(plan.out_dir, summary, audit_thresholds(plan.audit_dir))
