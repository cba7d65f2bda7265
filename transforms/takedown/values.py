"""How list values are written, and read column-wise: hex digests and embeddings.

Hex hashes are lowercase hex; a perceptual hash's bits are one big-endian number (PDQ:
64 hex digits as python-threatexchange writes them; pHash: 16). A clip value is base64
of little-endian float32, L2-normalised. ``hex_codes`` and ``unit_rows`` turn a whole
column of cells into what the indexes search (packed codes, unit vectors), skipping
missing and malformed cells; the usual batch (every cell a well-formed hash) is decoded
in one call. Error messages say what is wrong with a value, never the value.
"""
from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX_DIGITS = re.compile(r"[0-9a-f]*")


# ------------------------------------------------------------------------ hex helpers


def normalize_hex(value: str, digits: int, what: str) -> str:
    """Lowercase hex of exactly ``digits`` digits, or ValueError naming ``what``."""
    if not isinstance(value, str):
        raise ValueError(f"{what} value must be a string of {digits} hex digits, "
                         f"got {type(value).__name__}")
    text = value.strip().lower()
    if len(text) != digits:
        raise ValueError(f"{what} value must be {digits} hex digits, got {len(text)} characters")
    if not _HEX_DIGITS.fullmatch(text):
        raise ValueError(f"{what} value must be {digits} hex digits, found non-hex characters")
    return text


def hamming_hex(a: str, b: str) -> int:
    """Number of differing bits between two equal-length hex strings."""
    if len(a) != len(b):
        raise ValueError(f"cannot compare hashes of different lengths ({len(a)} and {len(b)} hex digits)")
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hex_to_bits_uint8(value: str | Sequence[str]) -> np.ndarray:
    """Hex hash(es) as packed bytes, big-endian: the layout faiss binary indexes take.

    One string gives shape (n_bytes,), a sequence of strings gives (count, n_bytes).
    faiss's Hamming distance on these rows equals ``hamming_hex`` on the strings.
    """
    if isinstance(value, str):
        return np.frombuffer(bytes.fromhex(value), dtype=np.uint8).copy()
    rows = [bytes.fromhex(v) for v in value]
    if not rows:
        return np.zeros((0, 0), dtype=np.uint8)
    if len({len(r) for r in rows}) != 1:
        raise ValueError("all hashes must have the same length")
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1).copy()


def hex_codes(values: Sequence[Any] | pa.Array | pa.ChunkedArray, nbytes: int,
              exact: bool = False, strip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(positions, uint8 codes) of the values that are hex hashes of ``nbytes`` bytes.
    ``bytes.fromhex`` skips blanks between bytes; ``exact``: a value must also be
    exactly ``2 * nbytes`` characters, so a digest with a blank inside is none (as an
    exact string comparison has it); ``strip``: blanks around a value go first (an
    exact kind's rows, compared as a list value is, stripped and in either case). An
    Arrow column's well-formed cells are decoded in bulk, the few others (not nulls) as
    the same cells in a list would be."""
    width = 2 * nbytes
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        ok, codes = parse_hex_column(values, width)
        positions = np.flatnonzero(ok)
        others = np.flatnonzero(~ok & values.is_valid().to_numpy(zero_copy_only=False))
        if others.size:
            rows, more = hex_codes(values.take(pa.array(others)).to_pylist(), nbytes, exact, strip)
            positions, codes = np.concatenate([positions, others[rows]]), np.concatenate([codes, more])
        return positions.astype(np.int64), codes
    if strip:
        values = [v.strip() if isinstance(v, str) else v for v in values]
    if values and all(isinstance(v, str) and len(v) == width for v in values):
        try:  # the usual batch: every row hashed; one decode for all of them
            blob = bytes.fromhex("".join(values))
        except ValueError:
            blob = b""
        if len(blob) == nbytes * len(values):  # fromhex skips blanks: lengths must agree
            return (np.arange(len(values), dtype=np.int64),
                    np.frombuffer(blob, dtype=np.uint8).reshape(len(values), nbytes))
    rows: list[int] = []
    blobs: list[bytes] = []
    for i, value in enumerate(values):
        if not value or not isinstance(value, str) or (exact and len(value) != width):
            continue
        try:
            blob = bytes.fromhex(value)
        except ValueError:
            continue
        if len(blob) == nbytes:
            rows.append(i)
            blobs.append(blob)
    codes = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), nbytes)
    return np.asarray(rows, dtype=np.int64), codes


def _string_bytes(values: pa.Array) -> memoryview:
    """The character bytes of a string array without nulls, all values back to back."""
    width = 8 if pa.types.is_large_string(values.type) else 4
    _, offsets, data = values.buffers()
    bounds = np.frombuffer(offsets, dtype=np.int32 if width == 4 else np.int64,
                           count=len(values) + 1, offset=values.offset * width)
    return memoryview(data)[int(bounds[0]):int(bounds[-1])]


def parse_hex_column(values: pa.Array, digits: int) -> tuple[np.ndarray, np.ndarray]:
    """List cells of a hex kind in bulk: (ok, codes). ``ok[i]`` when cell i is a string
    of exactly ``digits`` hex digits (either case, nothing around them), which
    ``normalize_hex`` takes as it is; ``codes`` are the ok cells' bytes, (ok cells,
    digits / 2) uint8. Other cells (blanks around a hash, wrong length, not text) are
    left to ``normalize_hex``, one by one, which says what is wrong or normalises them."""
    nbytes = digits // 2
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) or digits % 2:
        return np.zeros(len(values), dtype=bool), np.zeros((0, nbytes), dtype=np.uint8)
    if not values.null_count and len(values):
        width = 8 if pa.types.is_large_string(values.type) else 4
        bounds = np.frombuffer(values.buffers()[1], dtype=np.int32 if width == 4 else np.int64,
                               count=len(values) + 1, offset=values.offset * width)
        if (np.diff(bounds) == digits).all():  # the usual column: one decode, which checks the digits
            try:
                codes = np.frombuffer(binascii.unhexlify(_string_bytes(values)), dtype=np.uint8)
            except binascii.Error:
                pass
            else:
                return np.ones(len(values), dtype=bool), codes.reshape(len(values), nbytes)
    matched = pc.match_substring_regex(values, f"^[0-9a-fA-F]{{{digits}}}$")
    ok = matched.fill_null(False).to_numpy(zero_copy_only=False)
    if not ok.all():
        values = values.filter(pa.array(ok))
    if not len(values):
        return ok, np.zeros((0, nbytes), dtype=np.uint8)
    codes = np.frombuffer(binascii.unhexlify(_string_bytes(values)), dtype=np.uint8)
    return ok, codes.reshape(len(values), nbytes)


# ----------------------------------------------------------------------- embeddings


def _unit_vector(vec: Sequence[float] | np.ndarray) -> np.ndarray:
    """A finite, non-zero vector of >= 2 dimensions scaled to unit length, float32."""
    arr = np.asarray(vec, dtype=np.float64).reshape(-1)
    if arr.size < 2:
        raise ValueError("clip value must have at least 2 dimensions")
    if not np.all(np.isfinite(arr)):
        raise ValueError("clip value contains NaN or infinite numbers")
    norm = float(np.linalg.norm(arr))
    if norm == 0.0:
        raise ValueError("clip value is the zero vector")
    return (arr / norm).astype(np.float32)


def clip_to_value(vec: Sequence[float] | np.ndarray) -> str:
    """An embedding as a clip list value: L2-normalised float32 little-endian, base64."""
    return base64.b64encode(_unit_vector(vec).astype("<f4").tobytes()).decode("ascii")


def clip_from_value(value: str) -> np.ndarray:
    """A clip list value back to a float32 vector, L2-normalised."""
    if not isinstance(value, str):
        raise ValueError(f"clip value must be a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("clip value must be base64 of little-endian float32 numbers") from None
    if len(raw) % 4:
        raise ValueError(f"clip value decodes to {len(raw)} bytes, not a whole number of float32")
    return _unit_vector(np.frombuffer(raw, dtype="<f4"))


def as_unit_vector(value: str | Sequence[float] | np.ndarray) -> np.ndarray:
    return clip_from_value(value) if isinstance(value, str) else _unit_vector(value)


def unit_rows(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """(positions, float32 unit vectors) of the usable embeddings in a column."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        matrix = values.astype(np.float32, copy=False)
        rows = np.arange(len(matrix), dtype=np.int64)
    else:
        rows_list, vectors = [], []
        for i, value in enumerate(values):
            if value is None:
                continue
            vec = np.asarray(value, dtype=np.float32).reshape(-1)
            if vec.size:
                rows_list.append(i)
                vectors.append(vec)
        if not vectors:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        if len({v.size for v in vectors}) != 1:
            raise ValueError("embeddings in one batch have different dimensions")
        matrix = np.stack(vectors)
        rows = np.asarray(rows_list, dtype=np.int64)
    norms = np.linalg.norm(matrix, axis=1)
    usable = np.isfinite(norms) & (norms > 0)
    return rows[usable], np.ascontiguousarray(matrix[usable] / norms[usable, None], dtype=np.float32)


__all__ = [
    "as_unit_vector",
    "clip_from_value",
    "clip_to_value",
    "hamming_hex",
    "hex_codes",
    "hex_to_bits_uint8",
    "normalize_hex",
    "parse_hex_column",
    "unit_rows",
]
