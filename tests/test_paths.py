"""The shared small helpers: which paths are remote, folder listings (local, and an
object store with no folders), and the short error text rows keep."""
from __future__ import annotations

import io
import os
import time

import pytest
from apache_beam.io.filesystem import FileMetadata, FileSystem

from transforms.paths import absolute, is_remote, join, list_folder, local_only
from transforms.row_status import MAX_ERROR_CHARS, short_error
from transforms.write import clear_outputs, clear_parts


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


# ------------------------------------------------------------------ folder listings


class _ObjectStore(FileSystem):
    """A Beam filesystem that keeps objects in memory under flat keys, as gs:// and s3://
    do: no folders, a "folder" is a key prefix. Registered by its scheme on import."""

    objects: dict[str, bytes] = {}

    @classmethod
    def scheme(cls):
        return "objtest"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for key, data in sorted(self.objects.items()):
            if key.startswith(prefix):
                yield FileMetadata(key, len(data), time.time())

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        store = self.objects

        class _Object(io.BytesIO):
            def close(self):
                store[path] = self.getvalue()
                super().close()

        return _Object()

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        return io.BytesIO(self.objects[path])

    def copy(self, sources, destinations):
        for src, dst in zip(sources, destinations):
            self.objects[dst] = self.objects[src]

    def rename(self, sources, destinations):
        for src, dst in zip(sources, destinations):
            self.objects[dst] = self.objects.pop(src)

    def exists(self, path):
        return path in self.objects

    def size(self, path):
        return len(self.objects[path])

    def last_updated(self, path):
        return time.time()

    def metadata(self, path):
        return FileMetadata(path, len(self.objects[path]), time.time())

    def delete(self, paths):
        for path in paths:
            del self.objects[path]


def _layout(put) -> None:
    """A killed local run's part folders: a finished group's shard, a killed group's
    shard, Beam's temp folder with a shard in it."""
    put("audit/g00000-part-00000-of-00001.parquet")
    put("audit/g00001-part-00000-of-00001.parquet")
    put("audit/beam-temp-g00001-abc/shard-1")
    put("review/g00000-part-00000-of-00001.parquet")


def test_list_folder_lists_a_local_folder_one_level_deep(tmp_path):
    def put(name):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    _layout(put)
    audit = str(tmp_path / "audit")
    assert list_folder(audit) == [(n, os.path.join(audit, n)) for n in
                                  ("beam-temp-g00001-abc", "g00000-part-00000-of-00001.parquet",
                                   "g00001-part-00000-of-00001.parquet")]
    assert list_folder(str(tmp_path / "nothing")) == []

    removed = clear_parts(str(tmp_path), ("g00000-",))
    assert sorted(removed) == sorted([os.path.join(audit, "beam-temp-g00001-abc"),
                                      os.path.join(audit, "g00001-part-00000-of-00001.parquet")])
    assert sorted(os.listdir(audit)) == ["g00000-part-00000-of-00001.parquet"]
    assert os.listdir(tmp_path / "review") == ["g00000-part-00000-of-00001.parquet"]
    clear_outputs(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_list_folder_lists_every_object_under_a_remote_prefix():
    store = _ObjectStore.objects
    store.clear()
    root = "objtest://bucket/run"

    def put(name):
        store[f"{root}/{name}"] = b"x"

    _layout(put)
    store["objtest://bucket/run/auditx/not-in-audit"] = b"x"  # a sibling sharing the prefix's text
    assert is_remote(root)
    assert list_folder(f"{root}/audit") == [(n, f"{root}/audit/{n}") for n in
                                            ("beam-temp-g00001-abc/shard-1",
                                             "g00000-part-00000-of-00001.parquet",
                                             "g00001-part-00000-of-00001.parquet")]
    assert list_folder(f"{root}/audit/") == list_folder(f"{root}/audit")
    assert list_folder(f"{root}/nothing") == []

    removed = clear_parts(root, ("g00000-",))
    assert sorted(removed) == [f"{root}/audit/beam-temp-g00001-abc/shard-1",
                               f"{root}/audit/g00001-part-00000-of-00001.parquet"]
    assert sorted(store) == [f"{root}/audit/g00000-part-00000-of-00001.parquet",
                             f"{root}/auditx/not-in-audit", f"{root}/review/g00000-part-00000-of-00001.parquet"]
    clear_outputs(root)
    assert sorted(store) == [f"{root}/auditx/not-in-audit"]
    store.clear()
