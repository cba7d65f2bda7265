"""The shared small helpers: which paths are remote, and the short error text rows keep."""
from __future__ import annotations

import os

import pytest

from transforms.paths import absolute, is_remote, join, local_only
from transforms.row_status import MAX_ERROR_CHARS, short_error


@pytest.mark.parametrize("path", ["gs://b/x.parquet", "s3://b/x", "hdfs://nn/x", "https://h/x", "az://c/x"])
def test_paths_with_a_scheme_are_remote(path):
    assert is_remote(path)
    assert absolute(path) == path
    assert local_only([path]) == []


@pytest.mark.parametrize("path", ["x.parquet", "/data/x.parquet", "./gs:/x", "file:///data/x", "C:x"])
def test_local_paths_are_not_remote(path):
    assert not is_remote(path)
    assert local_only([path, "gs://b/y"]) == [path]


def test_absolute_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute("rows.parquet") == os.path.join(str(tmp_path), "rows.parquet")
    assert absolute("file:///data/rows.parquet") == "file:///data/rows.parquet"


def test_join_keeps_the_prefix_filesystem():
    assert join("/out", "audit") == "/out/audit"
    assert join("gs://bucket/out", "audit") == "gs://bucket/out/audit"


def test_short_error_names_the_type_and_stays_short():
    assert short_error(ValueError("bad pixel")) == "ValueError: bad pixel"
    assert short_error(TimeoutError()) == "TimeoutError"
    long = short_error(OSError("x" * 1000))
    assert len(long) == MAX_ERROR_CHARS and long.endswith("...") and long.startswith("OSError: xxx")
    assert short_error("content type text/html") == "content type text/html"
