"""The demo audit, with no network: make a LAION-style dataset, host its images on
127.0.0.1, and run `laion-audit run configs/demo.yaml` over it.

    python scripts/demo.py [--rows 300] [--out demo-out]

The dataset mixes photo-like JPEGs and PNGs of several sizes with the failures a real
scrape has: dead links, HTML pages where images were, truncated files, empty and
non-http URLs. Every row must come out of the audit with exactly one status.

It also tells the takedown story. A person finds her photo in the dataset. On her own
machine she runs `laion-audit request my_photo.jpg`, which writes hashes only. The
dataset holds resized, re-encoded, mirrored, brightened and PNG copies of the photo at
other URLs, and the audit removes exactly those rows and no others.
"""
from __future__ import annotations

import argparse
import io
import random
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.cli import main as cli_main  # noqa: E402
from scripts.image_host import ImageHost  # noqa: E402
from scripts.sample_images import make_photo_jpeg, make_png  # noqa: E402

SIZES = [(320, 240), (640, 480), (800, 600), (1024, 768), (480, 640), (1200, 800)]
SUBJECTS = ["a red bicycle", "mountain lake at dawn", "city street at night", "bowl of fruit",
            "old stone bridge", "sailing boat", "autumn forest path", "desert dunes", "a tabby cat",
            "wooden cabin", "market stall", "rainy window"]
STYLES = ["photo of", "stock image:", "wallpaper", "picture of", "closeup of", "HD photo"]


def _caption(rng: random.Random) -> str:
    return f"{rng.choice(STYLES)} {rng.choice(SUBJECTS)}"


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def copies_of(photo: bytes) -> dict[str, bytes]:
    """The ways a scraped photo reappears: other sizes, encodings, a mirror image."""
    image = Image.open(io.BytesIO(photo)).convert("RGB")
    half = image.resize((image.width // 2, image.height // 2), Image.Resampling.BILINEAR)
    return {
        "resized.jpg": _encode(half, "JPEG", quality=85),
        "reencoded.jpg": _encode(image, "JPEG", quality=55),
        "mirrored.jpg": _encode(ImageOps.mirror(image), "JPEG", quality=85),
        "brighter.jpg": _encode(ImageEnhance.Brightness(image).enhance(1.25), "JPEG", quality=85),
        "converted.png": _encode(half, "PNG"),
    }


def make_dataset(out: Path, host: ImageHost, rows: int, copies: dict[str, bytes],
                 seed: int = 7) -> tuple[Path, dict]:
    """Write images under the host's root and the metadata parquet; return its path and
    the number of rows of each kind (what the audit should find)."""
    rng = random.Random(seed)
    images = host.root
    urls, captions, widths, heights, expected = [], [], [], [], {}

    def add(url, caption, size, kind):
        urls.append(url)
        captions.append(caption)
        widths.append(size[0] if size else None)
        heights.append(size[1] if size else None)
        expected[kind] = expected.get(kind, 0) + 1

    broken = max(rows // 10, 6)
    for i in range(rows - broken):
        size = SIZES[i % len(SIZES)]
        if i % 12 == 5:
            name, data = f"img{i:05d}.png", make_png(i, *size)
        else:
            name, data = f"img{i:05d}.jpg", make_photo_jpeg(i, *size, quality=rng.choice([75, 85, 92]))
        (images / name).write_bytes(data)
        add(host.url(name), _caption(rng), size, "ok")

    (images / "page.html").write_text("<html><body>this page moved</body></html>")
    truncated = make_photo_jpeg(99_999, 640, 480)
    (images / "truncated.jpg").write_bytes(truncated[: len(truncated) // 3])
    failures = [
        (lambda k: host.url(f"gone{k}.jpg"), "http_error"),       # 404
        (lambda k: host.url("page.html"), "not_image"),            # an HTML page
        (lambda k: host.url("truncated.jpg"), "decode_error"),     # cut-off download
        (lambda k: None, "invalid_url"),                           # null URL
        (lambda k: f"ftp://files.example/{k}.jpg", "invalid_url"),  # not http(s)
        (lambda k: "", "invalid_url"),                             # empty URL
    ]
    for k in range(broken):
        make_url, kind = failures[k % len(failures)]
        add(make_url(k), _caption(rng), None, kind)

    # The person's photo, copied around the web under other names.
    for i, (name, data) in enumerate(copies.items()):
        (images / f"repost{i}_{name}").write_bytes(data)
        add(host.url(f"repost{i}_{name}"), "patient photo before and after", None, "requested_copy")

    table = pa.table(
        {
            "SAMPLE_ID": pa.array(range(len(urls)), pa.int64()),
            "URL": pa.array(urls, pa.string()),
            "TEXT": pa.array(captions, pa.string()),
            "WIDTH": pa.array(widths, pa.int32()),
            "HEIGHT": pa.array(heights, pa.int32()),
            "similarity": pa.array([round(rng.uniform(0.28, 0.4), 4) for _ in urls], pa.float64()),
            "punsafe": pa.array([round(rng.uniform(0, 0.1), 4) for _ in urls], pa.float32()),
            "pwatermark": pa.array([round(rng.uniform(0, 0.5), 4) for _ in urls], pa.float32()),
            "LICENSE": pa.array(["?"] * len(urls), pa.string()),
        }
    )
    path = out / "data" / "rows.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=64)
    return path, expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--out", default="demo-out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "host").mkdir(parents=True)
    (out / "private").mkdir()

    # On the person's own machine: her photo never leaves it, only its hashes do.
    photo = out / "private" / "my_photo.jpg"
    photo.write_bytes(make_photo_jpeg(424_242, 900, 700, quality=92))
    request = out / "private" / "takedown_request.parquet"
    print("== 1. the person hashes her own photo into a takedown request")
    code = cli_main(["request", str(photo), "--out", str(request), "--list-id", "request-0001",
                     "--reason", "clinical photo, published without consent"])
    if code:
        return code

    print("\n== 2. the audit: fetch, hash, match the request, write outputs")
    with ImageHost(out / "host") as host:
        dataset, expected = make_dataset(out, host, args.rows, copies_of(photo.read_bytes()))
        print(f"dataset: {dataset} ({sum(expected.values())} rows; expected {expected})")
        print(f"image host: {host.url('')}")
        code = cli_main([
            "run", "configs/demo.yaml",
            "--set", f"dataset.input={dataset}",
            "--set", f"output.path={out / 'audit'}",
            "--set", f"takedown.lists=[{request}]",
        ])
    if code:
        return code

    audit = out / "audit"
    removals = pq.read_table(audit / "removals").to_pylist()
    removed_urls = sorted({r["url"].rsplit("/", 1)[1] for r in removals})
    print("\n== 3. what the request removed")
    for name in removed_urls:
        print(f"  removed {name}")
    copies = expected.get("requested_copy", 0)
    verdict = "exactly the copies of her photo" if all("repost" in n for n in removed_urls) \
        and len(removed_urls) == copies else "NOT exactly the copies (check the removals)"
    print(f"  {len(removed_urls)} rows removed of {copies} copies in the dataset: {verdict}")
    print("\noutputs:")
    print(f"  audit table:  {audit / 'audit'}/*.parquet")
    print(f"  removals:     {audit / 'removals'}/*.parquet   (operator only: says where the images are)")
    print(f"  published:    {audit / 'published'}/*.parquet  (url_sha256 + row key: safe to post)")
    print(f"  clean copy:   {audit / 'clean'}/rows.parquet")
    print(f"  summary:      {audit / 'report' / 'summary.json'}")
    return 0 if verdict.startswith("exactly") else 1


if __name__ == "__main__":
    sys.exit(main())
