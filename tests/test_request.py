"""Takedown requests: hashes only, the audit's own hashing, copies and flips still match."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from scripts.sample_images import make_photo_jpeg
from transforms import hashing
from transforms.request import EMBEDDING_WARNING, request_entries, write_request
from transforms.takedown import TakedownIndex, load_list


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def audited(data: bytes) -> dict:
    """The record the audit's hash stage makes from fetched bytes."""
    return hashing.hash_record({"row_id": "r", "status": "ok", "_body": data}, keep_image=True)


def matches_of(index: TakedownIndex, data: bytes) -> list[dict]:
    return index.match_batch([audited(data)])[0]


@pytest.fixture(scope="module")
def original() -> bytes:
    return make_photo_jpeg(0, 640, 480)


@pytest.fixture(scope="module")
def request_index(original) -> TakedownIndex:
    entries, _ = request_entries([original], "req-1", reason="my photo")
    return TakedownIndex(entries)


def test_entries_hash_the_photo_exactly_as_the_audit_does(original):
    entries, warnings = request_entries([original], "req-1", reason="my photo")
    record = audited(original)
    by_id = {e.entry_id: e for e in entries}
    assert by_id["req-1-1-md5"].value == record["content_md5"]
    assert by_id["req-1-1-sha256"].value == record["content_sha256"]
    assert by_id["req-1-1-phash"].value == record["phash"]
    assert by_id["req-1-1-pdq-original"].value == record["pdq"]
    pdq = [e for e in entries if e.kind == "pdq"]
    assert 2 <= len(pdq) <= 8 and len({e.value for e in pdq}) == len(pdq)
    assert all(e.quality == record["pdq_quality"] and e.reason == "my photo" for e in pdq)
    assert all(e.list_id == "req-1" and e.max_distance is None for e in entries)
    assert warnings == []


def test_the_exact_file_matches_on_every_kind(request_index, original):
    kinds = {m["kind"] for m in matches_of(request_index, original)}
    assert kinds == {"md5", "sha256", "phash", "pdq"}


def test_altered_copies_match_and_unrelated_photos_do_not(request_index, original):
    image = Image.open(io.BytesIO(original)).convert("RGB")
    brighter = np.clip(np.asarray(image, dtype=np.int16) + 30, 0, 255).astype(np.uint8)
    copies = {
        "half size": encode(image.resize((320, 240), Image.Resampling.LANCZOS), quality=90),
        "jpeg q50": encode(image, quality=50),
        "brightness +30": encode(Image.fromarray(brighter)),
        "png": encode(image, "PNG"),
    }
    for name, data in copies.items():
        matches = matches_of(request_index, data)
        assert "req-1-1-pdq-original" in {m["entry_id"] for m in matches}, name
        assert not any(m["kind"] in ("md5", "sha256") for m in matches), name
    for seed in range(1, 9):
        assert matches_of(request_index, make_photo_jpeg(seed, 640, 480)) == [], seed


def test_mirrored_and_rotated_copies_match_through_the_dihedral_entries(original):
    entries, _ = request_entries([original], "req-1")
    with_variants = TakedownIndex(entries)
    original_only = TakedownIndex([e for e in entries if e.kind != "pdq" or e.entry_id.endswith("-original")])
    image = Image.open(io.BytesIO(original)).convert("RGB")
    flipped = {
        "mirror": encode(ImageOps.mirror(image)),
        "rot90": encode(image.rotate(90, expand=True)),
        "upside down": encode(ImageOps.flip(image)),
    }
    for name, data in flipped.items():
        pdq_hits = [m for m in matches_of(with_variants, data) if m["kind"] == "pdq"]
        assert pdq_hits and all(m["entry_id"] != "req-1-1-pdq-original" for m in pdq_hits), name
        assert not [m for m in matches_of(original_only, data) if m["kind"] == "pdq"], name
    unrelated = encode(ImageOps.mirror(Image.open(io.BytesIO(make_photo_jpeg(5, 640, 480)))))
    assert matches_of(with_variants, unrelated) == []


def test_low_quality_photo_is_kept_with_a_warning(tmp_path):
    flat = np.full((480, 640, 3), 120, dtype=np.uint8)
    flat[:, :, 1] += np.linspace(0, 3, 640, dtype=np.uint8)[None, :]
    sharp = make_photo_jpeg(3, 640, 480)
    entries, warnings = request_entries([sharp, encode(Image.fromarray(flat), "PNG")], "req-2")
    quality = next(e.quality for e in entries if e.entry_id == "req-2-2-pdq-original")
    assert quality < 50
    assert warnings == [f"photo 2: PDQ quality {quality} < 50: too flat to match safely"]
    assert {e.kind for e in entries if e.entry_id.startswith("req-2-2-")} == {"md5", "sha256", "phash", "pdq"}
    path = str(tmp_path / "request.csv")
    write_request(entries, path)
    loaded = load_list(path)
    assert loaded == entries
    assert {e.entry_id.split("-")[2] for e in loaded if e.low_quality} == {"2"}


def test_undecodable_photo_keeps_its_exact_hashes():
    entries, warnings = request_entries([b"<html>not a photo</html>"], "req-3")
    assert [e.entry_id for e in entries] == ["req-3-1-md5", "req-3-1-sha256"]
    assert warnings == ["photo 1: not usable as an image (not_image): only its exact-copy hashes "
                        "(md5, sha256) are in the request"]


def tiny_embedding(image: Image.Image) -> np.ndarray:
    """A deterministic pixel embedding: the photo's 8x8 greyscale thumbnail, centred."""
    thumb = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    return (thumb - thumb.mean()).reshape(-1)


def test_embedding_entry_matches_and_warns(original):
    entries, warnings = request_entries([original], "req-4", with_embedding=True, embed_fn=tiny_embedding)
    clip = [e for e in entries if e.kind == "clip"]
    assert [e.entry_id for e in clip] == ["req-4-1-clip"]
    assert warnings == [EMBEDDING_WARNING]
    index = TakedownIndex(clip)
    copy = audited(encode(Image.open(io.BytesIO(original)), quality=60))
    other = audited(make_photo_jpeg(7, 640, 480))
    rows = [{"_embedding": tiny_embedding(r.pop("_image"))} for r in (copy, other)]
    assert [[m["entry_id"] for m in r] for r in index.match_batch(rows)] == [["req-4-1-clip"], []]
    with pytest.raises(ValueError, match="embed_fn"):
        request_entries([original], "req-4", with_embedding=True)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "parquet"])
def test_request_file_holds_no_name_path_or_exif(tmp_path, ext):
    folder = tmp_path / "patient_records_ward7"
    folder.mkdir()
    photo = folder / "jane_doe_postop.jpg"
    image = Image.open(io.BytesIO(make_photo_jpeg(4, 640, 480)))
    exif = Image.Exif()
    exif[0x013B] = "Jane Doe"  # Artist
    exif[0x010E] = "post-op day 3, St Example clinic"  # ImageDescription
    image.save(photo, format="JPEG", exif=exif.tobytes())
    assert b"Jane Doe" in photo.read_bytes()

    entries, _ = request_entries([str(photo)], "req-5")
    out = tmp_path / f"request.{ext}"
    write_request(entries, str(out))
    data = out.read_bytes().lower()
    for secret in (b"jane", b"postop", b"post-op", b"clinic", b"patient_records_ward7", str(tmp_path).lower().encode()):
        assert secret not in data, secret
    assert len(load_list(str(out))) == len(entries)
