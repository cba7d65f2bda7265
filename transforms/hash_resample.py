"""PDQ and pHash of an image from its decoded luminance plane, at any decode scale.

What the hashes are defined on (the reference path, as tests/test_hash_compat.py runs
it): the image's luma at full resolution, box-resampled (Pillow's BOX) to a copy whose
long side is at most ``HASH_MAX_SIDE``; PDQ is the reference hasher on that copy, pHash
is imagehash's (Lanczos to 32 x 32, DCT). Every step up to the two small grids the
hashes threshold (PDQ's 64 x 64 block, pHash's 32 x 32) is linear and separable, so
each axis is one matrix from the decoded samples to those grids:

    decoded samples -> full-resolution pixels -> the box copy -> Jarosz blur + decimate
                                                             \\-> Lanczos to 32

A JPEG decoded at 1/s scale (libjpeg's DCT scaling) has samples that are close to the
mean of s x s full-resolution pixels, so each sample's weight is the sum of the weights
of the pixels it stands for. The plane therefore never needs to be as large as the box
copy, nor is the copy ever made: hashing is one matrix product over the plane (96
outputs per row: 64 for PDQ, 32 for pHash) and three small ones. At scale 1 the
result equals the reference's up to float rounding (the box copy's 8-bit rounding is
not modelled); at reduced scales it is within a few bits (pinned by the tests).
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from transforms.pdq import (
    DIHEDRAL_NAMES,
    MIN_HASHABLE_DIM,
    ZERO_HASH,
    bits_of_dct,
    dct16,
    dihedral_of_dct,
    jarosz_rows,
    limit_blas_threads,
    quality_of_block,
)

HASH_MAX_SIDE = 512
_PDQ_SIDE = 64
# A plane side beyond this is box-copied by Pillow first: an operator is 96 floats per
# sample of its axis, so a 2,000,000 x 1 PNG (under the pixel cap) would need gigabytes.
OPERATOR_MAX_SIDE = 4 * HASH_MAX_SIDE
_PHASH_SIDE = 32  # imagehash's hash_size (8) * highfreq_factor (4)
_PHASH_BITS_SIDE = 8
_SCALES = (8, 4, 2, 1)

# scipy.fftpack.dct type II, unnormalised, rows k < 8: 2 * cos(pi k (2n + 1) / 2N).
_DCT_8x32 = 2.0 * np.cos(
    np.pi * np.outer(np.arange(_PHASH_BITS_SIDE), 2 * np.arange(_PHASH_SIDE) + 1) / (2 * _PHASH_SIDE)
)


def copy_size(width: int, height: int, max_side: int = HASH_MAX_SIDE) -> tuple[int, int]:
    """The box copy's size: long side at most ``max_side``, each side rounded, aspect kept."""
    if max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _pillow_weights(n_in: int, n_out: int, support: float, kernel) -> np.ndarray:
    """n_out x n_in: Pillow's resample coefficients (precompute_coeffs, before its
    fixed-point rounding) for a filter of this support and kernel."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    reach = support * filterscale
    centre = (np.arange(n_out) + 0.5) * scale
    lo = np.maximum((centre - reach + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + reach + 0.5).astype(np.int64), n_in)
    x = np.arange(n_in)
    inside = (x[None, :] >= lo[:, None]) & (x[None, :] < hi[:, None])
    w = np.where(inside, kernel((x[None, :] - centre[:, None] + 0.5) * (1.0 / filterscale)), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return w / np.where(total == 0, 1.0, total)


def _lanczos_kernel(t: np.ndarray) -> np.ndarray:
    return np.where((t >= -3.0) & (t < 3.0), np.sinc(t) * np.sinc(t / 3.0), 0.0)


def _box_runs(n_full: int, n_copy: int) -> tuple[np.ndarray, np.ndarray]:
    """[first, last) of the full-resolution pixels each BOX copy sample averages: Pillow's
    window, and its kernel test in its own float arithmetic (ties fall as in Pillow)."""
    scale = n_full / n_copy
    filterscale = max(scale, 1.0)
    reach = 0.5 * filterscale
    centre = (np.arange(n_copy) + 0.5) * scale
    lo = np.maximum((centre - reach + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + reach + 0.5).astype(np.int64), n_full)
    width = int(np.ceil(reach)) * 2 + 1
    x = lo[:, None] + np.arange(width)[None, :]
    t = (x - centre[:, None] + 0.5) * (1.0 / filterscale)
    covered = (x < hi[:, None]) & (t > -0.5) & (t <= 0.5)
    first = lo + covered.argmax(axis=1)
    last = lo + width - covered[:, ::-1].argmax(axis=1)
    return first, np.maximum(last, first + 1)


def _box_owners(n_full: int, n_copy: int) -> tuple[np.ndarray, np.ndarray]:
    """For each full-resolution pixel: the BOX copy sample whose run holds it, and the
    weight it takes in that sample (1 / run length; 0 for a pixel no run holds). A
    downscaling box copy's runs tile the axis, so carrying weights on the copy's samples
    back to the pixels is a gather, no product."""
    first, last = _box_runs(n_full, n_copy)
    pixel = np.arange(n_full)
    owner = np.clip(np.searchsorted(first, pixel, side="right") - 1, 0, n_copy - 1)
    inside = (pixel >= first[owner]) & (pixel < last[owner])
    return owner, inside / (last - first)[owner]


@functools.lru_cache(maxsize=128)
def _copy_rows_t(n_copy: int) -> np.ndarray:
    """n_copy x 96 float32 (at most 25 MB for the whole cache), read-only: PDQ's 64 blur-and-sample rows and pHash's 32 Lanczos rows
    on the box copy's samples, transposed. Depends on the copy's length alone (at most
    HASH_MAX_SIDE + 1 values), so it is shared by every full length that copies to it."""
    pdq = jarosz_rows(n_copy)
    phash = _pillow_weights(n_copy, _PHASH_SIDE, 3.0, _lanczos_kernel)
    out = np.ascontiguousarray(np.vstack([pdq, phash]).T, dtype=np.float32)
    out.setflags(write=False)
    return out


def _operator(n_full: int, n_copy: int, scale: int) -> np.ndarray:
    rows_t = _copy_rows_t(n_copy)
    if n_copy == n_full:
        per_pixel = rows_t
    else:
        owner, weight = _box_owners(n_full, n_copy)
        per_pixel = rows_t[owner] * weight[:, None]  # n_full x 96 float64: weights on the pixels
    if scale > 1:
        # A 1/scale decode's sample stands for `scale` consecutive pixels: their
        # weights summed (the last sample may stand for fewer).
        n_decoded = -(-n_full // scale)
        padded = np.zeros((n_decoded * scale, per_pixel.shape[1]))
        padded[:n_full] = per_pixel
        per_pixel = padded.reshape(n_decoded, scale, -1).sum(axis=1)
    out = np.ascontiguousarray(per_pixel.T, dtype=np.float32)
    out.setflags(write=False)
    return out


class _OperatorCache:
    """The axis operators, least recently used first out, bounded by their bytes (not a
    count: a 2,048-sample operator weighs eight times a 256-sample one). Web images come
    in a few hundred sizes, so most lookups hit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[tuple[int, int, int], np.ndarray] = {}
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, key: tuple[int, int, int]) -> np.ndarray:
        found = self._entries.pop(key, None)
        if found is not None:
            self.hits += 1
            self._entries[key] = found  # dicts keep insertion order: now the newest
            return found
        self.misses += 1
        made = _operator(*key)
        self._entries[key] = made
        self._bytes += made.nbytes
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            self._bytes -= self._entries.pop(oldest).nbytes
        return made

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self.hits = self.misses = 0


# 32 MB: some 250 operators of a typical 300-sample axis; at worst 40 of OPERATOR_MAX_SIDE.
OPERATOR_CACHE_BYTES = 32 * 2**20
_OPERATORS = _OperatorCache(OPERATOR_CACHE_BYTES)


def axis_operator(n_full: int, n_copy: int, scale: int) -> np.ndarray:
    """96 x ceil(n_full / scale) float32 for one axis of full length ``n_full`` whose box
    copy has ``n_copy`` samples: rows 0..63 give PDQ's 64 samples, rows 64..95 pHash's
    32, from the samples of a 1/scale decode. Read-only; cached (OPERATOR_CACHE_BYTES,
    least recently used out), a miss costs about half a millisecond."""
    return _OPERATORS.get((n_full, n_copy, scale))


def decode_scale(full: int, decoded: int) -> int:
    """The DCT scale (1, 2, 4 or 8) that turned ``full`` samples into ``decoded``;
    1 when none does (the plane is then taken as full resolution)."""
    for s in _SCALES:
        if -(-full // s) == decoded:
            return s
    return 1


def perceptual_hashes(plane: np.ndarray, full_width: int, full_height: int) -> tuple[str, int, str, np.ndarray | None]:
    """PDQ (hex, quality) and pHash (hex) of an image whose luma, decoded at some DCT
    scale, is ``plane`` (2-D, rows x cols) and whose full size is full_width x full_height
    (as displayed). Also returns the PDQ DCT block (None for an unhashable size), from
    which ``pdq_dihedral`` reads the rotations."""
    if plane.ndim != 2:
        raise ValueError(f"a luminance plane is 2-D, got shape {plane.shape}")
    rows, cols = plane.shape
    limit_blas_threads()
    copy_w, copy_h = copy_size(full_width, full_height)
    if max(rows, cols) > OPERATOR_MAX_SIDE:
        # The reference's own path: the box copy made by Pillow (memory in proportion to
        # the pixels), then hashed as a full-size image of the copy's size.
        pixels = np.clip(np.rint(plane), 0, 255).astype(np.uint8) if plane.dtype != np.uint8 else plane
        copy = np.asarray(Image.fromarray(pixels, "L").resize((copy_w, copy_h), Image.Resampling.BOX))
        return perceptual_hashes(copy, copy_w, copy_h)
    op_w = axis_operator(full_width, copy_w, decode_scale(full_width, cols))
    op_h = axis_operator(full_height, copy_h, decode_scale(full_height, rows))
    if op_w.shape[1] != cols or op_h.shape[1] != rows:
        raise ValueError(f"a {cols}x{rows} plane is no DCT-scaled decode of {full_width}x{full_height}")
    across = plane.astype(np.float32, copy=False) @ op_w.T  # rows x 96

    small = op_h[_PDQ_SIDE:] @ across[:, _PDQ_SIDE:]  # 32 x 32, as Pillow would round it
    small = np.clip(np.rint(small), 0, 255).astype(np.float64)
    low = _DCT_8x32 @ small @ _DCT_8x32.T
    flat = low.reshape(-1)
    middle = np.partition(flat, (31, 32))  # imagehash's numpy.median of the 64, without its overhead
    phash = np.packbits(flat > (middle[31] + middle[32]) / 2).tobytes().hex()

    if min(copy_w, copy_h) < MIN_HASHABLE_DIM:
        return ZERO_HASH, 0, phash, None
    block = op_h[:_PDQ_SIDE] @ across[:, :_PDQ_SIDE]
    dct = dct16(block)
    return bits_of_dct(dct), quality_of_block(block), phash, dct


def pdq_dihedral(dct: np.ndarray | None, quality: int) -> list[tuple[str, str, int]]:
    """The eight PDQ variants from ``perceptual_hashes``' DCT block."""
    if dct is None:
        return [(name, ZERO_HASH, 0) for name in DIHEDRAL_NAMES]
    return dihedral_of_dct(dct, quality)


__all__ = ["HASH_MAX_SIDE", "axis_operator", "copy_size", "decode_scale", "pdq_dihedral",
           "perceptual_hashes"]
