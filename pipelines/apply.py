"""`laion-audit apply`: clean any copy of a dataset with a published removal list.

    published/ (url_sha256, row_key) + dataset files -> cleaned files, one per input file

A maintainer posts `published/` (no URLs, captions, hashes or reasons); anyone holding a
copy of the dataset runs this to drop the same rows from it. Rows are matched by the
hash of their normalised URL, so every copy of a removed URL goes.

The dataset is read as the audit reads it (parquet, csv, tsv, jsonl, `.gz` text; the URL
and id columns as named), through the clean stage the audit's own `clean/` is written
by (transforms/clean.py). Where it runs:

- a local runner (FnApiRunner, DirectRunner; not asked for worker processes) and every
  path local: here, in this process, file after file, without Beam (importing and
  starting Beam would cost more than cleaning most copies);
- otherwise (gs://, s3://, a Dataflow / Flink / portable runner, multi_processing): as
  a Beam pipeline on `runner`, as `run` takes it. Only the published folder and the
  dataset's globs are listed here and the first local file of each format checked for
  its columns; the files themselves are read on the workers.

Both ways run the same `clean_file` on each file, so they write the same files.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

import pyarrow.parquet as pq

from pipelines.config import ConfigError, RunnerConfig
from transforms.clean import clean_file, drop_by_url_sha256
from transforms.dataset_files import (
    DatasetError,
    DatasetSpec,
    check_dataset,
    match_inputs,
    match_local,
    naming_file,
    open_input,
    reads_natively,
    source_names,
)
from transforms.paths import has_scheme, is_remote, join, local_only

# pipelines.runners.LOCAL_RUNNERS, named here without importing Beam.
IN_PROCESS_RUNNERS = frozenset({"FnApiRunner", "DirectRunner"})
PUBLISHED_COLUMN = "url_sha256"


@dataclasses.dataclass(frozen=True)
class ApplyPlan:
    published: str  # glob of the published list's parquet files
    paths: list[str]  # the dataset's files
    sources: dict[str, str]  # each file's name under out_dir (and in its row ids)
    spec: DatasetSpec
    out_dir: str
    published_files: tuple[str, ...] = ()  # what `published` matched when planned


def _match_published(pattern: str) -> list[str]:
    if has_scheme(pattern):
        from apache_beam.io.filesystems import FileSystems

        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    return sorted(match_local(pattern))


def _check_published(path: str) -> None:
    """A local published file is a parquet file with a url_sha256 column."""
    with naming_file(path, "parquet"), contextlib.ExitStack() as stack:
        source = path if reads_natively(path) else stack.enter_context(open_input(path))
        names = pq.ParquetFile(source).schema_arrow.names
    if PUBLISHED_COLUMN not in names:
        raise ConfigError(f"--removals: {path} has no {PUBLISHED_COLUMN} column (columns: {', '.join(names)})")


def plan_apply(published_dir: str, inputs: list[str], out_dir: str, spec: DatasetSpec) -> ApplyPlan:
    """Check on this machine what can be checked cheaply; ConfigError (one line) if not."""
    published = published_dir.rstrip("/") + "/*.parquet"
    published_files = _match_published(published)
    if not published_files:
        raise ConfigError(f"--removals: no published list (*.parquet) in '{published_dir}'")
    try:
        for path in local_only(published_files[:1]):
            _check_published(path)
    except DatasetError as err:  # not a parquet file
        raise ConfigError(f"--removals: {err}".splitlines()[0]) from None
    # Rows are dropped by URL alone: no caption column is read, so none is required.
    spec = dataclasses.replace(spec, caption_col=None)
    try:
        paths = match_inputs(inputs)
        check_dataset(local_only(paths), spec)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    sources = source_names(paths)
    _check_outputs(paths, sources, out_dir, published_files)
    return ApplyPlan(published, paths, sources, spec, out_dir, tuple(published_files))


def _place(path: str) -> str:
    """Where a path points, as ``same_path`` compares paths: remote as written, less a
    trailing "/"; local with links and ".." resolved."""
    return path.rstrip("/") if is_remote(path) else os.path.realpath(path)


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of an existing local file (a hard link shares its target's)."""
    if is_remote(path):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _check_outputs(paths: list[str], sources: dict[str, str], out_dir: str, published_files: list[str]) -> None:
    """ConfigError when a cleaned file would be written over any file the run reads:
    its own input, another input (``a/x`` and ``a/o/x`` cleaned into ``a/o`` give
    ``a/o/x`` and ``a/o/o/x``) or a published list file. Files are cleaned in any order
    (on Beam, in parallel), so an input overwritten first would be read cleaned."""
    read = [*paths, *published_files]
    by_place = {_place(p): p for p in reversed(read)}
    by_id = {i: p for p in reversed(read) if (i := _file_id(p)) is not None}
    for path in paths:
        output = join(out_dir, sources[path])
        other = by_place.get(_place(output)) or by_id.get(_file_id(output))
        if other is None:
            continue
        if other == path:
            raise ConfigError(f"--out: would overwrite the input '{path}' (a cleaned file takes its input's name)")
        raise ConfigError(f"--out: the cleaned copy of '{path}' would overwrite the input '{other}'")


def runs_in_process(runner: RunnerConfig, plan: ApplyPlan) -> bool:
    """A local runner not asked for worker processes, and nothing but local paths."""
    if runner.name not in IN_PROCESS_RUNNERS:
        return False
    options = runner.options
    if options.get("direct_running_mode") == "multi_processing" and options.get("direct_num_workers", 1) != 1:
        return False
    return not any(has_scheme(p) for p in (plan.out_dir, *plan.published_files, *plan.paths))


def build_apply(pipeline, plan: ApplyPlan) -> None:
    import apache_beam as beam

    from transforms.clean_beam import WriteCleanDataset

    # Read on the workers: a published list can hold millions of hashes.
    keys = (
        pipeline
        | "ReadPublished" >> beam.io.ReadFromParquet(plan.published, columns=[PUBLISHED_COLUMN])
        | "UrlHashes" >> beam.Map(lambda row: row[PUBLISHED_COLUMN])
    )
    _ = keys | "Clean" >> WriteCleanDataset(plan.paths, plan.sources, plan.spec, plan.out_dir, by="url_sha256")


def apply_here(plan: ApplyPlan) -> dict:
    """The plan run in this process: the published hashes read, then each file cleaned."""
    removed: list = []
    for path in plan.published_files:
        with naming_file(path, "parquet"):
            removed += pq.read_table(path, columns=[PUBLISHED_COLUMN]).column(0).to_pylist()
    rule = drop_by_url_sha256(removed)
    kept = dropped = 0
    for path in plan.paths:
        source = plan.sources[path]
        file_kept, file_dropped = clean_file(path, source, join(plan.out_dir, source), plan.spec, rule)
        kept += file_kept
        dropped += file_dropped
    return {"files": len(plan.paths), "rows_kept": kept, "rows_dropped": dropped}


def run_apply(published_dir: str, inputs: list[str], out_dir: str, spec: DatasetSpec,
              runner: RunnerConfig | None = None, in_process: bool | None = None) -> dict:
    """Plan, then clean: here (`runs_in_process`) or as a Beam pipeline on `runner`;
    `in_process` set says which, whatever the runner (False: the pipeline on a local run).
    Returns the number of files and the rows kept and dropped."""
    runner = runner or RunnerConfig()
    plan = plan_apply(published_dir, inputs, out_dir, spec)
    if runs_in_process(runner, plan) if in_process is None else in_process:
        return apply_here(plan)
    from pipelines.audit import counter, run_pipeline

    result, _ = run_pipeline(runner, lambda p: build_apply(p, plan))
    return {
        "files": len(plan.paths),
        "rows_kept": counter(result, "clean", "rows_kept"),
        "rows_dropped": counter(result, "clean", "rows_dropped"),
    }
