"""`laion-audit apply`: clean any copy of a dataset with a published removal list.

    published/ (url_sha256, row_key) + dataset files -> cleaned files, one per input file

A maintainer posts `published/` (no URLs, captions, hashes or reasons); anyone holding a
copy of the dataset runs this to drop the same rows from it. Rows are matched by the
hash of their normalised URL, so every copy of a removed URL goes.

The dataset is read as the audit reads it (parquet, csv, tsv, jsonl, `.gz` text; the URL
and id columns as named), through the clean stage the audit's own `clean/` is written
by. It runs on any runner (`runner`, as `run` takes it): on this machine only the
published folder and the dataset's globs are listed and the first local file of each
format checked for its columns; the files themselves are read on the workers.
"""
from __future__ import annotations

import dataclasses

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.audit import counter, run_pipeline
from pipelines.config import ConfigError, RunnerConfig
from transforms.clean import WriteCleanDataset
from transforms.paths import local_only, same_path
from transforms.read import DatasetSpec, check_dataset, match_inputs, source_names
from transforms.write import output_dir


@dataclasses.dataclass(frozen=True)
class ApplyPlan:
    published: str  # glob of the published list's parquet files
    paths: list[str]  # the dataset's files
    sources: dict[str, str]  # each file's name under out_dir (and in its row ids)
    spec: DatasetSpec
    out_dir: str


def plan_apply(published_dir: str, inputs: list[str], out_dir: str, spec: DatasetSpec) -> ApplyPlan:
    """Check on this machine what can be checked cheaply; ConfigError (one line) if not."""
    published = published_dir.rstrip("/") + "/*.parquet"
    if not FileSystems.match([published])[0].metadata_list:
        raise ConfigError(f"--removals: no published list (*.parquet) in '{published_dir}'")
    # Rows are dropped by URL alone: no caption column is read, so none is required.
    spec = dataclasses.replace(spec, caption_col=None)
    try:
        paths = match_inputs(inputs)
        check_dataset(local_only(paths), spec)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    sources = source_names(paths)
    for path in paths:
        if same_path(path, output_dir(out_dir, sources[path])):
            raise ConfigError(f"--out: would overwrite the input '{path}' (a cleaned file takes its input's name)")
    return ApplyPlan(published, paths, sources, spec, out_dir)


def build_apply(pipeline: beam.Pipeline, plan: ApplyPlan) -> None:
    # Read on the workers: a published list can hold millions of hashes.
    keys = (
        pipeline
        | "ReadPublished" >> beam.io.ReadFromParquet(plan.published, columns=["url_sha256"])
        | "UrlHashes" >> beam.Map(lambda row: row["url_sha256"])
    )
    _ = keys | "Clean" >> WriteCleanDataset(plan.paths, plan.sources, plan.spec, plan.out_dir, by="url_sha256")


def run_apply(published_dir: str, inputs: list[str], out_dir: str, spec: DatasetSpec,
              runner: RunnerConfig | None = None) -> dict:
    plan = plan_apply(published_dir, inputs, out_dir, spec)
    result, _ = run_pipeline(runner or RunnerConfig(), lambda p: build_apply(p, plan))
    return {
        "files": len(plan.paths),
        "rows_kept": counter(result, "clean", "rows_kept"),
        "rows_dropped": counter(result, "clean", "rows_dropped"),
    }
