"""`laion-audit apply`: clean any copy of a dataset with a published removal list.

    published/ (url_sha256, row_key) + dataset files -> cleaned files, one per input file

A maintainer posts `published/` (no URLs, captions, hashes or reasons); anyone holding a
copy of the dataset runs this to drop the same rows from it. Rows are matched by the
hash of their normalised URL, so every copy of a removed URL goes.
"""
from __future__ import annotations

import apache_beam as beam

from pipelines.audit import counter
from pipelines.runners import make_options, make_runner
from transforms.clean import WriteCleanDataset
from transforms.read import DatasetSpec, match_inputs, source_names


def run_apply(published_dir: str, inputs: list[str], out_dir: str, spec: DatasetSpec,
              runner: str = "FnApiRunner", options: dict | None = None) -> dict:
    paths = match_inputs(inputs)
    published = match_inputs([published_dir.rstrip("/") + "/*.parquet"])
    pipeline = beam.Pipeline(runner=make_runner(runner), options=make_options(options or {}))
    # Read on the workers: a published list can hold millions of hashes.
    keys = (
        pipeline
        | "ReadPublished" >> beam.io.ReadFromParquet(published_dir.rstrip("/") + "/*.parquet", columns=["url_sha256"])
        | "UrlHashes" >> beam.Map(lambda row: row["url_sha256"])
    )
    _ = keys | "Clean" >> WriteCleanDataset(paths, source_names(paths), spec, out_dir, by="url_sha256")
    result = pipeline.run()
    result.wait_until_finish()
    return {
        "files": len(paths),
        "published_files": len(published),
        "rows_kept": counter(result, "clean", "rows_kept"),
        "rows_dropped": counter(result, "clean", "rows_dropped"),
    }
