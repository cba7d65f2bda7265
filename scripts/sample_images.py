"""Sample image makers for tests, the demo and benchmarks.

`make_photo_jpeg` draws photo-like pictures (smooth light, texture, shapes) so that
perceptual hashes and embeddings see realistic, distinct images; `make_bomb_png` writes
a tiny PNG that declares an enormous canvas, the classic decompression bomb.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_photo_jpeg(seed: int, width: int = 320, height: int = 240, quality: int = 85) -> bytes:
    """A deterministic, photo-like JPEG: gradients, blurred shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)

    # Smooth lighting: a random linear gradient per channel plus a soft highlight.
    base = rng.uniform(30, 220, size=3)
    slope = rng.uniform(-90, 90, size=(3, 2))
    cx, cy = rng.uniform(0.2, 0.8, size=2)
    glow = np.exp(-(((x - cx) ** 2) + ((y - cy) ** 2)) / rng.uniform(0.02, 0.2))
    channels = [
        base[c] + slope[c, 0] * x + slope[c, 1] * y + rng.uniform(20, 60) * glow
        for c in range(3)
    ]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")

    # Objects: a few filled shapes, blurred so edges look optical rather than drawn.
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, x1 = sorted(rng.uniform(0, width, size=2))
        y0, y1 = sorted(rng.uniform(0, height, size=2))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.8, 2.5))))

    # Sensor noise.
    noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 6, size=(height, width, 3))
    image = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")

    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def make_bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid single-colour PNG of ``width`` x ``height`` pixels, a few tens of KiB.

    One bit per pixel keeps the raw stream small enough to compress quickly; decoders
    still see (and would allocate for) the full declared canvas.
    """
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits, all black
    compressor = zlib.compressobj(9)
    rows_per_chunk = max(1, (1 << 20) // len(row))
    chunk = row * rows_per_chunk
    parts = []
    remaining = height
    while remaining > 0:
        n = min(rows_per_chunk, remaining)
        parts.append(compressor.compress(chunk if n == rows_per_chunk else row * n))
        remaining -= n
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def make_png(seed: int, width: int = 64, height: int = 48) -> bytes:
    """A small deterministic RGB PNG (noise), for routes that need a second format."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    return out.getvalue()
