"""`laion-audit rematch`: match an existing audit's stored hashes against new or changed
takedown lists, with no network request and no image.

    AUDIT_DIR/audit/*.parquet (Arrow batches) -> match lists -> re-decide
      -> OUT_DIR/audit, removals, published, clean, report/summary.json

Everything runs on Arrow record batches: at 5.85 billion rows the per-row cost is the
whole cost, so only rows whose takedown state changes are touched one by one.
"""
from __future__ import annotations

import dataclasses

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
from transforms.takedown import IndexSpec, TakedownIndex
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
TAKEDOWN_PREFIX = "takedown:"


def rematch_table(table: pa.Table, index: TakedownIndex) -> pa.Table:
    """The audit rows of `table` with `matches`, `action` and `reasons` recomputed for
    the index's lists. Policy decisions (reasons not from a list) are kept."""
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
    for i in changed.tolist():
        actions[i], reasons[i] = redecide(actions[i], reasons[i] or [], matches[i])
    table = table.set_column(table.schema.get_field_index("action"), "action", pa.array(actions, pa.string()))
    return table.set_column(
        table.schema.get_field_index("reasons"), "reasons", pa.array(reasons, pa.list_(pa.string()))
    )


def redecide(action: str | None, reasons: list[str], matches: list[dict]) -> tuple[str, list[str]]:
    """A row's action once its takedown matches are replaced by `matches`."""
    policy = [r for r in reasons if not r.startswith(TAKEDOWN_PREFIX)]
    takedown = [f"{TAKEDOWN_PREFIX}{list_id}" for list_id in sorted({m["list_id"] for m in matches})]
    if takedown:
        return "remove", takedown + (policy if action == "remove" else [])
    if policy and action in ("remove", "review"):
        return action, policy
    return "keep", []


class _RematchTables(beam.DoFn):
    def __init__(self, spec: IndexSpec):
        self._spec = spec
        self._shared = shared.Shared()

    def setup(self):
        # One index per worker process, shared by its threads.
        self._index = self._shared.acquire(self._spec.build, tag=self._spec)
        self._rows_in = Metrics.counter("audit", "rows_in")
        self._rows_out = Metrics.counter("audit", "rows_audited")

    def process(self, table: pa.Table):
        self._rows_in.inc(table.num_rows)
        out = rematch_table(table, self._index)
        self._rows_out.inc(out.num_rows)
        yield out


def summary_of_table(table: pa.Table) -> dict:
    """SummaryFn's accumulator for a table, computed column-wise."""
    fn = SummaryFn()
    acc = fn.create_accumulator()
    acc["rows_audited"] = table.num_rows
    acc["bytes_fetched"] = int(pc.sum(table.column("bytes")).as_py() or 0)
    for key in ("status", "action"):
        for item in pc.value_counts(table.column(key)).to_pylist():
            acc[key][item["values"] or "none"] += item["counts"]
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


def plan_rematch(audit_dir: str, lists: list[str], out_dir: str, inputs: list[str] | None = None,
                 **thresholds) -> RematchPlan:
    """Where the audit, its dataset and the lists are; the dataset is taken from the
    audit's own summary unless `inputs` names it."""
    previous = read_json(summary_path(audit_dir))
    dataset = previous.get("dataset") or {}
    spec = DatasetSpec(dataset.get("url_col", "URL"), dataset.get("caption_col", "TEXT"),
                       dataset.get("id_col"), dataset.get("format"))
    if inputs is None:
        recorded = previous.get("inputs") or []
        inputs = recorded if recorded and all(FileSystems.exists(p) for p in recorded) else None
    return RematchPlan(audit_dir, list(lists), out_dir, inputs, spec,
                       IndexSpec(paths=tuple(lists), **thresholds), int(previous["rows_audited"]))


def build_rematch(pipeline: beam.Pipeline, plan: RematchPlan) -> None:
    tables = (
        pipeline
        | "ReadAudit" >> beam.io.ReadFromParquetBatched(output_dir(plan.audit_dir, "audit/*.parquet"))
        | "Spread" >> beam.Reshuffle()
        | "Rematch" >> beam.ParDo(_RematchTables(plan.index))
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
        "clean_written": bool(plan.inputs),
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
    result, wall_s = run_pipeline(runner or RunnerConfig(), lambda p: build_rematch(p, plan))
    return finish_summary(result, plan.out_dir, wall_s)
