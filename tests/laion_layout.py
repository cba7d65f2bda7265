"""Test helper: LAION's published layout (``metadata/metadata_N.parquet`` with
``img_emb/img_emb_N.npy``) written from tables and embedding arrays, and tables with the
column names LAION's files really have."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.precomputed import PrecomputedShard

# The metadata parquet beside LAION's published embeddings (img2dataset's output columns
# plus LAION's own): lowercase url / caption / key, and img2dataset's md5 of the bytes.
LAION_EMBEDDING_METADATA_COLUMNS = (
    "image_path", "caption", "NSFW", "similarity", "LICENSE", "url", "key", "status",
    "error_message", "width", "height", "original_width", "original_height", "exif", "md5",
)
# The LAION-5B metadata parquet (laion2B-en, laion2B-multi, laion1B-nolang): the columns
# every subset's release has; some laion2B-en releases add SAMPLE_ID and hash.
LAION5B_METADATA_COLUMNS = ("URL", "TEXT", "WIDTH", "HEIGHT", "similarity", "punsafe", "pwatermark")


def img2dataset_key(shard: int, index: int) -> str:
    """img2dataset's row key: shard and index in shard, zero-padded (5 + 4 digits here).
    Each subset was downloaded on its own, so the same keys occur in every subset."""
    return f"{shard:05d}{index:04d}"


def laion_embedding_metadata(urls: list, shard: int = 0, captions: list | None = None,
                             md5s: list | None = None) -> pa.Table:
    """A metadata_N.parquet table with exactly LAION's embedding-metadata columns."""
    n = len(urls)
    captions = captions if captions is not None else [f"caption {shard}/{i}" for i in range(n)]
    keys = [img2dataset_key(shard, i) for i in range(n)]
    md5s = md5s if md5s is not None else [hashlib.md5(f"{shard}/{i}".encode()).hexdigest() for i in range(n)]
    columns = {
        "image_path": pa.array([f"{k[:5]}/{k}.jpg" for k in keys], pa.string()),
        "caption": pa.array(captions, pa.string()),
        "NSFW": pa.array(["UNLIKELY"] * n, pa.string()),
        "similarity": pa.array([0.31] * n, pa.float64()),
        "LICENSE": pa.array(["?"] * n, pa.string()),
        "url": pa.array(urls, pa.string()),
        "key": pa.array(keys, pa.string()),
        "status": pa.array(["success"] * n, pa.string()),
        "error_message": pa.array([None] * n, pa.string()),
        "width": pa.array([224] * n, pa.int64()),
        "height": pa.array([224] * n, pa.int64()),
        "original_width": pa.array([640] * n, pa.int64()),
        "original_height": pa.array([480] * n, pa.int64()),
        "exif": pa.array(["{}"] * n, pa.string()),
        "md5": pa.array(md5s, pa.string()),
    }
    assert tuple(columns) == LAION_EMBEDDING_METADATA_COLUMNS
    return pa.table(columns)


def write_laion_layout(directory: str | Path, shards: Iterable[tuple[pa.Table, np.ndarray]],
                       zero_padded: bool = False) -> list[PrecomputedShard]:
    """Write tables and embeddings as LAION publishes them (tests). ``zero_padded``:
    shard numbers written as LAION's files are (``img_emb_0000.npy``,
    ``metadata_0000.parquet``) instead of bare (``img_emb_0.npy``)."""
    root = Path(directory)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    written = []
    for number, (table, embeddings) in enumerate(shards):
        token = f"{number:04d}" if zero_padded else str(number)
        parquet_path = root / "metadata" / f"metadata_{token}.parquet"
        npy_path = root / "img_emb" / f"img_emb_{token}.npy"
        pq.write_table(table, parquet_path)
        np.save(npy_path, np.ascontiguousarray(embeddings))
        written.append(PrecomputedShard(number, str(npy_path), str(parquet_path)))
    return written
