"""Paths a run reads and writes: local files, or URL-style paths (gs://, s3://, ...) that
Beam's filesystems open. One test for "remote", used by every stage and pipeline.

Light on purpose (no Beam at import): the config check uses it.
"""
from __future__ import annotations

import os
import posixpath
import re

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def has_scheme(path: str) -> bool:
    """A URL-style path (gs://, s3://, file://, ...): kept as written, never joined to
    the working directory."""
    return bool(_SCHEME.match(path))


def is_remote(path: str) -> bool:
    """A path with a scheme (gs://, s3://, hdfs://, http://, ...) other than file://."""
    return has_scheme(path) and not path.startswith("file://")


def same_path(a: str, b: str) -> bool:
    """Whether two paths name the same place: remote ones as written (less a trailing
    "/"), local ones after resolving links and "..", so an output cannot overwrite its input."""
    if is_remote(a) or is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def absolute(path: str) -> str:
    """A plain local path made absolute (a run records where it read from); a path with
    a scheme as given."""
    return path if has_scheme(path) else os.path.abspath(path)


def local_only(paths: list[str]) -> list[str]:
    """The local ones: what can be checked on this machine before a run is launched."""
    return [p for p in paths if not is_remote(p)]


def join(prefix: str, name: str) -> str:
    """`prefix/name` in the prefix's own filesystem."""
    if is_remote(prefix):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(prefix, name)
    return posixpath.join(prefix, name)


def list_folder(folder: str) -> list[tuple[str, str]]:
    """(name below `folder`, full path) of what a folder holds, sorted by name; [] when
    there is no such folder. Locally its entries, files and folders alike (not descended
    into: removing a folder removes what it holds); in an object store, which has no
    folders, every object under the prefix (a name may hold "/")."""
    if is_remote(folder):
        from apache_beam.io.filesystems import FileSystems

        folder = folder.rstrip("/")
        found = FileSystems.match([folder + "/**"])[0].metadata_list
        return sorted((m.path[len(folder) + 1:], m.path) for m in found)
    if not os.path.isdir(folder):
        return []
    return sorted((name, os.path.join(folder, name)) for name in os.listdir(folder))
