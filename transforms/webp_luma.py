"""A lossy WebP's luma read straight from its Y plane, through libwebp's own decoder.

A lossy WebP is stored as VP8 YUV 4:2:0. Pillow decodes it to RGB (chroma upsampled,
colour converted), and the hashes then take the luma of that RGB. libwebp can stop at
the Y plane (``WebPDecodeYUVInto``), which skips the upsampling and the conversion:
about half the decode. VP8's Y is BT.601 studio range, ``16 + 219/255 x`` the
0.299 R + 0.587 G + 0.114 B luma the hashes read, so one table maps it back (within
rounding of Pillow's "L" of the decoded RGB; saturated colours, which the RGB clips,
differ by a little more).

libwebp is the copy Pillow itself links (its wheel's ``pillow.libs``, else the system's
libwebp), loaded with ctypes: no native build. Where none loads, or for a WebP this does
not cover (lossless, alpha, animation), ``webp_luma`` returns None and the caller
decodes with Pillow.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os

import numpy as np

_U8P = ctypes.c_void_p
_INT_P = ctypes.POINTER(ctypes.c_int)

# Studio-range Y (16..235) -> full-range luma, rounded, clipped: libwebp's own YUV -> RGB
# gain is 19077 / 2**14 (= 255 / 219 to five digits).
_Y_TO_LUMA = np.clip(np.rint((np.arange(256) - 16.0) * (255.0 / 219.0)), 0, 255).astype(np.uint8)

# RIFF/WebP chunk flags of VP8X (the extended header): alpha, animation.
_VP8X_ALPHA = 0x10
_VP8X_ANIMATION = 0x02

_LIB: ctypes.CDLL | None = None
_LOADED = False


def _candidates() -> list[str]:
    paths = []
    try:
        import PIL

        libs = os.path.join(os.path.dirname(os.path.dirname(PIL.__file__)), "pillow.libs")
        paths += sorted(glob.glob(os.path.join(libs, "libwebp-*.so*")))  # the copy Pillow's wheel ships
    except ImportError:  # pragma: no cover - Pillow is a dependency
        pass
    found = ctypes.util.find_library("webp")
    if found:
        paths.append(found)
    return paths


def _library() -> ctypes.CDLL | None:
    """libwebp with the two functions this uses, loaded once; None when none loads."""
    global _LIB, _LOADED
    if _LOADED:
        return _LIB
    _LOADED = True
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            info, decode = lib.WebPGetInfo, lib.WebPDecodeYUVInto
        except (OSError, AttributeError):
            continue
        info.argtypes = [ctypes.c_char_p, ctypes.c_size_t, _INT_P, _INT_P]
        info.restype = ctypes.c_int
        decode.argtypes = [ctypes.c_char_p, ctypes.c_size_t,
                           _U8P, ctypes.c_size_t, ctypes.c_int,
                           _U8P, ctypes.c_size_t, ctypes.c_int,
                           _U8P, ctypes.c_size_t, ctypes.c_int]
        decode.restype = ctypes.c_void_p
        _LIB = lib
        break
    return _LIB


def available() -> bool:
    """Whether a libwebp could be loaded (else every WebP goes through Pillow)."""
    return _library() is not None


def is_plain_lossy(data: bytes) -> bool:
    """A still, opaque, lossy WebP: a RIFF "WEBP" whose image is one "VP8 " chunk, with no
    alpha and no animation (a VP8X header may carry EXIF / ICC / XMP beside it)."""
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    first = data[12:16]
    if first == b"VP8 ":
        return True
    if first != b"VP8X" or len(data) < 21:
        return False
    if data[20] & (_VP8X_ALPHA | _VP8X_ANIMATION):
        return False
    pos = 12
    while pos + 8 <= len(data):  # the chunks after VP8X: the image must be VP8, not VP8L
        tag = data[pos:pos + 4]
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag in (b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF"):
            return tag == b"VP8 "
        pos += 8 + size + (size & 1)
    return False


def webp_luma(data: bytes) -> np.ndarray | None:
    """The full-range luma plane (rows x cols uint8, as stored: no EXIF turn) of a plain
    lossy WebP, from its Y plane; None when this path does not apply or libwebp refuses
    the data (the caller then decodes with Pillow, which reports what is wrong)."""
    if not is_plain_lossy(data):
        return None
    lib = _library()
    if lib is None:
        return None
    width, height = ctypes.c_int(), ctypes.c_int()
    if not lib.WebPGetInfo(data, len(data), ctypes.byref(width), ctypes.byref(height)):
        return None
    w, h = width.value, height.value
    if w <= 0 or h <= 0:
        return None
    cw, ch = (w + 1) // 2, (h + 1) // 2
    y = np.empty((h, w), np.uint8)
    u = np.empty((ch, cw), np.uint8)  # libwebp writes the chroma too; it is not read
    v = np.empty((ch, cw), np.uint8)
    done = lib.WebPDecodeYUVInto(data, len(data), y.ctypes.data, y.nbytes, w,
                                 u.ctypes.data, u.nbytes, cw, v.ctypes.data, v.nbytes, cw)
    if not done:
        return None
    return _Y_TO_LUMA[y]


__all__ = ["available", "is_plain_lossy", "webp_luma"]
