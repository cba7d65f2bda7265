"""The audit pipeline: wires the stages in the order of the flow in ARCHITECTURE.md.

    Read rows -> [attach published embeddings] -> Reshuffle -> Fetch -> Decode + hash
      -> Embed (RunInference) -> Classify -> Flag captions
      -> Match takedown lists -> Decide -> [embeddings] -> tables of audit rows
      -> the output tail (transforms/outputs.py): audit / review / removals / published /
         clean / summary, the same tail `rematch` writes through

`build_audit` adds the stages to a pipeline; `run_audit` builds, runs and checks a whole
audit (rows in == rows audited, from the outputs and from Beam's metrics) and is what the
CLI and the tests call. A run's manifest (report/manifest.json, pipelines/manifest.py)
is written at launch.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter

from pipelines.config import AuditConfig, ConfigError, policy_names
from pipelines.manifest import (
    DatasetInfo,
    ModelInfo,
    PolicyInfo,
    RunManifest,
    config_sha256,
    list_files,
    now_utc,
    package_version,
    write_manifest,
)
from pipelines.progress_counts import CountProgress, CountProgressTables
from pipelines.runners import make_pipeline
from transforms.captions import FlagCaptions
from transforms.policy import DecideAction
from transforms.outputs import RecordsToTables, WriteOutputs
from transforms.paths import absolute, local_only
from transforms.read import DatasetSpec, ReadDataset, check_dataset, match_inputs
from transforms.write import WriteEmbeddings, clear_outputs, read_json, summary_path, write_json

log = logging.getLogger(__name__)


def _mark_not_fetched(record: dict) -> dict:
    return {**record, "status": "not_fetched"} if record["status"] is None else record


def model_summary(config: AuditConfig) -> dict:
    """What the manifest says of the embedding model; random weights are announced (in
    the summary too)."""
    embedding = config.embedding
    if embedding.precomputed:
        return {"model": f"precomputed:{embedding.model}", "embeddings_from": ", ".join(embedding.precomputed)}
    if not embedding.enabled:
        return {"model": None}
    from transforms.clip_model import model_id_of

    summary = {"model": model_id_of(embedding.model, embedding.pretrained)}
    if embedding.pretrained is None:
        summary["model_warning"] = "random weights (embedding.pretrained is null): scores are meaningless"
    return summary


@dataclasses.dataclass(frozen=True)
class AuditPlan:
    """What an audit launches with, worked out once on this machine: the pipeline and
    the manifest both read it, so a dataset glob (a bucket listing at full scale) and
    the categories file are read once, and the manifest names the files actually read."""

    paths: list[str]  # the dataset's files; local ones absolute, so `rematch` runs from anywhere
    spec: DatasetSpec
    policy_names: frozenset[str]
    model: dict  # model_summary(config)
    # A dry run's plan (pipelines/dry_run.py): remote patterns kept as written, and no
    # remote path listed or opened while building (a stand-in for such a stage).
    offline: bool = False


def plan_audit(config: AuditConfig, offline: bool = False) -> AuditPlan:
    """`offline` (a dry run): local patterns are matched, remote ones kept as written."""
    if offline:
        from pipelines.dry_run import offline_inputs
    return AuditPlan(
        paths=[absolute(p) for p in (offline_inputs if offline else match_inputs)(config.dataset.input)],
        spec=DatasetSpec.from_config(config.dataset, positions=bool(config.embedding.precomputed)),
        policy_names=frozenset(policy_names(config)),
        model=model_summary(config),
        offline=offline,
    )


def audit_manifest(config: AuditConfig, plan: AuditPlan) -> RunManifest:
    """The manifest of an audit run as `config` says (lists hashed here, at launch)."""
    model = plan.model
    dataset = config.dataset
    return RunManifest(
        kind="audit",
        rematch_of=None,
        inputs=plan.paths,
        dataset=DatasetInfo(dataset.url_col, dataset.caption_col, dataset.id_col, dataset.format),
        thresholds=config.takedown.thresholds().to_dict(),
        policy=PolicyInfo(list(config.policy.remove_if), list(config.policy.review_if),
                          sorted(plan.policy_names)),
        model=ModelInfo(model.get("model"), model.get("model_warning"), model.get("embeddings_from")),
        takedown_lists=list_files(config.takedown.lists),
        config_sha256=config_sha256(config),
        laion_audit_version=package_version(),
        written_at=now_utc(),
    )


# Set to "0" to audit on records even where tables would do (benchmarks and tests
# compare the two paths on the same config).
TABLES_ENV = "LAION_AUDIT_TABLES"


def records_only_reason(config: AuditConfig) -> str | None:
    """Why this audit must run on records (one dict per row) rather than on tables
    (transforms/table_audit.py); None when tables do. Tables cover a fetch-off audit:
    read, not_fetched, caption flags, takedown lists, policies and the output tail.
    What needs a row at a time stays on records: fetching and hashing; embeddings,
    LAION's precomputed ones included, and the classifier they feed (attached by row
    position, scored per batch of records); dataset.previous_audit (a join of records
    by url_sha256); writing embeddings."""
    if config.fetch.enabled:
        return "fetch.enabled"
    if config.embedding.enabled or config.embedding.precomputed:
        return "embedding"
    if config.dataset.previous_audit:
        return "dataset.previous_audit"
    if config.output.write_embeddings:
        return "output.write_embeddings"
    if os.environ.get(TABLES_ENV) == "0":
        return TABLES_ENV
    return None


def build_audit(pipeline: beam.Pipeline, config: AuditConfig, plan: AuditPlan | None = None,
                group=None) -> None:
    """The audit's stages on `pipeline`. `group` (pipelines.local_driver.Group): audit
    that group's read units only, writing its parts under its own names; it cleans the
    files whose rows all lie in it (the driver cleans files split over groups)."""
    plan = plan or plan_audit(config)
    paths, spec, names = plan.paths, plan.spec, plan.policy_names
    # Columns and formats are checked on this machine, before any work is launched.
    check_dataset(local_only(paths), spec)
    if records_only_reason(config) is None:
        return _build_table_audit(pipeline, config, plan, group)
    out = config.output.path

    rows = pipeline | "Read" >> ReadDataset(paths, spec, units=group.units if group else None)
    embedding = config.embedding
    records = rows
    if embedding.precomputed:
        if plan.offline and local_only(embedding.precomputed) != list(embedding.precomputed):
            from pipelines.dry_run import NotListed as attach  # a dry run lists no bucket
        else:
            from transforms.precomputed import AttachPrecomputedEmbeddings as attach

        # Before the Reshuffle: rows still come in file order, so shard reads stay sequential.
        records = records | "AttachPrecomputed" >> attach(embedding.precomputed, embedding.model, inputs=paths)
    records = records | "Reshuffle" >> beam.Reshuffle()
    reused = None
    if config.dataset.previous_audit:
        from transforms.reuse import ReuseAudited

        # Rows an earlier audit fetched skip Fetch .. Classify (scores carried) and rejoin
        # below: before Classify with published embeddings, else before FlagCaptions.
        # A local run's group joins only its share of the previous audit (local_driver).
        share = [group.previous] if group is not None and group.previous else None
        records, reused = records | "ReusePrevious" >> ReuseAudited.from_config(config, previous=share)
    if config.fetch.enabled:
        # Imported here: aiohttp and the image stack cost a fetch-off audit start-up time.
        from transforms.fetch import Fetch
        from transforms.hashing import HashImages

        records = (
            records
            | "Fetch" >> Fetch.from_config(config.fetch)
            | "DecodeAndHash"
            >> HashImages(config.fetch.max_pixels, keep_image=embedding.enabled and not embedding.precomputed)
        )
    else:
        records = records | "NotFetched" >> beam.Map(_mark_not_fetched)

    if embedding.enabled and not embedding.precomputed:
        from transforms.embed import EmbedImages

        records = records | "Embed" >> EmbedImages.from_config(embedding, **embedding.handler_options())
    if reused is not None and embedding.precomputed:
        records, reused = (records, reused) | "WithReused" >> beam.Flatten(), None
    if embedding.enabled or embedding.precomputed:
        from transforms.classify import ClassifyImages

        records = records | "Classify" >> ClassifyImages.from_config(
            embedding, config.classify.categories, batch_size=config.classify.batch_size
        )
    if reused is not None:
        records = (records, reused) | "WithReused" >> beam.Flatten()
    records = records | "FlagCaptions" >> FlagCaptions()
    if config.takedown.lists:
        from transforms.takedown import MatchTakedown

        records = records | "MatchTakedown" >> MatchTakedown(
            config.takedown.lists, thresholds=config.takedown.thresholds()
        )
    records = records | "Decide" >> DecideAction(
        config.policy.remove_if, config.policy.review_if, names
    )
    from pipelines.progress import active_folder

    counts = active_folder() if group is not None else None
    if counts is not None:  # a local run's live progress line
        records | "Progress" >> beam.ParDo(CountProgress(counts))

    if config.output.write_embeddings:
        records | "WriteEmbeddings" >> WriteEmbeddings(out, prefix=group.prefix if group else "")
    tables = records | "ToTables" >> RecordsToTables()
    rows_in = rows | "RowsIn" >> beam.combiners.Count.Globally()
    warning = plan.model.get("model_warning")
    (tables, rows_in) | "WriteOutputs" >> WriteOutputs(
        out, dataset=list(group.clean_files) if group else paths, spec=spec, num_shards=config.output.num_shards,
        summary_extra={"model_warning": warning} if warning else None,
        part_prefix=group.prefix if group else "", summary_file=group.counts_file if group else None,
        sources=group.sources if group else None,
    )


def _build_table_audit(pipeline: beam.Pipeline, config: AuditConfig, plan: AuditPlan, group) -> None:
    """build_audit for an audit on tables of audit rows (records_only_reason is None):
    the same stages, each a table (a read block, thousands of rows) at a time, and the
    same output tail. No Reshuffle after the read: the read units are spread already
    (ReadDataset's SpreadUnits), and a table's work is milliseconds."""
    from transforms.policy import DecideTables
    from transforms.table_audit import MatchTakedownTables, mark_not_fetched_table, row_count

    paths, spec = plan.paths, plan.spec
    rows = pipeline | "Read" >> ReadDataset(paths, spec, units=group.units if group else None, tables=True)
    tables = rows | "NotFetched" >> beam.Map(mark_not_fetched_table).with_output_types(pa.Table)
    tables = tables | "FlagCaptions" >> FlagCaptions(tables=True)
    if config.takedown.lists:
        from transforms.takedown import IndexSpec

        index_spec = IndexSpec(paths=tuple(config.takedown.lists), thresholds=config.takedown.thresholds())
        tables = tables | "MatchTakedown" >> beam.ParDo(MatchTakedownTables(index_spec))
    tables = tables | "Decide" >> beam.ParDo(
        DecideTables(config.policy.remove_if, config.policy.review_if, plan.policy_names))
    from pipelines.progress import active_folder

    counts = active_folder() if group is not None else None
    if counts is not None:  # a local run's live progress line
        tables | "Progress" >> beam.ParDo(CountProgressTables(counts))
    rows_in = rows | "RowsIn" >> beam.Map(row_count) | "SumRows" >> beam.CombineGlobally(sum)
    (tables, rows_in) | "WriteOutputs" >> WriteOutputs(
        config.output.path, dataset=list(group.clean_files) if group else paths, spec=spec,
        num_shards=config.output.num_shards,
        part_prefix=group.prefix if group else "", summary_file=group.counts_file if group else None,
        sources=group.sources if group else None,
    )


@dataclasses.dataclass
class AuditRun:
    summary: dict
    rows_in: int
    rows_audited: int
    wall_s: float


def counter(result, namespace: str, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))["counters"]
    return sum(c.committed or c.attempted or 0 for c in found)


def run_pipeline(config_runner, build, output_path: str | None = None,
                 manifest: Callable[[], RunManifest] | None = None) -> tuple[object, float]:
    """Build with `build(pipeline)`, clear `output_path` of a previous run's outputs,
    write the run's manifest there (`manifest()`, made once the build succeeded), run to
    the end; return (result, wall seconds)."""
    started = time.monotonic()
    pipeline = make_pipeline(config_runner)
    try:
        build(pipeline)
        launched = manifest() if manifest is not None else None
    except ValueError as err:
        # Building reads what the config names (dataset columns, embedding layout,
        # categories, heads): a problem there is the config's, reported before any work.
        raise ConfigError(str(err).splitlines()[0]) from None
    if output_path is not None:
        clear_outputs(output_path)
        if launched is not None:
            write_manifest(output_path, launched)
    result = pipeline.run()
    result.wait_until_finish()
    return result, time.monotonic() - started


def count_mismatch(counts: dict[str, int]) -> dict[str, int] | None:
    """None when every count equals the rows read per the outputs (`rows_in`); else all
    of them, by name, so a report shows which one went astray."""
    expected = counts["rows_in"]
    if all(value == expected for value in counts.values()):
        return None
    return dict(counts)


def finish_summary(result, output_path: str, wall_s: float) -> dict:
    """Add wall time and Beam's own row counts to summary.json; rows in must equal rows
    audited by every count, or `all_rows_accounted` is false and `count_mismatch` holds
    the four counts: rows read and audited per the outputs and per Beam's metrics."""
    path = summary_path(output_path)
    summary = account(read_json(path), counter(result, "audit", "rows_in"),
                      counter(result, "audit", "rows_audited"), wall_s)
    write_json(path, summary)
    return summary


def account(summary: dict, rows_in: int, rows_audited: int, wall_s: float) -> dict:
    """`summary` with wall time, Beam's row counts (`rows_in`, `rows_audited`: a whole
    run's, summed over a local run's groups) and the check of finish_summary."""
    summary = dict(summary)
    summary.update(
        wall_s=round(wall_s, 3),
        rows_per_s=round(summary["rows_audited"] / wall_s, 2) if wall_s > 0 else None,
        metrics={"rows_in": rows_in, "rows_audited": rows_audited},
    )
    from transforms.reuse import reuse_counts  # rows_reused / rows_fetched, from the status counts

    summary.update(reuse_counts(summary.get("status") or {}))
    mismatch = count_mismatch({
        "rows_in": summary["rows_in"],
        "rows_audited": summary["rows_audited"],
        "metrics.rows_in": rows_in,
        "metrics.rows_audited": rows_audited,
    })
    summary["count_mismatch"] = mismatch
    summary["all_rows_accounted"] = mismatch is None
    return summary


def run_audit(config: AuditConfig, fresh: bool = False, progress=None) -> AuditRun:
    """Build, run and check an audit. On a local runner the run is driven group by group
    (pipelines/local_driver.py: bounded memory, resumable; `fresh` starts over; `progress`
    draws its progress line); on any other runner it is one pipeline, and always starts
    over. report/index.html is written at the end (pipelines/report.py)."""
    from pipelines.report import category_thresholds, finish_report

    try:
        plan = plan_audit(config)
    except ValueError as err:  # e.g. a categories file the policies cannot be checked against
        raise ConfigError(str(err).splitlines()[0]) from None
    from pipelines import local_driver

    if local_driver.drives(config):
        summary, wall_s = local_driver.run_local_audit(config, plan, fresh=fresh, progress=progress)
    else:
        result, wall_s = run_pipeline(config.runner, lambda p: build_audit(p, config, plan), config.output.path,
                                      lambda: audit_manifest(config, plan))
        summary = finish_summary(result, config.output.path, wall_s)
    summary = finish_report(config.output.path, summary, category_thresholds(config))
    return AuditRun(summary, summary["metrics"]["rows_in"], summary["metrics"]["rows_audited"], wall_s)
