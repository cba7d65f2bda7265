"""A person's photo as ``laion-audit request`` hashes it, and the values kinds make of it."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from transforms import hashing

PhotoInput = bytes | bytearray | memoryview | str | os.PathLike


def read_photo(photo: PhotoInput) -> bytes:
    """A photo's bytes, given as bytes or as a path."""
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return bytes(photo)
    with open(photo, "rb") as fh:
        return fh.read()


class PhotoValue(NamedTuple):
    """One value a kind computes from a photo: ``variant`` names one of several (a PDQ
    rotation), ``quality`` is the hash's quality where the kind has one."""

    value: str
    variant: str | None = None
    quality: int | None = None


class Photo:
    """A photo as ``laion-audit request`` hashes it: its bytes, decoded and downscaled
    once on first use, exactly as the audit does (``hashing.decode_image`` ->
    ``downscale_for_hashing``). ``small`` raises ``hashing.ImageError`` for a file that
    is no usable image (every time it is asked). ``embed_fn`` (PIL image -> vector) is
    what embedding kinds use; None: none asked for."""

    def __init__(self, data: bytes, max_pixels: int = hashing.DEFAULT_MAX_PIXELS,
                 embed_fn: Callable[[Any], np.ndarray] | None = None) -> None:
        self.data = bytes(data)
        self.max_pixels = max_pixels
        self.embed_fn = embed_fn
        self._digests: dict[str, str] = {}
        self._small: Any = None
        self._error: hashing.ImageError | None = None

    def digest(self, algorithm: str) -> str:
        """hashlib's hex digest of the file's bytes ("md5", "sha256"), as the audit's
        content_md5 / content_sha256 columns hold it."""
        if algorithm not in self._digests:
            self._digests[algorithm] = hashlib.new(algorithm, self.data).hexdigest()
        return self._digests[algorithm]

    @property
    def small(self):
        if self._error is not None:
            raise self._error
        if self._small is None:
            try:
                decoded = hashing.decode_image(self.data, self.max_pixels)
            except hashing.ImageError as err:
                self._error = err
                raise
            self._small = hashing.downscale_for_hashing(decoded.image)
        return self._small


__all__ = ["Photo", "PhotoInput", "PhotoValue", "read_photo"]
