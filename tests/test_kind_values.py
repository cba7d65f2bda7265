"""Hash kinds: value validation, URL normalisation, distances, the registry, photo values."""
from __future__ import annotations

import base64
import hashlib
import io
import math

import faiss
import numpy as np
import pytest
from PIL import Image, ImageDraw

from transforms import hashing
from transforms.takedown.kinds import KINDS, Kind, PdqKind, Thresholds, kind_of
from transforms.takedown.values import clip_from_value, clip_to_value, hamming_hex, hex_to_bits_uint8
from transforms.urls import normalize_url, url_sha256_of


def scene(seed: int, size: tuple[int, int] = (480, 360)) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    base = np.stack([128 + 100 * np.sin(rng.uniform(2, 8) * x + rng.uniform(2, 8) * y + c) for c in range(3)], -1)
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        draw.ellipse([x0, y0, x0 + 80, y0 + 60], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --------------------------------------------------------------------------- registry


def test_registry_has_one_signal_type_per_kind():
    assert set(KINDS) == {"url", "url_sha256", "md5", "sha256", "pdq", "phash", "clip"}
    for kind, signal in KINDS.items():
        assert isinstance(signal, Kind)
        assert signal.name == kind
        assert kind_of(kind) is signal
    assert kind_of(" PDQ ") is KINDS["pdq"]
    exact = {k for k, s in KINDS.items() if s.exact}
    assert exact == {"url", "url_sha256", "md5", "sha256"}


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown kind 'tlsh'; known: url, url_sha256, md5"):
        kind_of("tlsh")


def test_default_thresholds():
    assert kind_of("pdq").default_threshold == 31
    assert kind_of("phash").default_threshold == 8
    assert kind_of("clip").default_threshold == pytest.approx(0.9)
    assert all(KINDS[k].default_threshold is None for k in ("url", "md5", "sha256", "url_sha256"))


# ------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kind", "digits"), [("md5", 32), ("sha256", 64), ("url_sha256", 64), ("pdq", 64), ("phash", 16)]
)
def test_hex_kinds_normalise_case_and_blanks(kind, digits):
    value = "Ab" * (digits // 2)
    assert kind_of(kind).validate(f"  {value}\n") == value.lower()


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("md5", "abc", r"md5 value must be 32 hex digits, got 3 characters"),
        ("md5", "g" * 32, r"md5 value must be 32 hex digits, found non-hex characters"),
        ("sha256", "a" * 63, r"sha256 value must be 64 hex digits, got 63 characters"),
        ("url_sha256", "a" * 65, r"url_sha256 value must be 64 hex digits, got 65"),
        ("pdq", "0x" + "a" * 62, r"pdq value must be 64 hex digits, found non-hex"),
        ("pdq", "a" * 32, r"pdq value must be 64 hex digits, got 32 characters"),
        ("phash", "a" * 64, r"phash value must be 16 hex digits, got 64 characters"),
        ("phash", 12345, r"phash value must be a string"),
        ("url", "example.com/photo.jpg", r"absolute URL with a scheme and a host"),
        ("url", "", r"url value is empty"),
        ("url", "http://a.com:99999/x", r"url value is malformed"),
        ("url", "http://a.com/x\nFoo: bar", r"control characters"),
        ("clip", "not base64!", r"base64 of little-endian float32"),
        ("clip", base64.b64encode(b"abc").decode(), r"not a whole number of float32"),
        ("clip", base64.b64encode(np.zeros(4, "<f4").tobytes()).decode(), r"zero vector"),
        ("clip", base64.b64encode(np.array([1, np.nan], "<f4").tobytes()).decode(), r"NaN or infinite"),
        ("clip", base64.b64encode(np.ones(1, "<f4").tobytes()).decode(), r"at least 2 dimensions"),
    ],
)
def test_validation_errors_say_what_is_wrong(kind, value, message):
    with pytest.raises(ValueError, match=message):
        kind_of(kind).validate(value)


def test_validation_errors_do_not_echo_the_value():
    secret = "f00d" * 15 + "zzzz"
    with pytest.raises(ValueError) as err:
        kind_of("pdq").validate(secret)
    assert secret not in str(err.value) and "f00d" not in str(err.value)


# ------------------------------------------------------------------------------- urls


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("HTTP://Example.COM/Photo.JPG", "http://example.com/Photo.JPG"),
        ("https://example.com:443/a?b=C&d=e", "https://example.com/a?b=C&d=e"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:443/a", "http://example.com:443/a"),
        ("https://example.com:8443/a", "https://example.com:8443/a"),
        ("https://example.com/a#section-2", "https://example.com/a"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com?x=1", "https://example.com/?x=1"),
        ("  https://example.com/a%20b  ", "https://example.com/a%20b"),
        ("https://BÜCHER.example/bild.png", "https://xn--bcher-kva.example/bild.png"),
        ("https://user:PW@Example.com:443/x", "https://user:PW@example.com/x"),
        ("http://[2001:DB8::1]:80/x", "http://[2001:db8::1]/x"),
        ("http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
    ],
)
def test_url_normalisation(raw, normalised):
    assert normalize_url(raw) == normalised
    assert normalize_url(normalised) == normalised  # idempotent
    assert kind_of("url").validate(raw) == normalised


def test_url_sha256_is_of_the_normalised_url():
    a = url_sha256_of("HTTPS://Example.com:443/img.jpg#top")
    assert a == hashlib.sha256(b"https://example.com/img.jpg").hexdigest()
    assert a == url_sha256_of("https://example.com/img.jpg")
    assert url_sha256_of("https://example.com/IMG.jpg") != a  # paths are case-sensitive
    assert url_sha256_of("not a url ") == hashlib.sha256(b"not a url").hexdigest()
    assert url_sha256_of(None) is None
    assert kind_of("url_sha256").validate(a.upper()) == a


# ---------------------------------------------------------------------- record values


def test_record_values_per_kind():
    emb = np.array([3.0, 4.0], dtype=np.float32)
    record = {
        "url": "HTTP://Example.com/a.jpg#x",
        "url_sha256": "ab" * 32,
        "content_md5": "cd" * 16,
        "content_sha256": "ef" * 32,
        "pdq": "01" * 32,
        "phash": "23" * 8,
        "_embedding": emb,
    }
    assert kind_of("url").record_value(record) == "http://example.com/a.jpg"
    assert kind_of("url_sha256").record_value(record) == "ab" * 32
    assert kind_of("md5").record_value(record) == "cd" * 16
    assert kind_of("sha256").record_value(record) == "ef" * 32
    assert kind_of("pdq").record_value(record) == "01" * 32
    assert kind_of("phash").record_value(record) == "23" * 8
    np.testing.assert_allclose(kind_of("clip").record_value(record), [0.6, 0.8], rtol=1e-6)

    empty = {"url": "no scheme", "pdq": None, "content_md5": None}
    for kind in KINDS:
        assert kind_of(kind).record_value(empty) is None, kind


# ---------------------------------------------------------------------------- distances


def test_hamming_hex_and_packed_bits_agree_with_faiss():
    rng = np.random.default_rng(5)
    hashes = [f"{int(rng.integers(0, 2**63)):016x}" * 4 for _ in range(6)]
    assert hamming_hex("8" + "0" * 63, "0" * 64) == 1
    assert hamming_hex("f" * 16, "0" * 16) == 64
    with pytest.raises(ValueError, match="different lengths"):
        hamming_hex("ff", "fff")

    packed = hex_to_bits_uint8(hashes)
    assert packed.shape == (6, 32) and packed.dtype == np.uint8
    np.testing.assert_array_equal(hex_to_bits_uint8(hashes[0]), packed[0])
    assert hex_to_bits_uint8("8001").tolist() == [0x80, 0x01]
    index = faiss.IndexBinaryFlat(256)
    index.add(packed)
    distances, ids = index.search(packed[:1], 6)
    for d, i in zip(distances[0], ids[0]):
        assert d == hamming_hex(hashes[0], hashes[i])


def test_distance_kinds_compare_with_their_thresholds():
    pdq = kind_of("pdq")
    a = "0" * 64
    b31 = f"{(1 << 31) - 1:064x}"  # 31 bits set
    b32 = f"{(1 << 32) - 1:064x}"
    assert pdq.distance(a, b31) == 31
    assert pdq.matches(a, b31) and not pdq.matches(a, b32)
    assert pdq.matches(a, b32, threshold=32)

    phash = kind_of("phash")
    assert phash.matches("0" * 16, "00000000000000ff") and not phash.matches("0" * 16, "00000000000001ff")

    md5 = kind_of("md5")
    assert md5.distance("a" * 32, "a" * 32) == 0 and md5.matches("a" * 32, "a" * 32)
    assert math.isinf(md5.distance("a" * 32, "b" * 32)) and not md5.matches("a" * 32, "b" * 32)


def test_clip_cosine_is_the_similarity_and_distance_is_one_minus_it():
    clip = kind_of("clip")
    x = clip_to_value([1.0, 0.0, 0.0])
    near = clip_to_value([0.95, 0.3, 0.0])
    far = clip_to_value([0.0, 1.0, 0.0])
    assert clip.cosine(x, x) == pytest.approx(1.0)
    assert clip.cosine(x, far) == pytest.approx(0.0, abs=1e-7)
    assert clip.cosine(x, np.array([0.95, 0.3, 0.0])) == pytest.approx(0.95 / math.hypot(0.95, 0.3), rel=1e-6)
    # distance means what matches.distance means: 1 - cosine, smaller is closer
    assert clip.distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert clip.distance(x, far) == pytest.approx(1.0)
    assert clip.distance(x, near) == pytest.approx(1 - clip.cosine(x, near), abs=1e-6)
    assert clip.matches(x, near) and not clip.matches(x, far)
    assert not clip.matches(x, near, threshold=0.99)
    with pytest.raises(ValueError, match="3 and 2 dimensions"):
        clip.distance(x, clip_to_value([1.0, 0.0]))


def test_clip_value_round_trip_is_unit_float32_base64():
    rng = np.random.default_rng(2)
    vec = rng.normal(size=512).astype(np.float32) * 7
    value = clip_to_value(vec)
    raw = base64.b64decode(value)
    assert len(raw) == 512 * 4
    back = clip_from_value(value)
    assert back.dtype == np.float32 and back.shape == (512,)
    np.testing.assert_allclose(back, vec / np.linalg.norm(vec), rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(back) == pytest.approx(1.0, abs=1e-6)
    assert clip_to_value(back) == value
    assert kind_of("clip").validate(base64.b64encode(vec.astype("<f4").tobytes()).decode()) == value


# ----------------------------------------------------------------------------- photos


def test_photo_hashes_equal_the_audit_hashes(tmp_path):
    data = jpeg(scene(1, (1600, 1200)))  # big enough to take the draft + downscale path
    path = tmp_path / "me.jpg"
    path.write_bytes(data)
    audit = hashing.hash_record({"status": "ok", "_body": data})
    for kind, column in (("md5", "content_md5"), ("sha256", "content_sha256"),
                         ("pdq", "pdq"), ("phash", "phash")):
        signal = kind_of(kind)
        assert signal.can_hash_photo
        assert signal.from_photo(data) == [audit[column]], kind
        assert signal.from_photo(path) == [audit[column]], kind
        assert signal.from_photo(str(path)) == [audit[column]], kind


def test_pdq_from_photo_with_flips_matches_a_mirrored_copy():
    img = scene(3)
    variants = kind_of("pdq").from_photo(jpeg(img), flips=True)
    assert 2 <= len(variants) <= 8
    mirrored = hashing.hash_record({"status": "ok", "_body": jpeg(img.transpose(Image.Transpose.FLIP_LEFT_RIGHT))})
    pdq = kind_of("pdq")
    assert min(pdq.distance(v, mirrored["pdq"]) for v in variants) <= 31


def test_pdq_from_a_flat_photo_is_refused():
    with pytest.raises(ValueError, match=r"PDQ quality 0 is below 50"):
        PdqKind().from_photo(jpeg(Image.new("RGB", (300, 300), (120, 120, 120))))


def test_kinds_without_a_photo_hash_say_so():
    for kind in ("url", "url_sha256", "clip"):
        signal = kind_of(kind)
        assert not signal.can_hash_photo
        with pytest.raises(NotImplementedError, match=f"kind '{kind}' cannot be computed from a photo"):
            signal.from_photo(b"\xff\xd8")


def test_photo_that_is_not_an_image_raises_the_hashing_error():
    with pytest.raises(hashing.NotAnImage):
        kind_of("pdq").from_photo(b"%PDF-1.7 not a photo")


def test_thresholds_default_to_each_kind_and_take_overrides():
    defaults = Thresholds()
    assert defaults.to_dict() == {"pdq": 31.0, "phash": 8.0, "clip": 0.9}
    changed = defaults.replace(pdq=19, clip=None)
    assert changed.to_dict() == {"pdq": 19.0, "phash": 8.0, "clip": 0.9}
    assert changed == Thresholds({"pdq": 19}) and hash(changed) == hash(Thresholds(pdq=19))
    assert changed != defaults


@pytest.mark.parametrize("kind", ["md5", "url", "nope"])
def test_thresholds_exist_only_for_distance_kinds(kind):
    with pytest.raises(ValueError, match=f"no threshold for kind '{kind}'"):
        Thresholds({kind: 1})


@pytest.mark.parametrize("exact", [False, True])
def test_hex_codes_of_an_arrow_column_equal_those_of_its_cells_as_a_list(exact):
    """Rows reach the Hamming kinds as Arrow columns in a rematch and as lists elsewhere:
    the same cells give the same (position, code) pairs either way, odd cells included
    (blanks between bytes, upper case, wrong length, not hex, empty, not text)."""
    import pyarrow as pa

    from transforms.takedown.values import hex_codes

    good = "0f" * 8
    cells = [None, good, good.upper(), f"{good[:8]} {good[8:]}", good[:-2], "zz" * 8, "", good + "0",
             f"  {good}", "1e" * 8]
    as_list = hex_codes(cells, 8, exact)
    assert as_list[0].tolist() == ([1, 2, 3, 8, 9] if not exact else [1, 2, 9])
    for column in (pa.array(cells), pa.chunked_array([cells[:4], cells[4:]]), pa.array(cells, pa.large_string())):
        positions, codes = hex_codes(column, 8, exact)
        order = np.argsort(positions)
        assert positions[order].tolist() == as_list[0].tolist()
        assert np.array_equal(codes[order], as_list[1])
    positions, codes = hex_codes(pa.array([good] * 3), 8, exact)  # the usual column: decoded in bulk
    assert positions.tolist() == [0, 1, 2] and codes.shape == (3, 8)
    assert len(hex_codes(pa.nulls(4, pa.string()), 8, exact)[0]) == 0
    assert len(hex_codes(pa.array([1, 2]), 8, exact)[0]) == 0


def test_exact_digest_rows_match_the_same_from_arrow_columns_and_from_lists():
    """md5 / sha256 / url_sha256 rows are looked up as packed digests: a digest with
    blanks around it or in upper case matches as a list value does, from an Arrow column
    as from a list; a url_sha256 list matches rows that carry only their URL."""
    import pyarrow as pa

    from transforms.takedown import TakedownEntry, TakedownIndex

    md5 = hashlib.md5(b"photo").hexdigest()
    url = "http://example.com/a.jpg"
    index = TakedownIndex([TakedownEntry("l", "m", "md5", md5.upper()),
                           TakedownEntry("l", "u", "url_sha256", url_sha256_of(url))])
    cells = [None, md5, f"  {md5.upper()}\n", md5[:-1], "", f"{md5[:8]} {md5[8:]}", "zz" * 16]
    expected = [[], ["m"], ["m"], [], [], [], []]
    for column in (cells, pa.array(cells), pa.chunked_array([cells[:3], cells[3:]])):
        got = index.match_columns({"content_md5": column}, rows=len(cells))
        assert [[m["entry_id"] for m in ms] for ms in got] == expected
    urls = [url, "http://example.com/other.jpg", None]
    for column in (urls, pa.array(urls)):
        got = index.match_columns({"url": column}, rows=3)
        assert [[m["entry_id"] for m in ms] for ms in got] == [["u"], [], []]


def test_an_exact_entry_that_is_not_a_digest_is_refused_when_indexed():
    from transforms.takedown import TakedownEntry, TakedownIndex

    with pytest.raises(ValueError, match=r"entry 'bad' of list 'l': md5 value is not 32 hex digits"):
        TakedownIndex([TakedownEntry("l", "ok", "md5", "ab" * 16), TakedownEntry("l", "bad", "md5", "xyz")])
