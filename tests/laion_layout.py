"""Test helper: LAION's published layout (``metadata/metadata_N.parquet`` with
``img_emb/img_emb_N.npy``) written from tables and embedding arrays."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.precomputed import PrecomputedShard


def write_laion_layout(directory: str | Path, shards: Iterable[tuple[pa.Table, np.ndarray]]) -> list[PrecomputedShard]:
    """Write tables and embeddings as LAION publishes them (tests)."""
    root = Path(directory)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    written = []
    for number, (table, embeddings) in enumerate(shards):
        parquet_path = root / "metadata" / f"metadata_{number}.parquet"
        npy_path = root / "img_emb" / f"img_emb_{number}.npy"
        pq.write_table(table, parquet_path)
        np.save(npy_path, np.ascontiguousarray(embeddings))
        written.append(PrecomputedShard(number, str(npy_path), str(parquet_path)))
    return written
