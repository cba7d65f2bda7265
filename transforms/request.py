"""Privacy-preserving takedown requests: a person's own photos in, a hashes-only list out.

``laion-audit request PHOTO...`` runs on the person's own machine. For each photo,
every registered kind that can be computed from it makes its list entries
(``transforms.takedown`` format; ``Kind.photo_values`` in ``transforms.takedown.kinds``).
With the built-in kinds these are:

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

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from transforms import hashing
from transforms.takedown import KINDS, Photo, TakedownEntry, write_list
from transforms.takedown.photos import PhotoInput, read_photo

EMBEDDING_WARNING = (
    "the clip entries are image embeddings: an embedding reveals much more about a "
    "photo than a hash does (its content can be searched for and roughly described); "
    "send it only to a list operator you trust"
)


def request_entries(
    photos: Sequence[PhotoInput],
    list_id: str,
    reason: str | None = None,
    with_embedding: bool = False,
    embed_fn: Callable[[Image.Image], np.ndarray] | None = None,
) -> tuple[list[TakedownEntry], list[str]]:
    """Takedown entries for the given photos (bytes or paths), and warnings for the person.

    Every registered kind that can be computed from a photo alone contributes its
    values (``Kind.photo_values``), and, with ``with_embedding``, every kind made from
    an embedding, through ``embed_fn``. Photos are numbered from 1 in entry ids and
    warnings, in the order given. A photo that does not decode still gives the entries
    of the kinds that need only its bytes (md5 / sha256), with a warning.
    """
    list_id = (list_id or "").strip()
    if not list_id:
        raise ValueError("a takedown request needs a list_id")
    if with_embedding and embed_fn is None:
        raise ValueError("with_embedding needs an embed_fn (PIL image -> vector)")
    kinds = [kind for kind in KINDS.values()
             if kind.can_hash_photo or (with_embedding and kind.needs_embedding)]
    entries: list[TakedownEntry] = []
    warnings: list[str] = []
    embedded = False
    for number, raw in enumerate(photos, start=1):
        photo = Photo(read_photo(raw), embed_fn=embed_fn if with_embedding else None)
        made: list[str] = []
        unusable: hashing.ImageError | None = None
        for kind in kinds:
            try:
                values = kind.photo_values(photo)
            except hashing.ImageError as err:
                unusable = err
                continue
            for value in values:
                entry_id = f"{list_id}-{number}-{kind.name}" + (f"-{value.variant}" if value.variant else "")
                entries.append(TakedownEntry(list_id=list_id, entry_id=entry_id, kind=kind.name,
                                             value=value.value, max_distance=None, reason=reason,
                                             quality=value.quality))
            if values:
                made.append(kind.name)
                embedded = embedded or kind.needs_embedding
            warnings.extend(f"photo {number}: {warning}" for warning in kind.photo_warnings(values))
        if unusable is not None:
            warnings.append(f"photo {number}: not usable as an image ({unusable.status}): only its "
                            f"exact-copy hashes ({', '.join(made)}) are in the request")
    if embedded:
        warnings.append(EMBEDDING_WARNING)
    return entries, warnings


def write_request(entries: Sequence[TakedownEntry], out_path: str) -> None:
    """Write a request's entries as a takedown list file (format from the extension)."""
    write_list(entries, out_path)


__all__ = ["EMBEDDING_WARNING", "request_entries", "write_request"]
