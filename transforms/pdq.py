"""PDQ (Meta's 256-bit perceptual hash), its reference steps as numpy operations.

The reference hasher (ThreatExchange ``pdq/cpp/hashing/pdqhashing.cpp``, which the
``pdqhash`` wheel and python-threatexchange wrap) blurs the luma with a Jarosz filter
(two passes of a box filter along each axis, window ``ceil(n / 128)``, edge windows
truncated), samples 64 x 64 pixel centres, takes a 16 x 16 DCT (frequencies 1..16) and
sets each bit where a coefficient exceeds the median. Every step before the median is
linear, so the blur and the sampling along each axis are one 64 x n matrix
(``jarosz_rows``), which ``transforms/hash_resample.py`` folds with the rest of the way
from decoded samples. On the same plane the bits equal the reference's up to float
rounding of coefficients that sit on the median (tests/test_hash_compat.py checks it).

Bit order follows python-threatexchange: bit ``i * 16 + j`` of the 16 x 16 block is bit
``i * 16 + j`` of a 256-bit number written as 64 hex digits, most significant first.
"""
from __future__ import annotations

import os

import numpy as np

# The reference hashes nothing smaller than this on either side (all-zero hash, quality 0).
MIN_HASHABLE_DIM = 5
_SIDE = 64
_JAROSZ_PASSES = 2

# The reference's DCT rows: frequencies 1..16 (the DC term is skipped) over 64 samples.
_DCT_16x64 = (
    np.sqrt(2.0 / 64)
    * np.cos((np.pi / 2.0 / 64) * np.outer(np.arange(1, 17), 2 * np.arange(64) + 1))
).astype(np.float32)

# The dihedral variants from the 16 x 16 DCT block (the reference's dct16OriginalTo*):
# (sign pattern as a function of row i, column j; whether the block is transposed).
_I, _J = np.mgrid[0:16, 0:16]
_ODD_I, _ODD_J, _ODD_IJ = (_I & 1).astype(bool), (_J & 1).astype(bool), ((_I + _J) & 1).astype(bool)
_DIHEDRAL = (
    ("original", None, False),
    ("rot90", ~_ODD_J, True),
    ("rot180", _ODD_IJ, False),
    ("rot270", ~_ODD_I, True),
    ("flipx", ~_ODD_I, False),
    ("flipy", ~_ODD_J, False),
    ("flip_plus1", None, True),
    ("flip_minus1", _ODD_IJ, True),
)
DIHEDRAL_NAMES = tuple(name for name, _, _ in _DIHEDRAL)  # pdqhash's order


_BLAS_LIMITED = False


def limit_blas_threads() -> None:
    """Run numpy's own BLAS single-threaded in this process (once; later calls no-op).

    The hash products are a few million multiply-adds each: OpenBLAS would split them
    over every core and spin its threads between calls, costing more CPU than the work
    (8.8 ms for a 0.2 ms product on a busy 2-core machine). Audit workers already run
    one per core. Only numpy's library is touched (torch and faiss keep their threads);
    without threadpoolctl this does nothing."""
    global _BLAS_LIMITED
    if _BLAS_LIMITED:
        return
    _BLAS_LIMITED = True
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return
    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and os.path.abspath(lib.filepath).startswith(numpy_dir + os.sep + "numpy"):
            lib.set_num_threads(1)


def jarosz_window(old: int, new: int = _SIDE) -> int:
    """The reference's box window for reducing ``old`` samples towards ``new``."""
    return (old + 2 * new - 1) // (2 * new)


def _box_transposed(rows: np.ndarray, window: int) -> np.ndarray:
    """``rows @ A`` for the reference's 1-D box filter A (box1DFloat) of this window.

    Output i of A is the mean of inputs i - a .. i + b that exist (a = window - half,
    b = half - 1, half = (window + 2) // 2), so column j of ``rows @ A`` sums
    ``rows[:, i] / count_i`` over i = j - b .. j + a: one cumulative sum, no n x n matrix."""
    n = rows.shape[1]
    half = (window + 2) // 2
    a, b = window - half, half - 1
    idx = np.arange(n)
    count = np.minimum(idx + b, n - 1) - np.maximum(idx - a, 0) + 1
    sums = np.zeros((rows.shape[0], n + 1))
    np.cumsum(rows / count, axis=1, out=sums[:, 1:])
    return sums[:, np.minimum(idx + a, n - 1) + 1] - sums[:, np.maximum(idx - b, 0)]


def jarosz_rows(n: int) -> np.ndarray:
    """64 x n float64: the reference's Jarosz blur along an axis of length n (two box
    passes) followed by its decimation to 64 pixel centres (``int((k + 0.5) * n / 64)``):
    row k holds the weights of sample k."""
    picks = ((np.arange(_SIDE) + 0.5) * n / _SIDE).astype(np.int64)
    rows = np.zeros((_SIDE, n))
    rows[np.arange(_SIDE), picks] = 1.0
    window = jarosz_window(n)
    if window > 1:
        for _ in range(_JAROSZ_PASSES):
            rows = _box_transposed(rows, window)
    return rows


def quality_of_block(block: np.ndarray) -> int:
    """The reference's quality metric (0..100) on the 64 x 64 block: the sum of
    truncated vertical and horizontal gradients in percent of full scale, over 90."""
    b = block.astype(np.float32, copy=False)
    hundred, full = np.float32(100), np.float32(255)
    down = ((b[:-1, :] - b[1:, :]) * hundred / full).astype(np.int32)
    across = ((b[:, :-1] - b[:, 1:]) * hundred / full).astype(np.int32)
    total = int(np.abs(down).sum()) + int(np.abs(across).sum())
    return min(total // 90, 100)


def dct16(block: np.ndarray) -> np.ndarray:
    """The reference's 16 x 16 DCT (frequencies 1..16) of a 64 x 64 block."""
    return _DCT_16x64 @ block @ _DCT_16x64.T


def bits_of_dct(dct: np.ndarray) -> str:
    """The hash of a 16 x 16 DCT block: bits above the median, as 64 hex digits."""
    flat = dct.reshape(-1)
    # torben's median over 256 values is the 128th smallest.
    median = np.partition(flat, 127)[127]
    bits = flat > median
    # Bit k = i*16+j is the k-th least significant: reversed, element 0 is the top bit.
    return np.packbits(bits[::-1]).tobytes().hex()


ZERO_HASH = "0" * 64


def dihedral_of_dct(dct: np.ndarray, quality: int) -> list[tuple[str, str, int]]:
    """The eight rotations and flips of the image whose DCT block is ``dct``, read off
    the block's signs and transpose: (name, hex, quality) in the reference's order."""
    out = []
    for name, negate, transpose in _DIHEDRAL:
        variant = np.where(negate, -dct, dct) if negate is not None else dct
        out.append((name, bits_of_dct(variant.T if transpose else variant), quality))
    return out


__all__ = ["DIHEDRAL_NAMES", "MIN_HASHABLE_DIM", "ZERO_HASH", "bits_of_dct", "dct16", "dihedral_of_dct", "jarosz_rows",
           "jarosz_window", "limit_blas_threads", "quality_of_block"]
