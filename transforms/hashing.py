"""Decode + hash stage: turn fetched image bytes into content and perceptual hashes.

For every fetched body it computes MD5 and SHA-256 of the raw bytes (always, even when
the bytes do not decode), then decodes the image safely (pixel cap checked from the
header before any pixel is decoded, EXIF orientation applied) to one luminance plane and
computes pHash (imagehash's, 64 bits) and PDQ (the reference's 256 bits + quality) as
they are defined on the image's box copy of at most ``HASH_MAX_SIDE`` px
(``transforms/hash_resample.py``, ``transforms/pdq.py``).

The plane is what both hashes read, so it is all the audit decodes: a colour JPEG is
decoded to its Y (luma) channel only, which skips chroma upsampling and colour
conversion, and at a reduced DCT scale when that still leaves ``PLANE_MIN_SIDE`` px.
Y is the 0.299 R + 0.587 G + 0.114 B luma that PDQ and pHash compute from RGB, and the
hash operators model the scale, so the hashes stay within a bit or two of the
reference libraries on the RGB pixels (tests/test_hash_compat.py pins it). An RGB copy is decoded as well only when a later
stage wants one (``keep_image`` for embedding, ``decode_image``); its hashes still come
from the same plane, so a hash never depends on the config.

The same functions serve the audit and ``laion-audit request``: a person's photo is
hashed on her machine through exactly this decode -> plane -> hash path, so both sides
of a takedown match see the same pixels.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from PIL import Image, UnidentifiedImageError

from transforms.hash_resample import HASH_MAX_SIDE, copy_size, pdq_dihedral, perceptual_hashes
from transforms.pdq import DIHEDRAL_NAMES, limit_blas_threads
from transforms.row_status import StatusCounters, short_error
from transforms.webp_luma import is_plain_lossy, webp_luma

_LOG = logging.getLogger(__name__)

# HASH_MAX_SIDE (512): long side of the box copy PDQ and pHash are defined on (as the
# reference PDQ tools reduce); the audit never makes that copy, it folds it into the
# hash operators (transforms/hash_resample.py).

# A JPEG's luma plane is decoded at the largest DCT scale (1/2, 1/4, 1/8) that leaves
# this many px on the long side: hashes move about a bit on average (the operators
# model the scale), and the decode and the products shrink with it.
PLANE_MIN_SIDE = 256

# Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS) as the default cap.
# A larger cap is honoured up to Pillow's hard limit (twice its MAX_IMAGE_PIXELS,
# ~179 M pixels), which still applies when opening.
DEFAULT_MAX_PIXELS = 89_478_485

# Formats a browser would display. Everything else Pillow could sniff (EPS runs
# Ghostscript, TGA has no magic number and "identifies" random bytes) is not an image
# for an audit of web images.
WEB_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "JPEG2000", "AVIF")

# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling) only when that
# still leaves the asked size (HASH_MAX_SIDE for RGB, PLANE_MIN_SIDE for the plane).
_DRAFT_MIN_FACTOR = 2

# EXIF orientation -> the transpose that displays the image upright (Pillow's
# ImageOps.exif_transpose table; 1, "as stored", needs none), and the orientations
# that swap width and height (transpose / rotate 90 / 270).
_ORIENTATION_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112

# pdqhash.compute_dihedral returns the eight variants in this order. In Pillow terms:
# rot90 = Transpose.ROTATE_90 (counter-clockwise), flipx = FLIP_TOP_BOTTOM,
# flipy = FLIP_LEFT_RIGHT (a mirror image), flip_plus1 = TRANSPOSE,
# flip_minus1 = TRANSVERSE.
PDQ_DIHEDRAL_NAMES = DIHEDRAL_NAMES



class ImageError(Exception):
    """Bytes that did not yield an image. ``hashes`` carries what was still computed."""

    status = "decode_error"

    def __init__(self, message: str, *, mime: str | None = None,
                 width: int | None = None, height: int | None = None) -> None:
        super().__init__(message)
        self.mime = mime
        self.width = width
        self.height = height
        # Filled by hash_image: content hashes of the raw bytes, so a failed decode
        # still carries MD5/SHA-256 for exact-hash takedown lists.
        self.hashes: ImageHashes | None = None


class ImageTooLarge(ImageError):
    """The header declares more pixels than the cap (a decompression bomb or just huge)."""

    status = "too_large"


class ImageDecodeError(ImageError):
    """The format was identified but the data is broken (truncated, corrupt)."""

    status = "decode_error"


class NotAnImage(ImageDecodeError):
    """No supported image format recognises the bytes at all (HTML, text, SVG, ...)."""

    status = "not_image"


@dataclasses.dataclass
class DecodedImage:
    """An RGB image plus what the file said about itself before any reduction."""

    image: Image.Image  # RGB, EXIF orientation applied, possibly JPEG-draft reduced
    format: str  # Pillow's format name, e.g. "JPEG"
    mime: str | None  # e.g. "image/jpeg"
    width: int  # full-resolution width as displayed (after EXIF orientation)
    height: int


class HashedImage(Image.Image):
    """An RGB image that carries what its hashes are computed from: ``luma``, the decoded
    "L" plane (for a JPEG its Y channel, possibly at a reduced DCT scale), and
    ``full_size``, the image's size as displayed. Pillow operations return plain images,
    so a rotated or resized copy never carries a stale plane."""

    luma: np.ndarray
    full_size: tuple[int, int]


@dataclasses.dataclass
class DecodedPlane:
    """The luminance plane the hashes read, and what the file said about itself."""

    luma: np.ndarray  # 2-D uint8, upright: a JPEG's Y (maybe DCT-reduced), else L of the RGB
    format: str
    mime: str | None
    width: int  # full-resolution size as displayed
    height: int


def _with_luma(rgb: Image.Image, luma: np.ndarray, full_size: tuple[int, int]) -> HashedImage:
    out = HashedImage()
    out.im = rgb.im
    out._mode = rgb.mode
    out._size = rgb.size
    out.info = rgb.info.copy()
    out.luma = luma
    out.full_size = full_size
    return out


@dataclasses.dataclass
class ImageHashes:
    """The hash columns of an audit row for one body of bytes."""

    content_md5: str
    content_sha256: str
    bytes: int
    mime: str | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None

    def to_columns(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- decoding


def _exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation 1..8; 1 when absent, malformed or not an integer (a text
    "6" is no orientation, as for ImageOps.exif_transpose)."""
    try:
        value = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:  # malformed EXIF must not fail the image
        return 1
    if isinstance(value, int) and value in _ORIENTATION_TRANSPOSES:
        return value
    return 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        # Palette transparency becomes real alpha, then goes through the alpha path.
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit and float greyscale: Pillow's convert() clips to 0..255, which turns
        # a 16-bit photo white. Scale 16-bit range to 8 bits instead.
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / 257.0
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
        mode in ("L", "RGB") and "transparency" in img.info
    ):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        if rgba.getextrema()[3][0] == 255:
            # Fully opaque (most PNGs with an alpha channel): compositing over white
            # gives exactly these RGB values, so skip two full-size buffers.
            return rgba.convert("RGB")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # 1, L, CMYK, YCbCr, LAB, HSV, ...
    return img.convert("RGB")


def _open_checked(data: bytes, max_pixels: int) -> tuple[Image.Image, str, str | None]:
    """Open (no pixel decoded yet) and check the header's size against the cap."""
    try:
        # Over Pillow's soft limit Image.open only warns; the cap below decides.
        img = Image.open(io.BytesIO(data), formats=WEB_IMAGE_FORMATS)
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(short_error(err)) from None
    except UnidentifiedImageError:
        raise NotAnImage("no supported image format recognised") from None
    except Exception as err:  # a plugin accepted the magic bytes, then failed
        raise ImageDecodeError(short_error(err)) from None

    fmt = img.format or "unknown"
    mime = Image.MIME.get(fmt.upper())
    # The cap is checked on the header's size, before anything can trigger a decode
    # (even reading EXIF makes the PNG plugin load the whole image).
    stored_w, stored_h = img.size
    if stored_w <= 0 or stored_h <= 0:
        raise ImageDecodeError(f"{fmt} declares an empty size {stored_w}x{stored_h}", mime=mime)
    if stored_w * stored_h > max_pixels:
        raise ImageTooLarge(
            f"{stored_w}x{stored_h} = {stored_w * stored_h} pixels exceeds the cap of {max_pixels}",
            mime=mime, width=stored_w, height=stored_h,
        )
    return img, fmt, mime


def _draft(img: Image.Image, fmt: str, mode: str | None, min_side: int) -> None:
    """Ask libjpeg for a reduced DCT scale (and, with mode "L", the Y channel only).

    Scaled only when the result still has at least ``min_side`` px on the long side:
    draft picks the largest scale whose result is at least the requested size."""
    if fmt not in ("JPEG", "MPO"):
        return
    stored_w, stored_h = img.size
    long_side = max(stored_w, stored_h)
    target = None
    if long_side >= _DRAFT_MIN_FACTOR * min_side:
        factor = min_side / long_side
        target = (max(1, round(stored_w * factor)), max(1, round(stored_h * factor)))
    if mode is not None or target is not None:
        img.draft(mode, target)


def _load_upright(img: Image.Image, mime: str | None, full: tuple[int, int]) -> tuple[Image.Image, int, int]:
    """Decode, apply the EXIF orientation; (image, displayed width, displayed height).
    ``full`` is the stored size before any draft."""
    full_w, full_h = full
    try:
        img.load()
        width, height = full_w, full_h
        orientation = _exif_orientation(img)
        if orientation in _SWAPPING_ORIENTATIONS:
            width, height = full_h, full_w
        if orientation in _ORIENTATION_TRANSPOSES:
            # Only when there is something to turn (ImageOps.exif_transpose copies the
            # whole image even then), and from the same reading of the tag as the size.
            img = img.transpose(_ORIENTATION_TRANSPOSES[orientation])
    except Image.DecompressionBombError as err:
        raise ImageTooLarge(short_error(err), mime=mime, width=full_w, height=full_h) from None
    except MemoryError:
        raise ImageTooLarge("out of memory while decoding", mime=mime,
                            width=full_w, height=full_h) from None
    except Exception as err:  # truncated data, corrupt streams, unsupported sub-modes
        raise ImageDecodeError(short_error(err), mime=mime, width=full_w, height=full_h) from None
    return img, width, height


def _converted(fn, img: Image.Image, mime: str | None, width: int, height: int):
    """A mode conversion with the decode errors a lazy plugin can still raise here."""
    try:
        out = fn(img)
        if isinstance(out, Image.Image):
            out.load()
    except MemoryError:
        raise ImageTooLarge("out of memory while decoding", mime=mime, width=width, height=height) from None
    except Exception as err:
        raise ImageDecodeError(short_error(err), mime=mime, width=width, height=height) from None
    return out


def _luma_of(img: Image.Image) -> np.ndarray:
    """The plane the hashes read, of any decoded image: Pillow's "L" of its RGB (the
    0.299 / 0.587 / 0.114 luma PDQ uses, rounded to 8 bits as imagehash sees it;
    transparency composited on white first), four times cheaper than float luma."""
    if img.mode == "L" and "transparency" not in img.info:
        return np.asarray(img)
    return np.asarray(_to_rgb(img).convert("L"))


def _drafted_upright(img: Image.Image, fmt: str, mime: str | None, mode: str | None,
                     min_side: int) -> tuple[Image.Image, int, int]:
    full = img.size
    try:
        _draft(img, fmt, mode, min_side)
    except Exception as err:
        raise ImageDecodeError(short_error(err), mime=mime, width=full[0], height=full[1]) from None
    return _load_upright(img, mime, full)


def _has_own_plane(fmt: str, data: bytes) -> bool:
    """Formats whose plane is decoded apart from any RGB copy: a JPEG's Y channel, a plain
    lossy WebP's Y plane (transforms/webp_luma.py)."""
    return fmt in ("JPEG", "MPO") or (fmt == "WEBP" and is_plain_lossy(data))


def _webp_plane(img: Image.Image, data: bytes, fmt: str, mime: str | None) -> DecodedPlane | None:
    """A plain lossy WebP's plane from libwebp's Y, turned upright; None: use Pillow."""
    plane = webp_luma(data) if fmt == "WEBP" and img.mode == "RGB" else None
    if plane is None or plane.shape != (img.size[1], img.size[0]):
        return None
    width, height = img.size
    orientation = _exif_orientation(img)  # WebP's EXIF is read at open: no decode
    if orientation in _ORIENTATION_TRANSPOSES:
        plane = np.asarray(Image.fromarray(plane, "L").transpose(_ORIENTATION_TRANSPOSES[orientation]))
        if orientation in _SWAPPING_ORIENTATIONS:
            width, height = height, width
    return DecodedPlane(luma=plane, format=fmt, mime=mime, width=width, height=height)


def decode_luma(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPlane:
    """Decode only the luminance plane the hashes read (EXIF orientation applied). A
    colour JPEG is decoded to its Y channel at the largest DCT scale leaving
    PLANE_MIN_SIDE px, a plain lossy WebP to its Y plane, the cheapest decodes there
    are; width and height are the full size as displayed. Raises as ``decode_image``."""
    img, fmt, mime = _open_checked(data, max_pixels)
    webp = _webp_plane(img, data, fmt, mime)
    if webp is not None:
        return webp
    img, width, height = _drafted_upright(img, fmt, mime, "L", PLANE_MIN_SIDE)
    luma = _converted(_luma_of, img, mime, width, height)
    return DecodedPlane(luma=luma, format=fmt, mime=mime, width=width, height=height)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode image bytes to RGB, refusing anything over ``max_pixels`` before decoding.

    Raises NotAnImage (no supported format), ImageTooLarge (width * height over the cap,
    or over Pillow's own hard bomb limit) or ImageDecodeError (identified but broken);
    errors carry the mime and the stored size when the header was readable.
    Large JPEGs are decoded at a reduced DCT scale (``Image.draft``) that still leaves at
    least HASH_MAX_SIDE px on the long side; width/height are always the full size as
    displayed (after EXIF orientation). The image is a ``HashedImage``: it carries the
    luminance plane ``decode_luma`` gives, so its hashes are the audit's.
    """
    img, fmt, mime = _open_checked(data, max_pixels)
    img, width, height = _drafted_upright(img, fmt, mime, None, HASH_MAX_SIDE)
    rgb = _converted(_to_rgb, img, mime, width, height)
    if _has_own_plane(fmt, data):
        luma = decode_luma(data, max_pixels).luma  # the plane exactly as the audit reads it
    else:
        # From the RGB copy just made (its own _to_rgb is a no-op), not a second conversion.
        luma = _converted(_luma_of, img if img.mode == "L" else rgb, mime, width, height)
    return DecodedImage(image=_with_luma(rgb, luma, (width, height)), format=fmt, mime=mime,
                        width=width, height=height)


def downscale_for_hashing(img: Image.Image, max_side: int = HASH_MAX_SIDE) -> Image.Image:
    """The copy every perceptual hash sees: long side <= max_side, aspect kept.

    Box (area-average) resampling: a true low-pass filter when shrinking, like the box
    filter PDQ itself applies on the way to 64x64, and about 3x cheaper than Lanczos on
    500-1000 px photos. Images already small enough are returned as they are. A
    ``HashedImage`` comes back as one, its plane reduced the same way.
    """
    size = copy_size(*img.size, max_side)
    if size == img.size:
        return img
    small = img.resize(size, Image.Resampling.BOX)
    if isinstance(img, HashedImage):
        return _with_luma(small, img.luma, img.full_size)  # the hashes' plane stays as decoded
    return small


# ------------------------------------------------------------------------------ hashes


def md5_sha256(data: bytes) -> tuple[str, str]:
    """MD5 and SHA-256 of the raw bytes, lowercase hex."""
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def hash_plane(img: Image.Image) -> tuple[np.ndarray, int, int]:
    """(luma plane, full width, full height) that PDQ and pHash read for ``img``.

    A ``HashedImage`` (from ``decode_image``) gives its own plane and size, so it hashes
    exactly as the audit does; any other image is taken as full resolution, converted
    to luma (transparency on white)."""
    if isinstance(img, HashedImage):
        return img.luma, *img.full_size
    return _luma_of(img), *img.size


def phash_of(img: Image.Image) -> str:
    """imagehash's 64-bit DCT pHash as 16 lowercase hex digits (``str(ImageHash)``)."""
    return perceptual_hashes(*hash_plane(img))[2]


def pdq_bits_to_hex(bits: Iterable[int]) -> str:
    """PDQ's 256 bits, in pdqhash's vector order, as one big-endian number in hex.

    This is python-threatexchange's format (``pdq_hasher._pdq_from_numpy_array``):
    vector element 0 is the most significant bit, 64 lowercase hex digits.
    """
    bits = np.asarray(list(bits) if not isinstance(bits, np.ndarray) else bits)
    if bits.shape != (256,):
        raise ValueError(f"a PDQ hash has 256 bits, got shape {bits.shape}")
    packed = np.packbits(bits.astype(bool))  # big-endian bit order within each byte
    return packed.tobytes().hex()


def pdq_of(img: Image.Image) -> tuple[str, int]:
    """PDQ hash (64 hex digits, threatexchange format) and quality (0..100)."""
    pdq, quality, _, _ = perceptual_hashes(*hash_plane(img))
    return pdq, quality


def pdq_dihedral_of(img: Image.Image) -> list[tuple[str, str, int]]:
    """PDQ of the image's eight rotations/flips in one pass: (name, hex, quality).

    Names follow PDQ_DIHEDRAL_NAMES (pdqhash's order); "original" equals ``pdq_of``.
    """
    _, quality, _, dct = perceptual_hashes(*hash_plane(img))
    return pdq_dihedral(dct, quality)


def _perceptual(hashes: ImageHashes, plane: np.ndarray, width: int, height: int) -> None:
    hashes.pdq, hashes.pdq_quality, hashes.phash, _ = perceptual_hashes(plane, width, height)


def _content_hashes(data: bytes) -> ImageHashes:
    md5_hex, sha256_hex = md5_sha256(data)
    return ImageHashes(content_md5=md5_hex, content_sha256=sha256_hex, bytes=len(data))


def _decoded_or_raise(decode, data: bytes, max_pixels: int, hashes: ImageHashes):
    try:
        decoded = decode(data, max_pixels)
    except ImageError as err:
        hashes.mime, hashes.width, hashes.height = err.mime, err.width, err.height
        err.hashes = hashes
        raise
    hashes.mime, hashes.width, hashes.height = decoded.mime, decoded.width, decoded.height
    return decoded


def hash_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[ImageHashes, Image.Image]:
    """All hash columns for one body, plus the downscaled RGB copy (a ``HashedImage``).

    Raises ImageError subclasses (NotAnImage, ImageTooLarge, ImageDecodeError); the
    raised error's ``hashes`` still holds content_md5 / content_sha256 / bytes, and the
    mime and size when the header was readable.
    """
    hashes = _content_hashes(data)
    decoded = _decoded_or_raise(decode_image, data, max_pixels, hashes)
    small = downscale_for_hashing(decoded.image)
    _perceptual(hashes, *hash_plane(small))
    return hashes, small


def hash_columns(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHashes:
    """The hash columns of ``hash_image`` without the RGB copy: only the luminance plane
    is decoded (the audit's path when no later stage wants pixels). Raises as
    ``hash_image`` does."""
    hashes = _content_hashes(data)
    decoded = _decoded_or_raise(decode_luma, data, max_pixels, hashes)
    _perceptual(hashes, decoded.luma, decoded.width, decoded.height)
    return hashes


def hash_record(record: dict, max_pixels: int = DEFAULT_MAX_PIXELS, keep_image: bool = False) -> dict:
    """A copy of a fetched record with the hash columns filled in; never raises.

    The input dict is left as it is (Beam forbids changing an input element); the copy
    drops the in-flight ``_body`` (image bytes go no further). An ok record becomes ok
    (hashed), too_large, decode_error, not_image or internal_error; any other status
    passes through. With ``keep_image`` the downscaled RGB copy rides along as
    ``_image`` for the embedding stage, so nothing decodes twice; the hashes are the
    same either way (both read the same luminance plane).
    """
    record = dict(record)  # shallow: only top-level keys are replaced below
    body = record.pop("_body", None)
    if record.get("status") != "ok":
        return record
    try:
        if body is None:
            raise ValueError("record has status ok but no _body")
        data = bytes(body)
        try:
            if keep_image:
                hashes, small = hash_image(data, max_pixels)
            else:
                hashes, small = hash_columns(data, max_pixels), None
        except ImageError as err:
            if err.hashes is not None:
                record.update(err.hashes.to_columns())
            record["status"] = err.status
            record["error"] = short_error(str(err))
            return record
        record.update(hashes.to_columns())
        if keep_image:
            record["_image"] = small
    except Exception as err:  # a bug or an environment problem: keep the row, say so
        _LOG.warning("hashing failed for row %s: %s", record.get("row_id"), type(err).__name__)
        record["status"] = "internal_error"
        record["error"] = short_error(err)
        record.pop("_image", None)
    return record


# ----------------------------------------------------------------------------- Beam


class DecodeAndHash(beam.DoFn):
    """hash_record on each record; counts each resulting status as hash/status_<s>."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS, keep_image: bool = False) -> None:
        self.max_pixels = int(max_pixels)
        self.keep_image = bool(keep_image)

    def setup(self) -> None:
        self._statuses = StatusCounters("hash")
        limit_blas_threads()  # one worker per core: BLAS threads would only spin

    def process(self, record: dict) -> Iterator[dict]:
        # Every record is counted once, so the status counters sum to the rows in.
        out = hash_record(record, self.max_pixels, self.keep_image)
        self._statuses.inc(out.get("status"))
        yield out


class HashImages(beam.PTransform):
    """Decode + hash every fetched record (records in, same records with hashes out)."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS, keep_image: bool = False,
                 label: str | None = None) -> None:
        super().__init__(label)
        self.max_pixels = max_pixels
        self.keep_image = keep_image

    def expand(self, records):
        return records | "DecodeAndHash" >> beam.ParDo(
            DecodeAndHash(self.max_pixels, self.keep_image)
        )


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "HASH_MAX_SIDE",
    "PDQ_DIHEDRAL_NAMES",
    "WEB_IMAGE_FORMATS",
    "DecodeAndHash",
    "DecodedImage",
    "DecodedPlane",
    "HashImages",
    "HashedImage",
    "ImageDecodeError",
    "ImageError",
    "ImageHashes",
    "ImageTooLarge",
    "NotAnImage",
    "PLANE_MIN_SIDE",
    "decode_image",
    "decode_luma",
    "downscale_for_hashing",
    "hash_columns",
    "hash_image",
    "hash_plane",
    "hash_record",
    "md5_sha256",
    "pdq_bits_to_hex",
    "pdq_dihedral_of",
    "pdq_of",
    "phash_of",
]
