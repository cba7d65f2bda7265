"""Dataset files without Beam: formats, the URL / caption / id columns, text rows, and
local files opened, created and matched the way Beam's filesystems would.

The read stage (transforms/read.py), the clean stage (transforms/clean.py) and a local
`laion-audit apply` share these, so every path counts the same rows and names a broken
file the same way. Importing this module does not import Beam: a path with a scheme
(gs://, s3://, file://...) or a codec Python lacks goes to Beam's filesystems, imported
then.
"""
from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import lzma
import os
import posixpath
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from transforms.paths import has_scheme

FORMATS = ("parquet", "csv", "tsv", "jsonl")
_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}

class DatasetError(ValueError):
    """The dataset cannot be read as configured (missing column, unknown format...)."""


@contextlib.contextmanager
def naming_file(path: str, fmt: str):
    """Turn what a broken file raises while read (a truncated parquet, bytes that are not
    UTF-8, a bad gzip stream, a malformed CSV quote) into one DatasetError line that
    names the file, whoever reads it: the launch-time check or a worker."""
    try:
        yield
    except DatasetError:
        raise
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason}, byte 0x{err.object[err.start]:02x}); "
                           "save the file as UTF-8") from None
    except pa.ArrowException as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DatasetError(f"{path}: not a readable {fmt} file ({first})") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DatasetError(f"{path}: cannot be decompressed ({err or type(err).__name__})") from None
    except csv.Error as err:
        raise DatasetError(f"{path}: not readable as {fmt} ({err})") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err.strerror or err})") from None


@dataclass(frozen=True)
class DatasetSpec:
    url_col: str = "URL"
    caption_col: str = "TEXT"
    id_col: str | None = None
    format: str | None = None
    read_batch_rows: int = 65_536
    md5_col: str | None = None  # the dataset's MD5 of the image bytes (img2dataset's `md5`)
    sha256_col: str | None = None
    positions: bool = False  # records carry POSITION_KEY (precomputed embeddings need it)

    @classmethod
    def from_config(cls, cfg, positions: bool = False) -> "DatasetSpec":
        return cls(cfg.url_col, cfg.caption_col, cfg.id_col, cfg.format, cfg.read_batch_rows,
                   md5_col=cfg.md5_col, sha256_col=cfg.sha256_col, positions=positions)



def format_of(path: str, configured: str | None) -> str:
    if configured:
        return configured
    base = path[:-3] if path.endswith(".gz") else path
    ext = posixpath.splitext(base)[1].lower()
    try:
        return _EXTENSIONS[ext]
    except KeyError:
        raise DatasetError(
            f"dataset.format: cannot tell the format of '{path}' from its extension; set one of {FORMATS}"
        ) from None


def source_names(paths: list[str]) -> dict[str, str]:
    """Name each file for its row ids: the base name, or the path below the common
    directory when base names collide (two `part-0.parquet` in different folders)."""
    names = {path: posixpath.basename(path) for path in paths}
    if len(set(names.values())) == len(paths):
        return names
    common = posixpath.commonpath(paths)  # only reached with two or more paths
    return {path: posixpath.relpath(path, common) for path in paths}


def _wanted_columns(spec: DatasetSpec) -> list[str]:
    return [c for c in dict.fromkeys([spec.url_col, spec.caption_col, spec.id_col, spec.md5_col, spec.sha256_col]) if c]


def _missing_column(key: str, col: str, path: str, available: Iterable[str], seen: str) -> DatasetError:
    return DatasetError(f"{key}: column '{col}' not in {path} ({seen}: {', '.join(available)})")


def projected_columns(available: list[str], spec: DatasetSpec, path: str, seen: str = "columns") -> list[str]:
    """The URL, caption, id and hash columns, each checked to be among `available`."""
    for key, col in (("dataset.url_col", spec.url_col), ("dataset.caption_col", spec.caption_col),
                     ("dataset.id_col", spec.id_col), ("dataset.md5_col", spec.md5_col),
                     ("dataset.sha256_col", spec.sha256_col)):
        if col and col not in available:
            raise _missing_column(key, col, path, available, seen)
    return _wanted_columns(spec)


class _ReadableHandle(io.RawIOBase):
    """A `read(n)`-only file object (Beam's gzip CompressedFile) as a raw stream that
    io.TextIOWrapper accepts."""

    def __init__(self, handle: BinaryIO):
        super().__init__()
        self._handle = handle

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_text(handle: BinaryIO) -> TextIO:
    """The text of a binary handle (open_input's, FileSystems.open's): UTF-8 with any byte order mark dropped, line
    endings untranslated (as csv needs). Lines end only at \\n, \\r or \\r\\n — not at the
    other Unicode line breaks captions may hold, which codecs' readers would split on."""
    buffered = io.BufferedReader(_ReadableHandle(handle), buffer_size=1 << 20)
    return io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")


def csv_rows(text: TextIO, fmt: str) -> Iterator[list[str]]:
    """The rows of a CSV/TSV text as read, header first. Blank lines are not rows."""
    return (row for row in csv.reader(text, delimiter="," if fmt == "csv" else "\t") if row)


def header_columns(header: list[str], spec: DatasetSpec, path: str) -> dict[str, int]:
    """Where each projected column sits in a CSV/TSV row (its first place in the header)."""
    return {col: header.index(col) for col in projected_columns(header, spec, path)}


def field_at(row: list[str], index: int | None) -> str | None:
    """A row's field by header position; a row shorter than the header lacks it."""
    return row[index] if index is not None and index < len(row) else None


def _jsonl_value(line: str, path: str, line_no: int):
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}:{line_no}: not a JSON object ({err.msg})") from None


def jsonl_rows(text: TextIO, path: str, url_col: str) -> Iterator[tuple[str, dict]]:
    """(line, row) for each non-blank JSONL line; a line that is JSON but not an object is
    a row with no fields. Raises DatasetError on a line that is not JSON, and after the
    last line when object rows exist but none has `url_col` (a misnamed column)."""
    objects = url_seen = False
    keys_seen: dict[str, None] = {}
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue
        row = _jsonl_value(line, path, line_no)
        if isinstance(row, dict):
            objects = True
            if not url_seen:
                url_seen = url_col in row
                if len(keys_seen) < 20:  # enough to spot the right name, bounded however wide rows are
                    keys_seen.update(dict.fromkeys(row))
            yield line, row
        else:
            yield line, {}
    if objects and not url_seen:
        raise _missing_column("dataset.url_col", url_col, path, keys_seen, "keys seen")


def _available_columns(path: str, fmt: str) -> tuple[list[str], str] | None:
    """The column names a file offers and what to call them in errors; None when it has
    none to check (an empty text file, a JSONL without object rows)."""
    with naming_file(path, fmt), open_input(path) as handle:
        if fmt == "parquet":
            return pq.ParquetFile(handle).schema_arrow.names, "columns"
        text = open_text(handle)
        if fmt in ("csv", "tsv"):
            header = next(csv_rows(text, fmt), None)
            return (header, "columns") if header is not None else None
        keys: dict[str, None] = {}
        objects = 0
        for line_no, line in enumerate(text, start=1):
            if objects >= 100:
                break
            if line.strip():
                row = _jsonl_value(line, path, line_no)
                if isinstance(row, dict):
                    objects += 1
                    keys.update(dict.fromkeys(row))
        return (list(keys), "keys seen") if objects else None


def check_dataset(paths: list[str], spec: DatasetSpec) -> None:
    """Launch-time check, before any worker starts: every file has a known format, and
    the first file of each format with names to check holds the URL, caption and id
    columns (parquet: its schema; CSV/TSV: its header; JSONL: the keys of its first 100
    object rows). Empty files are passed over for the next file of their format.

    Raises DatasetError naming the config key at fault."""
    formats = {path: format_of(path, spec.format) for path in paths}
    checked: set[str] = set()
    for path, fmt in formats.items():
        if fmt in checked:
            continue
        available = _available_columns(path, fmt)
        if available is not None:
            projected_columns(available[0], spec, path, seen=available[1])
            checked.add(fmt)


# How Beam's filesystems (CompressionTypes.AUTO) pick a codec by suffix; those Python
# has are opened here, the rest (.deflate, .zst) through Beam.
_CODECS = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open, ".lzma": lzma.open}
_BEAM_ONLY_CODECS = (".deflate", ".zst", ".zstd")


def _codec_of(path: str):
    lowered = path.lower()
    for suffix, codec in _CODECS.items():
        if lowered.endswith(suffix):
            return codec
    return None


def opens_without_beam(path: str) -> bool:
    """Whether open_input / create_output handle `path` here, without Beam."""
    return not has_scheme(path) and not path.lower().endswith(_BEAM_ONLY_CODECS)


def reads_natively(path: str) -> bool:
    """A local file without a codec suffix: pyarrow can open it by its path."""
    return not has_scheme(path) and _codec_of(path) is None and not path.lower().endswith(_BEAM_ONLY_CODECS)


def open_input(path: str) -> BinaryIO:
    """`path` opened for reading as Beam's FileSystems.open would: decompressed by suffix."""
    if not opens_without_beam(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.open(path)
    codec = _codec_of(path)
    return codec(path, "rb") if codec else open(path, "rb")


def create_output(path: str) -> BinaryIO:
    """`path` created for writing as Beam's FileSystems.create would: its folder made,
    compressed by suffix."""
    if not opens_without_beam(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.create(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    codec = _codec_of(path)
    return codec(path, "wb") if codec else open(path, "wb")


def _glob_regex(pattern: str) -> re.Pattern:
    """Beam's glob syntax: `*` within a folder, `**` across folders, `?`, `[...]`."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if i < n and pattern[i] == "*":
                out.append(".*")
                i += 1
            else:
                out.append(r"[^/\\]*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(r"\[")
            else:
                inner = pattern[i:j].replace("\\", "\\\\")
                i = j + 1
                if inner[0] == "!":
                    inner = "^" + inner[1:]
                elif inner[0] == "^":
                    inner = "\\" + inner
                out.append(f"[{inner}]")
        else:
            out.append(re.escape(c))
    return re.compile(r"(?ms)" + "".join(out) + r"\Z")


def match_local(pattern: str) -> list[str]:
    """The local files a pattern matches, spelled as Beam's FileSystems.match spells
    them: the folder before the first wildcard is walked and every path below it tested
    against the whole pattern; a pattern without wildcards matches itself if it exists."""
    if pattern.endswith(("/", "\\")):
        pattern += "*"
    prefix = re.match(r"^[^[*?]*", pattern).group(0)
    if prefix == pattern:
        return [pattern] if os.path.exists(pattern) else []
    folder = os.path.dirname(prefix)
    if not os.path.exists(folder):
        return []
    match = _glob_regex(pattern).match
    return [path for root, _, names in os.walk(folder)
            for path in (os.path.join(root, name) for name in names) if match(path)]


def match_inputs(patterns: Iterable[str]) -> list[str]:
    """Expand globs (local, gs://, s3://) to a sorted, de-duplicated list of files."""
    paths: set[str] = set()
    for pattern in patterns:
        if has_scheme(pattern):
            from apache_beam.io.filesystems import FileSystems

            paths.update(match.path for match in FileSystems.match([pattern])[0].metadata_list)
        else:
            paths.update(match_local(pattern))
    if not paths:
        raise DatasetError(f"dataset.input: no file matches {list(patterns)}")
    return sorted(paths)
