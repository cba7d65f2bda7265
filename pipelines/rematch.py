"""`laion-audit rematch`: match an existing audit's stored hashes against new or changed
takedown lists, with no network request and no image.

    AUDIT_DIR/audit/*.parquet (Arrow batches) -> match lists -> re-decide
      -> OUT_DIR/audit, removals, published, clean, report/summary.json

Everything runs on Arrow record batches: at 5.85 billion rows the per-row cost is the
whole cost, so only rows whose takedown state changes are touched one by one.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from pipelines.audit import finish_summary, run_pipeline
from pipelines.config import RunnerConfig
from transforms.clean import WriteCleanDataset
from transforms.read import DatasetSpec, match_inputs, source_names
from transforms.records import AUDIT_SCHEMA
from transforms.policy import Policy, compile_policies, decide
from transforms.takedown import IndexSpec, TakedownIndex, Thresholds, kind_of, load_lists
from transforms.write import (
    SummaryFn,
    WriteRemovals,
    output_dir,
    read_json,
    summary_path,
    summary_payload,
    write_json,
)

MATCHES_TYPE = AUDIT_SCHEMA.field("matches").type


def rematch_table(table: pa.Table, index: TakedownIndex,
                  remove: Sequence[Policy] = (), review: Sequence[Policy] = ()) -> pa.Table:
    """The audit rows of `table` with `matches` recomputed for the index's lists, and
    `action` / `reasons` decided again, with the audit's own policies, for every row
    whose takedown matches were or are now non-empty (no other row can change)."""
    table = table.select(AUDIT_SCHEMA.names).cast(AUDIT_SCHEMA)
    columns = {name: table.column(name) for name in index.columns if name in table.column_names}
    matches = index.match_columns(columns, rows=table.num_rows)
    had = pc.fill_null(pc.greater(pc.list_value_length(table.column("matches")), 0), False)
    has = np.fromiter((bool(m) for m in matches), dtype=bool, count=table.num_rows)
    changed = np.flatnonzero(has | had.to_numpy(zero_copy_only=False))
    table = table.set_column(
        table.schema.get_field_index("matches"), "matches", pa.array(matches, type=MATCHES_TYPE)
    )
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


class _RematchTables(beam.DoFn):
    def __init__(self, spec: IndexSpec, policy: dict):
        self._spec = spec
        self._policy = policy
        self._shared = shared.Shared()

    def setup(self):
        # One index per worker process, shared by its threads.
        self._index = self._shared.acquire(self._spec.build, tag=self._spec)
        names = self._policy.get("names", ())
        self._remove = compile_policies(self._policy.get("remove_if", ()), names, "policy.remove_if")
        self._review = compile_policies(self._policy.get("review_if", ()), names, "policy.review_if")
        self._rows_in = Metrics.counter("audit", "rows_in")
        self._rows_out = Metrics.counter("audit", "rows_audited")

    def process(self, table: pa.Table):
        self._rows_in.inc(table.num_rows)
        out = rematch_table(table, self._index, self._remove, self._review)
        self._rows_out.inc(out.num_rows)
        yield out


def summary_of_table(table: pa.Table) -> dict:
    """SummaryFn's accumulator for a table, computed column-wise."""
    fn = SummaryFn()
    acc = fn.create_accumulator()
    acc["rows_audited"] = table.num_rows
    acc["bytes_fetched"] = int(pc.sum(table.column("bytes")).as_py() or 0)
    for item in pc.value_counts(table.column("status")).to_pylist():
        acc["status"][item["values"] or "internal_error"] += item["counts"]  # as SummaryFn counts
    for item in pc.value_counts(table.column("action")).to_pylist():
        if item["values"]:
            acc["action"][item["values"]] += item["counts"]
    for key in ("labels", "caption_flags"):
        flat = pc.list_flatten(table.column(key))
        for item in pc.value_counts(flat).to_pylist():
            acc[key][item["values"]] += item["counts"]
    matched = pc.list_flatten(table.column("matches"))
    if len(matched):
        # one count per row and list, as SummaryFn counts
        lengths = pc.fill_null(pc.list_value_length(table.column("matches")), 0).to_numpy()
        rows = np.repeat(np.arange(table.num_rows), lengths)
        list_ids = pc.struct_field(matched, "list_id").to_pylist()
        for list_id in {(r, lid) for r, lid in zip(rows.tolist(), list_ids)}:
            acc["matched_lists"][list_id[1]] += 1
    return acc


class _MergeSummaries(beam.CombineFn):
    def __init__(self):
        self._fn = SummaryFn()

    def create_accumulator(self):
        return self._fn.create_accumulator()

    def add_input(self, acc, partial):
        return self._fn.merge_accumulators([acc, partial])

    def merge_accumulators(self, accs):
        return self._fn.merge_accumulators(accs)

    def extract_output(self, acc):
        return self._fn.extract_output(acc)


def _removed_records(table: pa.Table):
    return table.filter(pc.equal(table.column("action"), "remove")).to_pylist()


@dataclasses.dataclass
class RematchPlan:
    audit_dir: str
    lists: list[str]
    out_dir: str
    inputs: list[str] | None  # the dataset, for clean/ (None: not written)
    spec: DatasetSpec
    index: IndexSpec
    rows_in: int  # rows of the audit being rematched, from its summary
    policy: dict  # the audit's remove_if / review_if and the names they may use
    warnings: list[str]


def plan_rematch(audit_dir: str, lists: list[str], out_dir: str, inputs: list[str] | None = None,
                 **thresholds: float | None) -> RematchPlan:
    """Where the audit, its dataset and the lists are, and how the audit decided.

    The dataset, the policies and the match thresholds are taken from the audit's own
    summary; `inputs` and explicit thresholds (not None) override them.
    """
    if _same_place(audit_dir, out_dir):
        raise ValueError("--out: must not be the audit being rematched (it is read while written)")
    previous = read_json(summary_path(audit_dir))
    dataset = previous.get("dataset") or {}
    spec = DatasetSpec(dataset.get("url_col", "URL"), dataset.get("caption_col", "TEXT"),
                       dataset.get("id_col"), dataset.get("format"))
    if inputs is None:
        recorded = previous.get("inputs") or []
        inputs = recorded if recorded and all(FileSystems.exists(p) for p in recorded) else None
    # `thresholds` by kind (pdq=, phash=, clip=); None keeps the audit's own.
    settings = Thresholds(previous.get("thresholds") or {}).replace(**thresholds)
    warnings = []
    clip_entries = sum(1 for e in load_lists(lists) if kind_of(e.kind).needs_embedding)
    if clip_entries:
        warnings.append(f"{clip_entries} clip entries are not matched: an audit keeps no embeddings")
    return RematchPlan(audit_dir, list(lists), out_dir, inputs, spec,
                       IndexSpec(paths=tuple(lists), thresholds=settings), int(previous["rows_audited"]),
                       previous.get("policy") or {}, warnings)


def _same_place(a: str, b: str) -> bool:
    if "://" in a + b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def build_rematch(pipeline: beam.Pipeline, plan: RematchPlan) -> None:
    tables = (
        pipeline
        | "ReadAudit" >> beam.io.ReadFromParquetBatched(output_dir(plan.audit_dir, "audit/*.parquet"))
        | "Spread" >> beam.Reshuffle()
        | "Rematch" >> beam.ParDo(_RematchTables(plan.index, plan.policy))
    )
    tables | "WriteAudit" >> beam.io.WriteToParquetBatched(
        output_dir(plan.out_dir, "audit/part"), schema=AUDIT_SCHEMA, file_name_suffix=".parquet", codec="zstd"
    )
    removed = tables | "Removed" >> beam.FlatMap(_removed_records)
    removed | "WriteRemovals" >> WriteRemovals(plan.out_dir)
    if plan.inputs:
        paths = match_inputs(plan.inputs)
        (
            removed
            | "RemovedIds" >> beam.Map(lambda r: r["row_id"])
            | "WriteClean" >> WriteCleanDataset(paths, source_names(paths), plan.spec, output_dir(plan.out_dir, "clean"))
        )
    path, rows_in, extra = summary_path(plan.out_dir), plan.rows_in, {
        "rematch_of": plan.audit_dir, "takedown_lists": len(plan.lists), "inputs": plan.inputs,
        "clean_written": bool(plan.inputs), "warnings": plan.warnings, "policy": plan.policy,
        "thresholds": plan.index.thresholds.to_dict(),
        "dataset": {"url_col": plan.spec.url_col, "caption_col": plan.spec.caption_col,
                    "id_col": plan.spec.id_col, "format": plan.spec.format},
    }
    (
        tables
        | "TableSummaries" >> beam.Map(summary_of_table)
        | "Summary" >> beam.CombineGlobally(_MergeSummaries())
        | "WriteSummary" >> beam.Map(lambda c: write_json(path, summary_payload(c, rows_in, extra)))
    )


def run_rematch(plan: RematchPlan, runner: RunnerConfig | None = None) -> dict:
    result, wall_s = run_pipeline(runner or RunnerConfig(), lambda p: build_rematch(p, plan), plan.out_dir)
    return finish_summary(result, plan.out_dir, wall_s)
