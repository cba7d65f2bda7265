"""LAION's published embeddings: ``DIR/img_emb/img_emb_N.npy`` rows aligned with
``DIR/metadata/metadata_N.parquet``.

``AttachPrecomputedEmbeddings`` gives each record read from a metadata shard the vector
published for it, instead of fetching and embedding the image: a classification pass
over a whole dataset then needs no image download and no image forward pass. Records leave as those of
``transforms.embed.EmbedImages`` do, with ``_embedding`` (float32, unit length,
in-flight only) and ``model`` (``precomputed:<model name>``).

Why positions and not a join: a record read from ``metadata_N.parquet`` at row P gets row
P of ``img_emb_N.npy``, read in place (a memmap locally, coalesced ranged reads on remote
storage) without shuffling either side. The read stage says where each row came from
with the in-flight ``_position`` (metadata file path, row position) when its spec asks
(``DatasetSpec(positions=True)``, which the audit sets with ``embedding.precomputed``), so
row ids may be the dataset's own id column and several directories (laion2B-en,
laion2B-multi, laion1B-nolang) may hold the same shard numbers: a shard is found by its
metadata file's path. Records without ``_position`` fall back to the positional row id
``metadata_N.parquet:P`` (one directory, ``dataset.id_col: null``).

Shard files pair by number and spelling: ``img_emb_0000.npy`` with ``metadata_0000.parquet``;
the same number spelled two ways (``img_emb_0010.npy`` beside ``metadata_10.parquet``, or
``metadata_10`` beside ``metadata_010``) is refused rather than guessed at. The price of
positions is alignment: a shard whose embeddings and metadata have different row counts
is refused (``PrecomputedLayoutError``), before the run and again on the worker, rather
than attaching vectors to the wrong rows.

This module loads no model (the classify stage still embeds its prompts with CLIP), so
it imports neither torch nor open_clip: listing and checking a layout stays light.
"""
from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.paths import is_remote
from transforms.read import POSITION_KEY


class PrecomputedLayoutError(ValueError):
    """A precomputed-embeddings directory that does not line up with its metadata."""


class PrecomputedShard(NamedTuple):
    number: int
    npy_path: str
    parquet_path: str


_NPY_NAME = re.compile(r"^img_emb_(\d+)\.npy$")
_METADATA_NAME = re.compile(r"^metadata_(\d+)\.parquet$")


def _listing(pattern: str, name_re: re.Pattern) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in FileSystems.match([pattern])[0].metadata_list:
        name = posixpath.basename(match.path)
        parsed = name_re.match(name)
        if parsed:
            found[parsed.group(1)] = match.path
    return found


def _open_raw(path: str):
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def npy_header(path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a .npy file, reading only its header."""
    with _open_raw(path) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        offset = handle.tell()
    if fortran or len(shape) != 2:
        raise PrecomputedLayoutError(f"{path}: expected a C-order [rows, dim] array, got shape {shape}")
    return tuple(shape), np.dtype(dtype), offset


def parquet_rows(path: str) -> int:
    with _open_raw(path) as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def check_shard(shard: PrecomputedShard) -> int:
    """Rows of the shard; PrecomputedLayoutError when embeddings and metadata disagree."""
    (rows, _), _, _ = npy_header(shard.npy_path)
    meta_rows = parquet_rows(shard.parquet_path)
    if rows != meta_rows:
        raise PrecomputedLayoutError(
            f"shard {shard.number}: {posixpath.basename(shard.npy_path)} has {rows} rows but "
            f"{posixpath.basename(shard.parquet_path)} has {meta_rows}; the embeddings would "
            f"be attached to the wrong rows"
        )
    return rows


def _by_number(found: dict[str, str], name: str, directory: str) -> dict[int, str]:
    """{shard number: its token} of a listing; one number spelled twice is an error."""
    numbers: dict[int, str] = {}
    for token in sorted(found):
        number = int(token)
        if number in numbers:
            raise PrecomputedLayoutError(
                f"{directory}: shard {number} named twice ({name}_{numbers[number]} and {name}_{token})")
        numbers[number] = token
    return numbers


def precomputed_shards(directory: str, check_rows: bool = True) -> list[PrecomputedShard]:
    """The shards of a LAION-layout directory, sorted by number, each with both files.

    Files pair by shard number written the same way (``img_emb_0000.npy`` with
    ``metadata_0000.parquet``, ``img_emb_7.npy`` with ``metadata_7.parquet``); a number
    spelled differently on the two sides, or twice on one side, is an error.
    ``check_rows`` also compares each shard's row counts (two small header reads per
    shard); the attaching DoFn checks again whenever it opens a shard.
    """
    npys = _listing(FileSystems.join(directory, "img_emb", "img_emb_*.npy"), _NPY_NAME)
    metas = _listing(FileSystems.join(directory, "metadata", "metadata_*.parquet"), _METADATA_NAME)
    if not npys:
        raise PrecomputedLayoutError(f"{directory}: no img_emb/img_emb_N.npy files")
    npy_numbers = _by_number(npys, "img_emb", directory)
    meta_numbers = _by_number(metas, "metadata", directory)
    shards = []
    for number in sorted(set(npy_numbers) | set(meta_numbers)):
        npy, meta = npy_numbers.get(number), meta_numbers.get(number)
        if meta is None:
            raise PrecomputedLayoutError(
                f"shard {npy}: img_emb/img_emb_{npy}.npy has no metadata/metadata_{npy}.parquet")
        if npy is None:
            raise PrecomputedLayoutError(
                f"shard {meta}: metadata/metadata_{meta}.parquet has no img_emb/img_emb_{meta}.npy")
        if npy != meta:
            raise PrecomputedLayoutError(
                f"shard {number}: img_emb/img_emb_{npy}.npy and metadata/metadata_{meta}.parquet spell "
                f"the number differently; rename one so both are written alike")
        shards.append(PrecomputedShard(number, npys[npy], metas[meta]))
    if check_rows:
        for shard in shards:
            check_shard(shard)
    return shards


def path_key(path: str) -> str:
    """One spelling of a file path, to find a metadata file's shard: local paths made
    absolute and normalised, remote ones with repeated slashes folded."""
    if is_remote(path):
        scheme, _, rest = path.partition("://")
        return f"{scheme}://{posixpath.normpath(rest)}"
    return os.path.abspath(path)


def as_directories(directories: str | Sequence[str]) -> list[str]:
    """``embedding.precomputed`` as a list: one directory (a string) or several."""
    return [directories] if isinstance(directories, str) else list(directories)


def precomputed_layout(directories: str | Sequence[str], check_rows: bool = True) -> dict[str, PrecomputedShard]:
    """Every shard of one or more LAION-layout directories, keyed by ``path_key`` of its
    metadata file; a directory listed twice is an error."""
    layout: dict[str, PrecomputedShard] = {}
    seen: set[str] = set()
    for directory in as_directories(directories):
        key = path_key(directory)
        if key in seen:
            raise PrecomputedLayoutError(f"embedding.precomputed: {directory} is listed twice")
        seen.add(key)
        for shard in precomputed_shards(directory, check_rows=check_rows):
            layout[path_key(shard.parquet_path)] = shard
    return layout


def check_inputs(paths: Sequence[str], layout: dict[str, PrecomputedShard]) -> None:
    """Launch-time check: every dataset file is the metadata file of a listed shard."""
    for path in paths:
        if path_key(path) not in layout:
            raise PrecomputedLayoutError(
                f"dataset.input: {path} is not a metadata/metadata_N.parquet of a directory in "
                f"embedding.precomputed, so its rows have no published embeddings")


def shard_position(row_id: str) -> tuple[str, int]:
    """('N' as written in metadata_N.parquet, row position) from a read-stage row id."""
    source, sep, position = str(row_id).rpartition(":")
    parsed = _METADATA_NAME.match(posixpath.basename(source)) if sep else None
    if parsed is None or not position.isdigit():
        raise PrecomputedLayoutError(
            f"row id '{row_id}' is not '<metadata_N.parquet>:<position>' and the record has no "
            f"{POSITION_KEY}; precomputed embeddings need the read stage's positions "
            f"(DatasetSpec(positions=True)) or positional row ids (dataset.id_col: null)"
        )
    return parsed.group(1), int(position)


class NpyRows:
    """Row access to one img_emb_N.npy: a memmap for local files, ranged reads otherwise.

    Remote reads coalesce the requested positions into runs (gaps up to ``max_gap``
    rows are read through), so records that arrive in file order, as they do straight
    after the read stage, cost one request per run rather than one per row.
    """

    def __init__(self, path: str, max_gap: int = 256, memmap: bool | None = None) -> None:
        self.path = path
        self.shape, self.dtype, self._offset = npy_header(path)
        self._max_gap = max_gap
        if memmap is None:
            memmap = not is_remote(path)
        self._memmap = np.load(path, mmap_mode="r") if memmap else None
        self._handle = None

    def __getitem__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if self._memmap is not None:
            return np.asarray(self._memmap[positions])
        return self._read_remote(positions)

    def _read_remote(self, positions: np.ndarray) -> np.ndarray:
        if self._handle is None:
            self._handle = _open_raw(self.path)
        row_bytes = self.shape[1] * self.dtype.itemsize
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        out = np.empty((len(positions), self.shape[1]), dtype=self.dtype)
        start = 0
        while start < len(sorted_pos):
            end = start
            while end + 1 < len(sorted_pos) and sorted_pos[end + 1] - sorted_pos[end] <= self._max_gap:
                end += 1
            first, last = int(sorted_pos[start]), int(sorted_pos[end])
            self._handle.seek(self._offset + first * row_bytes)
            data = self._handle.read((last - first + 1) * row_bytes)
            block = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.shape[1])
            out[order[start:end + 1]] = block[sorted_pos[start:end + 1] - first]
            start = end + 1
        return out

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._memmap = None


def record_position(record: dict) -> tuple[str | None, str | None, int]:
    """(metadata file path or None, shard token or None, row position) of a record: its
    in-flight ``_position`` when the read stage set one, else its positional row id."""
    where = record.get(POSITION_KEY)
    if where is not None:
        return where[0], None, int(where[1])
    token, position = shard_position(record["row_id"])
    return None, token, position


def attach_precomputed(records: Sequence[dict], embeddings: Any, model_id: str = "precomputed") -> list[dict]:
    """Copies of ``records`` (all from one metadata shard) with their published vectors.

    ``embeddings`` is that shard's img_emb array (a memmap, an array or NpyRows): the
    vector of the record at row P of the metadata file (its ``_position``, else its row
    id ``metadata_N.parquet:P``) is its row P, read as float32 and normalised to unit
    length. ``_position`` goes no further.
    """
    if not records:
        return []
    positions = np.array([record_position(r)[2] for r in records], dtype=np.int64)
    rows = embeddings.shape[0]
    if positions.max() >= rows:
        bad = records[int(np.argmax(positions))]["row_id"]
        raise PrecomputedLayoutError(
            f"row id '{bad}' (row {int(positions.max())}): the shard's embeddings have only {rows} rows")
    vectors = np.asarray(embeddings[positions], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    out = []
    for record, vector in zip(records, vectors):
        item = dict(record)
        item.pop("_image", None)
        item.pop(POSITION_KEY, None)
        item["_embedding"] = vector
        item["model"] = model_id
        out.append(item)
    return out


class _AttachPrecomputed(beam.DoFn):
    def __init__(self, shards: dict[str, PrecomputedShard], model_id: str) -> None:
        self._shards = shards  # by path_key of the metadata file
        self._model_id = model_id
        self._attached = Metrics.counter("embed", "rows_precomputed")
        self._open: dict[str, NpyRows] = {}
        self._keys: dict[str, str] = {}

    def setup(self) -> None:
        self._open = {}
        self._keys = {}
        # Row ids name a shard by its metadata file's token (metadata_0007.parquet: "0007");
        # a token more than one directory holds cannot say which shard (None).
        self._by_token: dict[str, str | None] = {}
        for key, shard in self._shards.items():
            token = _METADATA_NAME.match(posixpath.basename(shard.parquet_path)).group(1)
            self._by_token[token] = None if token in self._by_token else key

    def _key_of(self, path: str | None, token: str | None, row_id: str) -> str:
        if path is not None:
            key = self._keys.get(path)
            if key is None:
                key = self._keys[path] = path_key(path)
            if key not in self._shards:
                raise PrecomputedLayoutError(f"{path} is not a metadata file of embedding.precomputed")
            return key
        if token not in self._by_token:
            raise PrecomputedLayoutError(f"metadata_{token}.parquet has no shard in the embeddings directory")
        key = self._by_token[token]
        if key is None:
            raise PrecomputedLayoutError(
                f"row id '{row_id}': metadata_{token}.parquet is in more than one embeddings directory; "
                f"read with DatasetSpec(positions=True)")
        return key

    def _rows_of(self, key: str) -> NpyRows:
        rows = self._open.get(key)
        if rows is None:
            shard = self._shards[key]
            check_shard(shard)
            rows = self._open[key] = NpyRows(shard.npy_path)
        return rows

    def process(self, batch: Sequence[dict]) -> Iterator[dict]:
        by_shard: dict[str, list[dict]] = {}
        for record in batch:
            path, token, _ = record_position(record)
            by_shard.setdefault(self._key_of(path, token, record["row_id"]), []).append(record)
        for key, records in by_shard.items():
            for record in attach_precomputed(records, self._rows_of(key), self._model_id):
                self._attached.inc()
                yield record

    def teardown(self) -> None:
        for rows in self._open.values():
            rows.close()
        self._open = {}


class AttachPrecomputedEmbeddings(beam.PTransform):
    """Records read from ``DIR/metadata/*.parquet`` gain their published ``_embedding``.

    ``directories`` is one LAION-layout directory or a list of them (LAION-5B's three
    subsets). With ``inputs`` (the dataset's files), each is checked here, at
    construction, to be a metadata file of a listed shard. Every record of a listed
    shard gets its vector, whatever its fetch status: the embedding describes the image
    as the dataset captured it. For remote directories apply it straight after the read
    (before any Reshuffle), where records still come in file order and ranged reads stay
    sequential.
    """

    def __init__(self, directories: str | Sequence[str], model_name: str = "ViT-L-14", check_rows: bool = True,
                 batch_size: int = 1024, label: str | None = None, inputs: Sequence[str] | None = None) -> None:
        super().__init__(label)
        self._shards = precomputed_layout(directories, check_rows=check_rows)
        if inputs is not None:
            check_inputs(inputs, self._shards)
        self._model_id = f"precomputed:{model_name}"
        self._batch_size = batch_size

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return (
            records
            | "BatchRecords" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._batch_size)
            | "AttachPrecomputed" >> beam.ParDo(_AttachPrecomputed(self._shards, self._model_id))
        )


__all__ = [
    "AttachPrecomputedEmbeddings",
    "NpyRows",
    "PrecomputedLayoutError",
    "PrecomputedShard",
    "as_directories",
    "attach_precomputed",
    "check_inputs",
    "check_shard",
    "npy_header",
    "parquet_rows",
    "path_key",
    "precomputed_layout",
    "precomputed_shards",
    "record_position",
    "shard_position",
]
