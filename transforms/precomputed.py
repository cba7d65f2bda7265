"""LAION's published embeddings: ``DIR/img_emb/img_emb_N.npy`` rows aligned with
``DIR/metadata/metadata_N.parquet``.

``AttachPrecomputedEmbeddings`` gives each record read from a metadata shard the vector
published for it, instead of fetching and embedding the image: a classification pass
over a whole dataset then needs no image download and no image forward pass. Records leave as those of
``transforms.embed.EmbedImages`` do, with ``_embedding`` (float32, unit length,
in-flight only) and ``model`` (``precomputed:<model name>``).

Why the row id and not a join: the read stage's positional row id
(``metadata_N.parquet:P``) already says which shard and which row, so the vector is row P
of ``img_emb_N.npy``, read in place (a memmap locally, coalesced ranged reads on remote
storage) without shuffling either side. The price is alignment: a shard whose
embeddings and metadata have different row counts is refused (``PrecomputedLayoutError``),
before the run and again on the worker, rather than attaching vectors to the wrong rows.

This module loads no model (the classify stage still embeds its prompts with CLIP), so
it imports neither torch nor open_clip: listing and checking a layout stays light.
"""
from __future__ import annotations

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


def precomputed_shards(directory: str, check_rows: bool = True) -> list[PrecomputedShard]:
    """The shards of a LAION-layout directory, sorted by number, each with both files.

    ``check_rows`` also compares each shard's row counts (two small header reads per
    shard); the attaching DoFn checks again whenever it opens a shard.
    """
    npys = _listing(FileSystems.join(directory, "img_emb", "img_emb_*.npy"), _NPY_NAME)
    metas = _listing(FileSystems.join(directory, "metadata", "metadata_*.parquet"), _METADATA_NAME)
    if not npys:
        raise PrecomputedLayoutError(f"{directory}: no img_emb/img_emb_N.npy files")
    for token in sorted(set(npys) ^ set(metas), key=int):
        if token in npys:
            raise PrecomputedLayoutError(
                f"shard {token}: img_emb/img_emb_{token}.npy has no metadata/metadata_{token}.parquet")
        raise PrecomputedLayoutError(
            f"shard {token}: metadata/metadata_{token}.parquet has no img_emb/img_emb_{token}.npy")
    numbers: dict[int, str] = {}
    for token in npys:
        if int(token) in numbers:
            raise PrecomputedLayoutError(f"shard {int(token)}: named twice ({numbers[int(token)]} and {token})")
        numbers[int(token)] = token
    shards = [PrecomputedShard(n, npys[numbers[n]], metas[numbers[n]]) for n in sorted(numbers)]
    if check_rows:
        for shard in shards:
            check_shard(shard)
    return shards


def shard_position(row_id: str) -> tuple[str, int]:
    """('N' as written in metadata_N.parquet, row position) from a read-stage row id."""
    source, sep, position = str(row_id).rpartition(":")
    parsed = _METADATA_NAME.match(posixpath.basename(source)) if sep else None
    if parsed is None or not position.isdigit():
        raise PrecomputedLayoutError(
            f"row id '{row_id}' is not '<metadata_N.parquet>:<position>'; precomputed "
            f"embeddings need the read stage's positional row ids (dataset.id_col: null)"
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


def attach_precomputed(records: Sequence[dict], embeddings: Any, model_id: str = "precomputed") -> list[dict]:
    """Copies of ``records`` (all from one metadata shard) with their published vectors.

    ``embeddings`` is that shard's img_emb array (a memmap, an array or NpyRows): the
    vector of row id ``metadata_N.parquet:P`` is its row P, read as float32 and
    normalised to unit length.
    """
    if not records:
        return []
    positions = np.array([shard_position(r["row_id"])[1] for r in records], dtype=np.int64)
    rows = embeddings.shape[0]
    if positions.max() >= rows:
        bad = records[int(np.argmax(positions))]["row_id"]
        raise PrecomputedLayoutError(f"row id '{bad}': the shard's embeddings have only {rows} rows")
    vectors = np.asarray(embeddings[positions], dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    out = []
    for record, vector in zip(records, vectors):
        item = dict(record)
        item.pop("_image", None)
        item["_embedding"] = vector
        item["model"] = model_id
        out.append(item)
    return out


class _AttachPrecomputed(beam.DoFn):
    def __init__(self, shards: dict[str, PrecomputedShard], model_id: str) -> None:
        self._shards = shards
        self._model_id = model_id
        self._attached = Metrics.counter("embed", "rows_precomputed")
        self._open: dict[str, NpyRows] = {}

    def setup(self) -> None:
        self._open = {}

    def _rows_of(self, token: str) -> NpyRows:
        rows = self._open.get(token)
        if rows is None:
            shard = self._shards.get(token)
            if shard is None:
                raise PrecomputedLayoutError(f"metadata_{token}.parquet has no shard in the embeddings directory")
            check_shard(shard)
            rows = self._open[token] = NpyRows(shard.npy_path)
        return rows

    def process(self, batch: Sequence[dict]) -> Iterator[dict]:
        by_shard: dict[str, list[dict]] = {}
        for record in batch:
            by_shard.setdefault(shard_position(record["row_id"])[0], []).append(record)
        for token, records in by_shard.items():
            for record in attach_precomputed(records, self._rows_of(token), self._model_id):
                self._attached.inc()
                yield record

    def teardown(self) -> None:
        for rows in self._open.values():
            rows.close()
        self._open = {}


class AttachPrecomputedEmbeddings(beam.PTransform):
    """Records read from ``DIR/metadata/*.parquet`` gain their published ``_embedding``.

    Every record of a listed shard gets its vector, whatever its fetch status: the
    embedding describes the image as the dataset captured it. For remote directories
    apply it straight after the read (before any Reshuffle), where records still come
    in file order and ranged reads stay sequential.
    """

    def __init__(self, directory: str, model_name: str = "ViT-L-14", check_rows: bool = True,
                 batch_size: int = 1024, label: str | None = None) -> None:
        super().__init__(label)
        shards = precomputed_shards(directory, check_rows=check_rows)
        # Keyed the way row ids spell the shard (padding included: metadata_0007.parquet).
        self._shards = {
            _METADATA_NAME.match(posixpath.basename(s.parquet_path)).group(1): s for s in shards
        }
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
    "attach_precomputed",
    "check_shard",
    "npy_header",
    "parquet_rows",
    "precomputed_shards",
    "shard_position",
]
