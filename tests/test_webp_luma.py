"""A lossy WebP's luma from libwebp's Y plane: which files take that path, and that the
plane is the luma Pillow's RGB decode gives, upright, with the usual errors."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from tests.test_hash_compat import encode, photo
from transforms import webp_luma as wl
from transforms.hashing import decode_luma, hash_record

pytestmark = pytest.mark.skipif(not wl.available(), reason="no libwebp to load")


def pillow_luma(data: bytes) -> np.ndarray:
    """The reference: Pillow's full RGB decode, upright, then its "L"."""
    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB").convert("L"))


def exif_with(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def animated_webp() -> bytes:
    frames = [photo(1, 64, 48), photo(2, 64, 48)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, quality=80)
    return buf.getvalue()


def with_alpha() -> bytes:
    rgba = photo(3, 80, 60).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 100))
    return encode(rgba, "WEBP", quality=80)


@pytest.mark.parametrize(("name", "data", "plain"), [
    ("lossy", encode(photo(4, 80, 60), "WEBP", quality=80), True),
    ("lossy with EXIF (VP8X header)", encode(photo(4, 80, 60), "WEBP", quality=80, exif=exif_with(6)), True),
    ("lossless", encode(photo(4, 80, 60), "WEBP", lossless=True), False),
    ("alpha", with_alpha(), False),
    ("animated", animated_webp(), False),
    ("a JPEG", encode(photo(4, 80, 60), "JPEG"), False),
    ("a RIFF header alone", b"RIFF\x10\x00\x00\x00WEBPVP8X", False),
])
def test_only_still_opaque_lossy_webps_take_the_y_plane(name, data, plain):
    assert wl.is_plain_lossy(data) is plain, name
    assert (wl.webp_luma(data) is not None) is plain, name


@pytest.mark.parametrize(("width", "height", "quality"), [(1200, 800, 85), (333, 501, 50), (7, 5, 90)])
def test_the_plane_is_pillows_luma_within_rounding(width, height, quality):
    data = encode(photo(width, width, height), "WEBP", quality=quality)
    got = decode_luma(data)
    want = pillow_luma(data)
    assert (got.width, got.height) == (width, height) and got.luma.shape == want.shape
    diff = np.abs(got.luma.astype(int) - want.astype(int))
    # Studio-range Y mapped back: Pillow's RGB rounds three times, the table once.
    assert diff.mean() <= 0.5 and diff.max() <= 4, (diff.mean(), diff.max())


def test_saturated_colours_stay_close_where_the_rgb_clips():
    flags = Image.new("RGB", (200, 100), (255, 0, 0))
    flags.paste((0, 0, 255), (100, 0, 200, 100))
    data = encode(flags, "WEBP", quality=80)
    diff = np.abs(decode_luma(data).luma.astype(int) - pillow_luma(data).astype(int))
    assert diff.mean() <= 0.5 and diff.max() <= 10


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_an_exif_turned_webp_is_read_upright(orientation):
    data = encode(photo(5, 300, 200), "WEBP", quality=90, exif=exif_with(orientation))
    got = decode_luma(data)
    want = pillow_luma(data)
    swapped = orientation in (6, 8)
    assert (got.width, got.height) == ((200, 300) if swapped else (300, 200))
    assert got.luma.shape == want.shape
    assert np.abs(got.luma.astype(int) - want.astype(int)).mean() <= 0.5


def test_a_truncated_lossy_webp_is_a_decode_error_with_content_hashes():
    data = encode(photo(6, 600, 400), "WEBP", quality=85)
    cut = data[: len(data) // 2]
    assert wl.webp_luma(cut) is None  # libwebp refuses it: Pillow decides what is wrong
    record = hash_record({"status": "ok", "_body": cut})
    assert record["status"] == "decode_error" and record["error"]
    assert record["content_sha256"] == hashlib.sha256(cut).hexdigest()
    assert record["pdq"] is None and record["phash"] is None


def test_the_webp_pixel_cap_is_checked_before_libwebp_decodes():
    data = encode(photo(7, 400, 300), "WEBP", quality=85)
    record = hash_record({"status": "ok", "_body": data}, max_pixels=400 * 300 - 1)
    assert record["status"] == "too_large"
    assert (record["width"], record["height"]) == (400, 300)
