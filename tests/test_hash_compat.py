"""The audit's PDQ and pHash stay compatible with the reference hashers.

Takedown lists are made elsewhere (NCMEC, StopNCII, python-threatexchange), so what the
audit computes must land where those tools land. Expected values come from the
reference libraries themselves, on pixels made here with plain Pillow calls: the image
fully decoded, turned upright (EXIF), composited on white, and, when its long side is
over 512 px, box-resampled to 512 (each side rounded), as the reference PDQ tools
reduce before hashing. PDQ: python-threatexchange's ``pdq_from_bytes`` (pdqhash inside);
pHash: ``imagehash.phash``. The audit decodes less (a JPEG's Y channel at a reduced DCT
scale) and never builds that copy, so its bits may differ: by at most 2 on average and
10 for any image (PDQ), and 2 (pHash).
"""
from __future__ import annotations

import io

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_bytes

from transforms.hashing import decode_image, hash_record, pdq_dihedral_of, pdq_of, phash_of

REF_MAX_SIDE = 512
PDQ_MEAN_BITS, PDQ_MAX_BITS = 2.0, 10
PHASH_MAX_BITS = 2
# The pdq kind's quality gate: takedown matching ignores a PDQ below it.
PDQ_QUALITY_GATE = 50
# Pictures with (almost) nothing to hash: flat colour, a few pixels. Their DCT
# coefficients are nearly all equal, so the reference's own bits are float noise and a
# comparison of bits would measure nothing; both sides must call them low quality.
DEGENERATE = ("flat grey", "flat red png", "tiny 8x8", "thin 3x200")


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def photo(seed: int, width: int, height: int, *, shapes: int = 10, blur: float | None = None,
          noise: float = 5) -> Image.Image:
    """Photo-like RGB: smooth light, blurred shapes, sensor noise (``blur`` None: by size)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(width, height, 1)
    arr = np.zeros((height, width, 3))
    for c in range(3):
        a = rng.uniform(-1, 1, 4)
        arr[..., c] = 128 + 60 * np.sin(a[0] * 6 * x + a[1] * 6 * y + a[2] * 3) + 40 * np.cos(a[3] * 9 * x * y)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(shapes):
        x0, y0 = int(rng.integers(0, max(width, 1))), int(rng.integers(0, max(height, 1)))
        size = int(rng.integers(max(width // 20, 1), max(width // 4, 2)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + size, y0 + size], fill=colour)
        else:
            draw.rectangle([x0, y0, x0 + size, y0 + size // 2], fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(max(1.0, width / 400) if blur is None else blur))
    noisy = np.asarray(img).astype(float) + rng.normal(0, noise, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def with_orientation(img: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    """A JPEG (or lossy ``fmt``) stored turned so that EXIF ``orientation`` displays it as ``img``."""
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img.transpose(undo[orientation]), fmt, quality=90, exif=exif.tobytes())


def transparent_png(seed: int, fmt: str = "PNG") -> bytes:
    rgba = photo(seed, 600, 400).convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    ImageDraw.Draw(alpha).ellipse([50, 50, 350, 300], fill=0)  # a hole shows the white
    rgba.putalpha(alpha)
    return encode(rgba, fmt, **({"quality": 85} if fmt == "WEBP" else {}))


def _cases() -> dict[str, bytes]:
    cases = {}
    sizes = [(40, 30), (200, 150), (320, 240), (511, 383), (512, 384), (640, 480), (700, 1050),
             (800, 600), (1000, 750), (1023, 767), (1024, 768), (1100, 733), (1500, 1000),
             (2048, 1536), (3000, 2000), (1200, 300)]
    for i, (w, h) in enumerate(sizes):
        cases[f"jpeg {w}x{h}"] = encode(photo(100 + i, w, h), "JPEG", quality=88)
    base = photo(7, 900, 600)
    cases["jpeg q60 4:2:0"] = encode(base, "JPEG", quality=60)
    cases["jpeg q95 4:4:4"] = encode(base, "JPEG", quality=95, subsampling=0)
    cases["jpeg progressive"] = encode(base, "JPEG", quality=85, progressive=True)
    cases["jpeg grey"] = encode(base.convert("L"), "JPEG", quality=90)
    cases["jpeg grey 1600x1200"] = encode(photo(8, 1600, 1200).convert("L"), "JPEG", quality=90)
    cases["jpeg cmyk"] = encode(base.convert("CMYK"), "JPEG", quality=90)
    cases["png rgb 900x600"] = encode(base, "PNG")
    cases["png rgb 300x200"] = encode(photo(9, 300, 200), "PNG")
    # Wider than the operators' limit: box-copied by Pillow first, as the reference does.
    cases["png rgb 2600x1700"] = encode(photo(17, 2600, 1700), "PNG")
    cases["png palette"] = encode(base.quantize(256), "PNG")
    cases["png grey 16-bit"] = encode(Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257)), "PNG")
    cases["png transparent"] = transparent_png(10)
    cases["webp 1200x800"] = encode(photo(11, 1200, 800), "WEBP", quality=85)
    cases["webp 400x300 lossless"] = encode(photo(12, 400, 300), "WEBP", lossless=True)
    # Lossy WebPs are hashed from libwebp's Y plane; with alpha they go through Pillow.
    cases["webp 700x1050 q50"] = encode(photo(18, 700, 1050), "WEBP", quality=50)
    cases["webp exif orientation 6"] = with_orientation(photo(19, 1000, 750), 6, "WEBP")
    cases["webp transparent"] = transparent_png(20, "WEBP")
    cases["gif palette"] = encode(photo(13, 500, 400).quantize(128), "GIF")
    for orientation in (3, 6, 8):
        cases[f"jpeg exif orientation {orientation}"] = with_orientation(photo(14, 1280, 960), orientation)
    cases["flat grey"] = encode(Image.new("RGB", (800, 600), (128, 128, 128)), "JPEG", quality=90)
    cases["flat red png"] = encode(Image.new("RGB", (300, 300), (200, 30, 30)), "PNG")
    cases["tiny 8x8"] = encode(photo(15, 8, 8), "PNG")
    cases["thin 3x200"] = encode(photo(16, 3, 200), "PNG")
    return cases


CASES = _cases()


def reference_pixels(data: bytes) -> Image.Image:
    """What the reference tools hash, with plain Pillow: full decode, upright, on white,
    box-reduced to at most 512 px on the long side."""
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if img.mode == "I;16" or img.mode.startswith("I"):
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    img = img.convert("RGB")
    w, h = img.size
    if max(w, h) > REF_MAX_SIDE:
        scale = REF_MAX_SIDE / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return img


def reference_hashes(data: bytes) -> tuple[str, int, str]:
    pixels = reference_pixels(data)
    pdq, quality = pdq_from_bytes(encode(pixels, "PNG"))  # python-threatexchange's own path
    return pdq, int(quality), str(imagehash.phash(pixels))


@pytest.fixture(scope="module")
def measured() -> dict[str, tuple[int, int, int, int, int]]:
    """name -> (pdq bits apart, audit quality, reference quality, phash bits apart, ...)."""
    out = {}
    for name, data in CASES.items():
        want_pdq, want_quality, want_phash = reference_hashes(data)
        got = hash_record({"row_id": name, "status": "ok", "_body": data})
        assert got["status"] == "ok", (name, got.get("error"))
        out[name] = (hamming(got["pdq"], want_pdq), got["pdq_quality"], want_quality,
                     hamming(got["phash"], want_phash))
    return out


def test_the_reference_is_the_threatexchange_hasher_on_pdqhash():
    # The two reference libraries agree with each other on the reference pixels, and the
    # photos are hashable: the comparisons below are not between two kinds of noise.
    data = CASES["jpeg 800x600"]
    pixels = np.asarray(reference_pixels(data))
    vector, quality = pdqhash.compute(pixels)
    pdq, te_quality = pdq_from_bytes(encode(Image.fromarray(pixels), "PNG"))
    assert int(pdq, 16) == int("".join(str(int(b)) for b in vector), 2)
    assert te_quality == quality >= PDQ_QUALITY_GATE


def test_pdq_is_within_two_bits_on_average_and_ten_at_most(measured):
    distances = {name: m[0] for name, m in measured.items() if name not in DEGENERATE}
    assert len(distances) >= 30
    assert np.mean(list(distances.values())) <= PDQ_MEAN_BITS, distances
    assert max(distances.values()) <= PDQ_MAX_BITS, distances


def test_pdq_quality_agrees_and_degenerate_pictures_stay_below_the_gate(measured):
    for name, (_, got_q, want_q, _) in measured.items():
        assert abs(got_q - want_q) <= 3, (name, got_q, want_q)
    for name in DEGENERATE:
        assert measured[name][1] < PDQ_QUALITY_GATE and measured[name][2] < PDQ_QUALITY_GATE, name


def test_phash_is_within_two_bits(measured):
    distances = {name: m[3] for name, m in measured.items() if name not in DEGENERATE}
    assert max(distances.values()) <= PHASH_MAX_BITS, distances
    assert np.mean(list(distances.values())) <= 1.0, distances


def test_hashes_do_not_depend_on_whether_pixels_are_kept():
    # Embedding runs decode an RGB copy too; the hashes must be the ones a hash-only
    # run computes, or an audit's matches would depend on its config.
    for name in ("jpeg 1500x1000", "jpeg 800x600", "png rgb 900x600", "jpeg exif orientation 6", "jpeg cmyk",
                 "webp exif orientation 6", "webp transparent"):
        lean = hash_record({"status": "ok", "_body": CASES[name]})
        kept = hash_record({"status": "ok", "_body": CASES[name]}, keep_image=True)
        for column in ("pdq", "pdq_quality", "phash", "width", "height", "content_sha256"):
            assert lean[column] == kept[column], (name, column)
        assert max(kept["_image"].size) <= REF_MAX_SIDE


def test_a_photo_hashed_for_a_request_equals_the_audit():
    # laion-audit request goes through decode_image -> the copy -> pdq_of / phash_of.
    for name in ("jpeg 2048x1536", "jpeg 640x480", "webp 1200x800", "jpeg exif orientation 8",
                 "webp exif orientation 6"):
        data = CASES[name]
        audit = hash_record({"status": "ok", "_body": data})
        decoded = decode_image(data)
        assert pdq_of(decoded.image) == (audit["pdq"], audit["pdq_quality"]), name
        assert phash_of(decoded.image) == audit["phash"], name


def test_dihedral_variants_match_the_reference_dihedral_hashes():
    for name in ("jpeg 1024x768", "png rgb 300x200"):
        data = CASES[name]
        pixels = np.asarray(reference_pixels(data))
        vectors, quality = pdqhash.compute_dihedral(pixels)
        want = ["".join(str(int(b)) for b in v) for v in vectors]
        got = pdq_dihedral_of(decode_image(data).image)
        for (variant, value, got_quality), bits in zip(got, want):
            assert hamming(value, format(int(bits, 2), "064x")) <= PDQ_MAX_BITS, (name, variant)
            assert abs(got_quality - quality) <= 3


def test_an_unrelated_photo_is_far_from_every_reference():
    # Guards the tolerances: a hash that ignored its pixels would be "close" to nothing
    # in particular, and an unrelated photo must stay far from the reference.
    want_pdq, _, want_phash = reference_hashes(CASES["jpeg 800x600"])
    other = hash_record({"status": "ok", "_body": CASES["jpeg 1000x750"]})
    assert hamming(other["pdq"], want_pdq) > 60
    assert hamming(other["phash"], want_phash) > 10
