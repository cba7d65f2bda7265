"""`laion-audit apply`: clean any copy of a dataset with a published removal list.

    published/ (url_sha256, row_key) + dataset files -> cleaned files, one per input file

A maintainer posts `published/` (no URLs, captions, hashes or reasons); anyone holding a
copy of the dataset runs this to drop the same rows from it. Rows are matched by the
hash of their normalised URL, so every copy of a removed URL goes.
"""
from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.audit import counter, run_pipeline
from pipelines.config import ConfigError, RunnerConfig
from transforms.clean import WriteCleanDataset
from transforms.paths import local_only
from transforms.read import DatasetSpec, check_dataset, match_inputs, source_names


def run_apply(published_dir: str, inputs: list[str], out_dir: str, spec: DatasetSpec,
              runner: RunnerConfig | None = None) -> dict:
    published = published_dir.rstrip("/") + "/*.parquet"
    if not FileSystems.match([published])[0].metadata_list:
        raise ConfigError(f"--removals: no published list (*.parquet) in '{published_dir}'")
    try:
        paths = match_inputs(inputs)
        check_dataset(local_only(paths), spec)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None

    def build(pipeline: beam.Pipeline) -> None:
        # Read on the workers: a published list can hold millions of hashes.
        keys = (
            pipeline
            | "ReadPublished" >> beam.io.ReadFromParquet(published, columns=["url_sha256"])
            | "UrlHashes" >> beam.Map(lambda row: row["url_sha256"])
        )
        _ = keys | "Clean" >> WriteCleanDataset(paths, source_names(paths), spec, out_dir, by="url_sha256")

    result, _ = run_pipeline(runner or RunnerConfig(), build)
    return {
        "files": len(paths),
        "rows_kept": counter(result, "clean", "rows_kept"),
        "rows_dropped": counter(result, "clean", "rows_dropped"),
    }
