"""Privacy-preserving takedown requests: a person's own photos in, a hashes-only list out.

``laion-audit request PHOTO...`` runs on the person's own machine. For each photo it
makes list entries (``transforms.takedown`` format) of:

* ``md5`` and ``sha256`` of the file's bytes (exact copies),
* ``phash`` and ``pdq`` of the pixels, computed by the audit's own path
  (``hashing.decode_image`` -> ``hashing.downscale_for_hashing`` -> ``phash_of`` /
  ``pdq_dihedral_of``), so both sides of a match hash the same pixels,
* the PDQ of each of the photo's eight rotations / mirror images that differs from the
  others, as separate ``pdq`` entries, so a flipped or rotated copy still matches,
* optionally (``with_embedding``) a ``clip`` embedding made by the caller's ``embed_fn``.

Entry ids are opaque: ``<list_id>-<photo number>-<kind>[-<variant>]``. No file name,
path, EXIF field or other metadata of the photo goes into the request.

A photo whose PDQ quality is below 50 (flat, featureless) keeps its entries; the
request returns a warning instead, and the entries carry the quality so that list
operators see them flagged as ``low_quality``. Dropping them would silently lose the
exact hashes and pHash, which are still useful.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from transforms import hashing, signals
from transforms.takedown import TakedownEntry, write_list

PhotoInput = bytes | bytearray | memoryview | str | os.PathLike

EMBEDDING_WARNING = (
    "the clip entries are image embeddings: an embedding reveals much more about a "
    "photo than a hash does (its content can be searched for and roughly described); "
    "send it only to a list operator you trust"
)


def _photo_bytes(photo: PhotoInput) -> bytes:
    if isinstance(photo, (bytes, bytearray, memoryview)):
        return bytes(photo)
    with open(photo, "rb") as fh:
        return fh.read()


def request_entries(
    photos: Sequence[PhotoInput],
    list_id: str,
    reason: str | None = None,
    with_embedding: bool = False,
    embed_fn: Callable[[Image.Image], np.ndarray] | None = None,
) -> tuple[list[TakedownEntry], list[str]]:
    """Takedown entries for the given photos (bytes or paths), and warnings for the person.

    Photos are numbered from 1 in entry ids and warnings, in the order given. A photo
    that does not decode still gives its md5 / sha256 entries, with a warning.
    """
    list_id = (list_id or "").strip()
    if not list_id:
        raise ValueError("a takedown request needs a list_id")
    if with_embedding and embed_fn is None:
        raise ValueError("with_embedding needs an embed_fn (PIL image -> vector)")
    entries: list[TakedownEntry] = []
    warnings: list[str] = []

    def add(number: int, kind: str, value: str, variant: str | None = None,
            quality: int | None = None) -> None:
        entry_id = f"{list_id}-{number}-{kind}" + (f"-{variant}" if variant else "")
        entries.append(TakedownEntry(list_id=list_id, entry_id=entry_id, kind=kind, value=value,
                                     max_distance=None, reason=reason, quality=quality))

    embedded = False
    for number, photo in enumerate(photos, start=1):
        data = _photo_bytes(photo)
        md5_hex, sha256_hex = hashing.md5_sha256(data)
        add(number, "md5", md5_hex)
        add(number, "sha256", sha256_hex)
        try:
            decoded = hashing.decode_image(data)
        except hashing.ImageError as err:
            warnings.append(f"photo {number}: not usable as an image ({err.status}): only its "
                            "exact-copy hashes (md5, sha256) are in the request")
            continue
        small = hashing.downscale_for_hashing(decoded.image)
        add(number, "phash", hashing.phash_of(small))
        variants = hashing.pdq_dihedral_of(small)
        quality = variants[0][2]
        seen: set[str] = set()
        for name, value, _ in variants:
            if value in seen:  # symmetric photos give equal hashes for some variants
                continue
            seen.add(value)
            add(number, "pdq", value, variant=name, quality=quality)
        if quality < signals.PDQ_MIN_QUALITY:
            warnings.append(f"photo {number}: PDQ quality {quality} < {signals.PDQ_MIN_QUALITY}: "
                            "too flat to match safely")
        if with_embedding:
            vector = np.asarray(embed_fn(small), dtype=np.float32).reshape(-1)
            add(number, "clip", signals.clip_to_value(vector))
            embedded = True
    if embedded:
        warnings.append(EMBEDDING_WARNING)
    return entries, warnings


def write_request(entries: Sequence[TakedownEntry], out_path: str) -> None:
    """Write a request's entries as a takedown list file (format from the extension)."""
    write_list(entries, out_path)


__all__ = ["EMBEDDING_WARNING", "request_entries", "write_request"]
