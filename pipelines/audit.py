"""The audit pipeline: wires the stages in the order of the flow in DESIGN.md.

    Read rows -> Reshuffle -> Fetch -> Decode + hash -> Write audit + summary

`build_audit` adds the stages to a pipeline; `run_audit` builds, runs and checks a whole
audit (rows in == rows audited, from Beam's metrics) and is what the CLI and tests call.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from pipelines.config import AuditConfig
from pipelines.runners import make_options, make_runner
from transforms.fetch import Fetch, FetchSettings
from transforms.hashing import HashImages
from transforms.read import DatasetSpec, ReadDataset, match_inputs
from transforms.write import WriteAudit, WriteSummary, read_json, summary_path, write_json

log = logging.getLogger(__name__)


def fetch_settings(config: AuditConfig) -> FetchSettings:
    fetch = config.fetch
    fields = {f.name for f in dataclasses.fields(FetchSettings)}
    values = {k: v for k, v in fetch.model_dump().items() if k in fields and v is not None}
    return FetchSettings(**values)


def _mark_not_fetched(record: dict) -> dict:
    if record["status"] is None:
        record["status"] = "not_fetched"
    return record


def build_audit(pipeline: beam.Pipeline, config: AuditConfig) -> None:
    paths = match_inputs(config.dataset.input)
    rows = pipeline | "Read" >> ReadDataset(paths, DatasetSpec.from_config(config.dataset))
    records = rows | "Reshuffle" >> beam.Reshuffle()
    if config.fetch.enabled:
        records = (
            records
            | "Fetch" >> Fetch(fetch_settings(config))
            | "DecodeAndHash" >> HashImages(config.fetch.max_pixels, keep_image=config.embedding.enabled)
        )
    else:
        records = records | "NotFetched" >> beam.Map(_mark_not_fetched)
    records = records | "Decide" >> beam.Map(_keep)
    records | "WriteAudit" >> WriteAudit(config.output.path, config.output.num_shards)
    (records, rows) | "WriteSummary" >> WriteSummary(
        config.output.path, {"inputs": paths, "model": None}
    )


def _keep(record: dict) -> dict:
    record["action"] = record.get("action") or "keep"
    return record


@dataclasses.dataclass
class AuditRun:
    summary: dict
    rows_in: int
    rows_audited: int
    wall_s: float


def counter(result, namespace: str, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
    return sum(c.committed or c.attempted or 0 for c in found)


def run_audit(config: AuditConfig) -> AuditRun:
    started = time.monotonic()
    options = make_options(config.runner.options)
    pipeline = beam.Pipeline(runner=make_runner(config.runner.name), options=options)
    build_audit(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    wall_s = time.monotonic() - started
    rows_in = counter(result, "audit", "rows_in")
    rows_audited = counter(result, "audit", "rows_audited")
    path = summary_path(config.output.path)
    summary = read_json(path)
    summary.update(
        wall_s=round(wall_s, 3),
        rows_per_s=round(summary["rows_audited"] / wall_s, 2) if wall_s > 0 else None,
        metrics={"rows_in": rows_in, "rows_audited": rows_audited},
    )
    summary["all_rows_accounted"] = bool(
        summary["all_rows_accounted"] and rows_in == rows_audited == summary["rows_in"]
    )
    write_json(path, summary)
    return AuditRun(summary, rows_in, rows_audited, wall_s)
