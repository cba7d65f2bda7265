"""Decode + hash stage: content hashes, PDQ / pHash robustness, safe decoding, records."""
from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from scripts.sample_images import make_photo_jpeg, make_png
from tests.test_hash_compat import hamming, photo
from transforms.hashing import (
    HASH_MAX_SIDE,
    PDQ_DIHEDRAL_NAMES,
    HashImages,
    ImageDecodeError,
    ImageTooLarge,
    NotAnImage,
    decode_image,
    downscale_for_hashing,
    hash_image,
    hash_record,
    md5_sha256,
    pdq_bits_to_hex,
    pdq_dihedral_of,
    pdq_of,
    phash_of,
)

PDQ_MATCH = 31


def photo_like(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    """Smooth colour fields, shapes, blur and sensor-like noise: hashes behave as on photos."""
    return photo(seed, width, height, shapes=12, blur=2, noise=6)


def encode(img: Image.Image, fmt: str = "JPEG", **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of all zeros: a few kB on disk, huge in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def original() -> Image.Image:
    return photo_like(1)


@pytest.fixture(scope="module")
def original_jpeg(original) -> bytes:
    return encode(original, "JPEG", quality=92)


# ----------------------------------------------------------------------- hash formats


def test_pdq_hex_is_threatexchange_big_endian_format():
    only_first = [1] + [0] * 255
    only_last = [0] * 255 + [1]
    assert pdq_bits_to_hex(only_first) == "8" + "0" * 63
    assert pdq_bits_to_hex(only_last) == "0" * 63 + "1"
    assert pdq_bits_to_hex(np.array([1, 0, 1, 1] + [0] * 252)) == "b" + "0" * 63
    with pytest.raises(ValueError):
        pdq_bits_to_hex([1, 0, 1])


# Independent references: the libraries themselves, called on pixels made with plain
# Pillow, so a change to the audit's decode -> copy -> hash path cannot move them too.


def threatexchange_hex(vector) -> str:
    """python-threatexchange's pdq_hasher conversion: the 256 bits in pdqhash's order
    read as one binary number (element 0 most significant), zero-padded lowercase hex."""
    bin_str = "".join(str(int(b)) for b in vector)
    return ("%0*X" % ((len(bin_str) + 3) // 4, int(bin_str, 2))).lower()


def reference_hash_pixels(data: bytes) -> Image.Image:
    """The pixels the audit promises to hash, made with plain Pillow calls.

    An image at most 512 px on its long side is hashed as decoded. A larger one is hashed
    on a BOX-resampled copy whose long side is 512 px (each side rounded, aspect kept);
    a JPEG at least twice that size is first decoded at a reduced DCT scale (draft) that
    still leaves at least that copy's size."""
    img = Image.open(io.BytesIO(data))
    width, height = img.size
    if img.format == "JPEG" and max(width, height) >= 1024:
        factor = 512 / max(width, height)
        img.draft("RGB", (round(width * factor), round(height * factor)))
    rgb = img.convert("RGB")
    width, height = rgb.size
    if max(width, height) <= 512:
        return rgb
    factor = 512 / max(width, height)
    return rgb.resize((round(width * factor), round(height * factor)), Image.BOX)


def _noise_png(seed: int, width: int, height: int) -> bytes:
    """Smoothed noise: many DCT coefficients near the median, so pHash and PDQ notice
    small changes in the pixels they are given (of these cases, only these show a pHash
    taken of the full image instead of the 512 px copy)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)
    return encode(img, "PNG")


# name -> (bytes, size of the copy the audit hashes)
HASH_CASES = {
    "png noise 64x48": (make_png(5, 64, 48), (64, 48)),
    "jpeg photo 320x240": (make_photo_jpeg(21, 320, 240), (320, 240)),
    "jpeg photo 512x384, at the limit": (make_photo_jpeg(22, 512, 384), (512, 384)),
    "jpeg photo 800x600, box copy": (make_photo_jpeg(23, 800, 600), (512, 384)),
    "jpeg photo 1024x768, draft only": (make_photo_jpeg(24, 1024, 768), (512, 384)),
    "jpeg photo 2000x1300, draft and box": (make_photo_jpeg(25, 2000, 1300), (512, 333)),
    "png portrait 600x900, box copy": (_noise_png(26, 600, 900), (341, 512)),
    "png 1500x700, box copy": (_noise_png(27, 1500, 700), (512, 239)),
}


@pytest.mark.parametrize("name", sorted(HASH_CASES))
def test_pdq_and_phash_land_on_the_reference_libraries_for_the_same_pixels(name):
    # The audit hashes the luma plane (a JPEG's Y, maybe DCT-reduced) through operators
    # that stand for this copy, so bits may differ a little from the libraries' on the
    # copy; tests/test_hash_compat.py pins the averages over many kinds of image.
    data, copy_size = HASH_CASES[name]
    pixels = reference_hash_pixels(data)
    assert pixels.size == copy_size  # the test's own copy follows the documented size rule
    vector, quality = pdqhash.compute(np.asarray(pixels, dtype=np.uint8))
    want_pdq, want_quality = threatexchange_hex(vector), int(quality)
    want_phash = str(imagehash.phash(pixels))
    assert len(want_pdq) == 64 and len(want_phash) == 16

    record = hash_record({"row_id": name, "status": "ok", "_body": data}, keep_image=True)
    assert record["status"] == "ok"
    assert hamming(record["pdq"], want_pdq) <= 6
    assert abs(record["pdq_quality"] - want_quality) <= 2
    assert hamming(record["phash"], want_phash) <= 2
    with Image.open(io.BytesIO(data)) as original:
        assert (record["width"], record["height"]) == original.size  # full size, not the copy's
    # The copy handed on to the embedding stage is these very pixels.
    assert np.array_equal(np.asarray(record["_image"]), np.asarray(pixels))

    # A direct call on the fully decoded image lands on the same reference.
    with Image.open(io.BytesIO(data)) as opened:
        decoded = opened.convert("RGB")
    direct_pdq, direct_quality = pdq_of(decoded)
    assert hamming(direct_pdq, want_pdq) <= 6 and abs(direct_quality - want_quality) <= 2
    assert hamming(phash_of(decoded), want_phash) <= 2


def test_the_hash_cases_are_distinct_and_some_have_imperfect_quality():
    # Guards the table above: a constant or swapped quality, or one hash for every
    # image, would otherwise pass for images that all look alike.
    refs = []
    for data, _ in HASH_CASES.values():
        vector, quality = pdqhash.compute(np.asarray(reference_hash_pixels(data), dtype=np.uint8))
        refs.append((threatexchange_hex(vector), int(quality)))
    assert len({pdq for pdq, _ in refs}) == len(refs)
    assert len({quality for _, quality in refs}) > 1


def test_content_hashes_are_of_the_raw_bytes(original_jpeg):
    md5_hex, sha_hex = md5_sha256(original_jpeg)
    assert md5_hex == hashlib.md5(original_jpeg).hexdigest()
    assert sha_hex == hashlib.sha256(original_jpeg).hexdigest()


def test_hashes_are_deterministic(original_jpeg):
    first, _ = hash_image(original_jpeg)
    second, _ = hash_image(bytes(original_jpeg))
    assert first == second
    assert first.mime == "image/jpeg"
    assert (first.width, first.height) == (640, 480)
    assert 0 <= first.pdq_quality <= 100


# ------------------------------------------------------------------------- robustness


def test_pdq_survives_resize_recompression_and_format_change(original, original_jpeg):
    reference, _ = hash_image(original_jpeg)
    variants = {
        "half size": encode(original.resize((320, 240), Image.Resampling.BILINEAR), "JPEG", quality=90),
        "jpeg q60": encode(original, "JPEG", quality=60),
        "png": encode(original, "PNG"),
    }
    for name, data in variants.items():
        hashes, _ = hash_image(data)
        assert hamming(hashes.pdq, reference.pdq) <= PDQ_MATCH, name
        assert hamming(hashes.phash, reference.phash) <= 8, name
    unrelated, _ = hash_image(encode(photo_like(99), "JPEG", quality=92))
    assert hamming(unrelated.pdq, reference.pdq) > 60


def test_mirror_is_found_among_the_dihedral_hashes(original):
    variants = pdq_dihedral_of(original)
    assert [name for name, _, _ in variants] == list(PDQ_DIHEDRAL_NAMES)
    assert variants[0][1:] == pdq_of(original)
    # Each variant lands on pdqhash's own dihedral output for the hashed copy, in its order.
    vectors, quality = pdqhash.compute_dihedral(np.asarray(reference_hash_pixels(encode(original, "PNG"))))
    for (name, value, got_quality), vector in zip(variants, vectors):
        assert hamming(value, threatexchange_hex(vector)) <= 6, name
        assert abs(got_quality - int(quality)) <= 2, name
    mirror_pdq, _ = pdq_of(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    distances = {name: hamming(value, mirror_pdq) for name, value, _ in variants}
    assert distances["original"] > PDQ_MATCH
    assert min(distances, key=distances.get) == "flipy"  # PDQ flips about the y axis
    assert distances["flipy"] <= PDQ_MATCH


# --------------------------------------------------------------------------- decoding


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (300, 200), (255, 0, 0))
    stored.paste((0, 0, 255), (150, 0, 300, 200))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    decoded = decode_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert (decoded.width, decoded.height) == (200, 300)
    assert decoded.image.size == (200, 300)
    top = decoded.image.getpixel((100, 20))
    bottom = decoded.image.getpixel((100, 280))
    assert top[0] > 200 and top[2] < 60  # the stored left edge is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_exif_rotated_photo_hashes_like_the_upright_one(original):
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_on_disk = original.transpose(Image.Transpose.ROTATE_90)
    tagged = encode(rotated_on_disk, "JPEG", quality=92, exif=exif.tobytes())
    upright = encode(original, "JPEG", quality=92)
    assert hamming(hash_image(tagged)[0].pdq, hash_image(upright)[0].pdq) <= PDQ_MATCH


# The transpose that stores an upright image so that EXIF orientation o turns it back.
_STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # displayed after a 270 (clockwise 90) turn
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", sorted(_STORE_FOR_ORIENTATION))
def test_every_exif_orientation_decodes_upright(orientation):
    upright = photo_like(11, 90, 60)
    method = _STORE_FOR_ORIENTATION[orientation]
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(stored, "PNG", exif=exif.tobytes()))  # lossless
    assert (decoded.width, decoded.height) == upright.size
    assert np.array_equal(np.asarray(decoded.image), np.asarray(upright))


def _jpeg_with_raw_orientation(img: Image.Image, field_type: int, value: bytes) -> bytes:
    """A JPEG whose EXIF holds one orientation entry of any TIFF field type, as written
    by software that does not follow the spec (Pillow only writes it as SHORT)."""
    count = len(value.rstrip(b"\0")) + 1 if field_type == 2 else 1
    entry = struct.pack(">HHI", 0x0112, field_type, count) + value.ljust(4, b"\0")[:4]
    tiff = b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\0" * 4
    return encode(img, "JPEG", quality=90, exif=b"Exif\0\0" + tiff)


def test_text_orientation_is_ignored_for_size_and_pixels_alike():
    # "6" as ASCII text is no orientation: the reported size must describe the pixels.
    stored = photo_like(12, 300, 200)
    decoded = decode_image(_jpeg_with_raw_orientation(stored, 2, b"6"))
    assert (decoded.width, decoded.height) == decoded.image.size == (300, 200)
    as_long = decode_image(_jpeg_with_raw_orientation(stored, 4, struct.pack(">I", 6)))
    assert (as_long.width, as_long.height) == as_long.image.size == (200, 300)


def test_decompression_bomb_over_pillow_hard_limit_is_too_large():
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 200_000
    with pytest.raises(ImageTooLarge):
        decode_image(bomb)
    record = hash_record({"status": "ok", "_body": bomb})
    assert record["status"] == "too_large"
    assert record["content_sha256"] == hashlib.sha256(bomb).hexdigest()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_the_configured_cap_is_too_large_with_its_size():
    big = png_bomb(10000, 10000)  # over Pillow's soft limit (warning only): our cap decides
    with pytest.raises(ImageTooLarge) as err:
        hash_image(big)
    assert (err.value.width, err.value.height) == (10000, 10000)
    assert err.value.hashes.content_md5 == hashlib.md5(big).hexdigest()

    small = encode(photo_like(3, 200, 100), "PNG")
    record = hash_record({"status": "ok", "_body": small}, max_pixels=200 * 100 - 1)
    assert record["status"] == "too_large"
    assert (record["width"], record["height"]) == (200, 100)
    assert record["pdq"] is None
    assert hash_record({"status": "ok", "_body": small}, max_pixels=200 * 100)["status"] == "ok"


def test_pixel_cap_is_checked_before_any_decoding():
    # Header only, no pixel data: decoding it would fail, so too_large proves the cap
    # was applied first.
    header_only = png_bomb(5000, 5000)
    header_only = header_only[: header_only.index(b"IDAT") - 4] + header_only[-12:]
    assert hash_record({"status": "ok", "_body": header_only}, max_pixels=1000)["status"] == "too_large"
    assert hash_record({"status": "ok", "_body": header_only})["status"] == "decode_error"


def test_truncated_jpeg_is_decode_error_with_content_hashes(original_jpeg):
    truncated = original_jpeg[: len(original_jpeg) // 2]
    with pytest.raises(ImageDecodeError) as err:
        decode_image(truncated)
    assert not isinstance(err.value, NotAnImage)
    record = hash_record({"status": "ok", "_body": truncated})
    assert record["status"] == "decode_error"
    assert record["error"]
    assert record["content_md5"] == hashlib.md5(truncated).hexdigest()
    assert record["content_sha256"] == hashlib.sha256(truncated).hexdigest()
    assert record["bytes"] == len(truncated)
    assert record["mime"] == "image/jpeg"
    assert record["pdq"] is None and record["phash"] is None


@pytest.mark.parametrize(
    "body",
    [b"<!doctype html><html><body>not found</body></html>", b"plain text", b"",
     b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'],
)
def test_non_image_bytes_are_not_image(body):
    with pytest.raises(NotAnImage):
        decode_image(body)
    record = hash_record({"status": "ok", "_body": body})
    assert record["status"] == "not_image"
    assert record["content_md5"] == hashlib.md5(body).hexdigest()
    assert record["bytes"] == len(body)


def test_rgba_transparency_is_composited_on_white():
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    img.paste((200, 30, 30, 255), (0, 0, 32, 64))
    decoded = decode_image(encode(img, "PNG"))
    assert decoded.image.mode == "RGB"
    assert decoded.image.getpixel((48, 32)) == (255, 255, 255)
    assert decoded.image.getpixel((10, 32)) == (200, 30, 30)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_opaque_alpha_gives_the_colour_values_unchanged(mode):
    base = photo_like(13, 120, 80)
    img = base.convert(mode)
    decoded = decode_image(encode(img, "PNG"))
    colour = base if mode == "RGBA" else base.convert("L").convert("RGB")
    assert np.array_equal(np.asarray(decoded.image), np.asarray(colour))
    # One transparent pixel puts the same image back on the compositing path.
    img = img.convert("RGBA")
    img.putpixel((0, 0), (0, 0, 0, 0))
    composited = decode_image(encode(img, "PNG")).image
    assert composited.getpixel((0, 0)) == (255, 255, 255)
    assert np.array_equal(np.asarray(composited)[1:], np.asarray(colour)[1:])


def _mode_variants() -> dict[str, bytes]:
    base = photo_like(4, 320, 240)
    grey16 = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    la = base.convert("LA")
    palette_transparent = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette_transparent.info["transparency"] = 0
    rgba = base.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 16))  # a small transparent corner
    return {
        "RGB": encode(base, "PNG"),
        "L": encode(base.convert("L"), "PNG"),
        "1": encode(base.convert("1"), "PNG"),
        "P": encode(base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "GIF"),
        "P+transparency": encode(palette_transparent, "PNG", transparency=0),
        "LA": encode(la, "PNG"),
        "RGBA": encode(rgba, "PNG"),
        "WEBP": encode(base, "WEBP", quality=90),
        "CMYK": encode(base.convert("CMYK"), "JPEG", quality=92),
        "I;16": encode(Image.fromarray(grey16), "PNG"),
        "TIFF": encode(base, "TIFF"),
        "BMP": encode(base, "BMP"),
    }


def test_every_common_mode_decodes_to_rgb_and_hashes_like_the_colour_original():
    reference, _ = hash_image(encode(photo_like(4, 320, 240), "PNG"))
    for name, data in _mode_variants().items():
        hashes, small = hash_image(data)
        assert small.mode == "RGB", name
        assert (hashes.width, hashes.height) == (320, 240), name
        assert len(hashes.pdq) == 64 and len(hashes.phash) == 16, name
        if name not in ("1", "P+transparency"):  # dithering / holes change the picture
            assert hamming(hashes.pdq, reference.pdq) <= PDQ_MATCH, name


def test_16_bit_greyscale_keeps_its_brightness():
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (64, 1))
    decoded = decode_image(encode(Image.fromarray(ramp), "PNG"))
    grey = np.asarray(decoded.image)[..., 0].astype(int)
    assert abs(grey[0, 128] - 128) <= 2  # mid-range, not clipped to white
    assert grey[0, 0] == 0 and grey[0, -1] == 255


def test_large_jpeg_is_draft_decoded_then_downscaled_for_hashing():
    big = photo_like(7, 600, 400).resize((2400, 1600), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    decoded = decode_image(data)
    assert (decoded.width, decoded.height) == (2400, 1600)  # full size recorded
    assert decoded.image.size[0] < 2400  # DCT-scaled decode
    assert max(decoded.image.size) >= HASH_MAX_SIDE  # still at least the hash size
    hashes, small = hash_image(data)
    assert max(small.size) == HASH_MAX_SIDE
    assert small.size == (512, 341)  # aspect kept
    full_res = Image.open(io.BytesIO(data)).convert("RGB")
    assert hamming(hashes.pdq, pdq_of(full_res)[0]) <= 16  # draft barely moves the hash


def test_downscale_keeps_small_images_as_they_are():
    img = photo_like(8, 300, 500)
    assert downscale_for_hashing(img) is img
    assert downscale_for_hashing(Image.new("RGB", (1000, 2000))).size == (256, 512)


def test_tiny_image_still_hashes():
    hashes, _ = hash_image(encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"))
    assert len(hashes.pdq) == 64 and hashes.pdq_quality == 0


# ---------------------------------------------------------------------------- records


def test_hash_record_fills_columns_and_pops_the_body(original_jpeg):
    record = {"row_id": "r1", "status": "ok", "mime": "text/html", "_body": original_jpeg}
    out = hash_record(record)
    assert "_body" not in out and "_image" not in out
    assert out["status"] == "ok"
    assert out["mime"] == "image/jpeg"  # what the bytes are, not what the server said
    # Every hash column from the reference libraries, not from hash_image (which
    # hash_record calls, so a bug there would move the expectation too).
    pixels = reference_hash_pixels(original_jpeg)  # 640x480 -> a 512x384 BOX copy
    vector, quality = pdqhash.compute(np.asarray(pixels, dtype=np.uint8))
    expected = {
        "content_md5": hashlib.md5(original_jpeg).hexdigest(),
        "content_sha256": hashlib.sha256(original_jpeg).hexdigest(),
        "bytes": len(original_jpeg),
        "mime": "image/jpeg",
        "width": 640,
        "height": 480,
        "phash": str(imagehash.phash(pixels)),
        "pdq": threatexchange_hex(vector),
        "pdq_quality": int(quality),
    }
    for column, value in expected.items():
        assert out[column] == value, column


def test_hash_record_keeps_the_downscaled_image_when_asked():
    data = encode(photo_like(9, 1200, 800), "PNG")
    out = hash_record({"status": "ok", "_body": data}, keep_image=True)
    image = out["_image"]
    assert image.mode == "RGB" and image.size == (512, 341)


def test_other_statuses_pass_through_without_body():
    record = {"status": "http_error", "http_status": 404, "_body": b"<html>404</html>"}
    out = hash_record(record)
    assert out == {"status": "http_error", "http_status": 404}


def test_ok_record_without_body_is_internal_error():
    out = hash_record({"status": "ok"})
    assert out["status"] == "internal_error" and "_body" in out["error"]


@pytest.mark.parametrize("keep_image", [False, True])
def test_hash_record_leaves_its_input_alone(original_jpeg, keep_image):
    # Beam forbids changing an input element: another consumer may hold the same dict.
    inputs = [
        {"row_id": "ok", "status": "ok", "mime": "text/html", "_body": original_jpeg},
        {"row_id": "bad", "status": "ok", "_body": b"not an image"},
        {"row_id": "gone", "status": "http_error", "_body": b"<html>404</html>"},
        {"row_id": "empty", "status": "ok"},
    ]
    for record in inputs:
        before = dict(record)
        out = hash_record(record, keep_image=keep_image)
        assert record == before, record["row_id"]
        assert out is not record
        assert "_body" not in out


def test_hash_images_transform_counts_statuses(original_jpeg):
    records = [
        {"row_id": "a", "status": "ok", "_body": original_jpeg},
        {"row_id": "b", "status": "ok", "_body": b"not an image"},
        {"row_id": "c", "status": "timeout"},
    ]

    def check(outputs):
        by_id = {r["row_id"]: r for r in outputs}
        assert len(outputs) == 3
        assert by_id["a"]["status"] == "ok" and len(by_id["a"]["pdq"]) == 64
        assert by_id["b"]["status"] == "not_image"
        assert by_id["c"]["status"] == "timeout"
        assert all("_body" not in r for r in outputs)

    pipeline = beam.Pipeline(runner=FnApiRunner())
    outputs = pipeline | beam.Create(records) | HashImages(max_pixels=10_000_000)
    assert_that(outputs, check)
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == "hash"
    }
    assert counters == {"status_ok": 1, "status_not_image": 1, "status_timeout": 1}


def test_a_thin_image_under_the_pixel_cap_is_hashed_in_bounded_memory(tmp_path):
    """A 2,000,000 x 1 PNG is a few KB and under the pixel cap; hashing it must not build
    per-sample operators (gigabytes). Measured in a fresh interpreter: its peak RSS."""
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "thin.png"
    Image.new("L", (2_000_000, 1), 128).save(path)
    code = textwrap.dedent(f"""
        import resource
        from transforms.hashing import hash_record
        from transforms.records import new_record
        record = new_record("r", "http://h/x", "c")
        record.update(status="ok", _body=open({str(path)!r}, "rb").read())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = hash_record(record)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(out["status"], out["width"], out["height"], (after - before) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    status, width, height, grown_mib = done.stdout.split()
    assert (status, width, height) == ("ok", "2000000", "1")
    assert int(grown_mib) < 300  # the per-sample operators took about 3 GB
