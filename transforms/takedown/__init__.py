"""Takedown stage: match audit rows against takedown hash lists.

One module per concern:

============ ==================================================================
module       what it holds
============ ==================================================================
kinds        one class per kind (url, url_sha256, md5, sha256, pdq, phash, clip),
             the kind registry (``register_kind``), ``Thresholds``; what a
             distance and a threshold mean for each kind
values       hex and embedding value encodings, read column-wise
photos       a photo as ``laion-audit request`` hashes it
lists        the list file format: ``TakedownEntry``, the rules for one entry,
             ``write_list``
list_formats each format's rows read as chunks of Arrow columns
list_loader  ``load_list(s)``: those chunks checked in bulk, into an ``EntryTable``
entry_table  ``EntryTable``: list entries as columns, no Python object per entry
search       the exact-set and cosine indexes, and the interface every kind's index has
hamming      flat and multi-index Hamming search (why and how fast)
index        ``TakedownIndex``: kind -> that kind's index, matching a batch at a time
match        the Beam transforms: ``MatchTakedown``, ``IndexSpec``, ``add_matches``
============ ==================================================================

The names below are what callers import from ``transforms.takedown`` itself.
"""
from transforms.takedown.entry_table import EntryTable
from transforms.takedown.hamming import HAMMING_STRATEGIES, HammingSearch, estimated_search_ns
from transforms.takedown.index import TakedownIndex
from transforms.takedown.kinds import (
    KINDS,
    PDQ_MIN_QUALITY,
    ClipKind,
    HammingKind,
    HexExactKind,
    Kind,
    Md5Kind,
    PdqKind,
    PhashKind,
    Sha256Kind,
    Thresholds,
    UrlKind,
    UrlSha256Kind,
    kind_of,
    register_kind,
    unregister_kind,
)
from transforms.takedown.lists import (
    LIST_COLUMNS,
    LIST_FORMATS,
    TakedownEntry,
    TakedownListError,
    expand_list_paths,
    list_format_of,
    load_list,
    load_lists,
    write_list,
)
from transforms.takedown.match import IndexSpec, MatchTakedown, MatchTakedownBatches, add_matches
from transforms.takedown.photos import Photo, PhotoValue
from transforms.takedown.search import BadEntryValue, CosineSearch, ExactSet, RowValues
from transforms.takedown.values import clip_from_value, clip_to_value, hamming_hex, hex_to_bits_uint8, normalize_hex

__all__ = [
    "HAMMING_STRATEGIES",
    "KINDS",
    "LIST_COLUMNS",
    "LIST_FORMATS",
    "PDQ_MIN_QUALITY",
    "BadEntryValue",
    "ClipKind",
    "CosineSearch",
    "EntryTable",
    "ExactSet",
    "HammingKind",
    "HammingSearch",
    "HexExactKind",
    "IndexSpec",
    "Kind",
    "MatchTakedown",
    "MatchTakedownBatches",
    "Md5Kind",
    "PdqKind",
    "PhashKind",
    "Photo",
    "PhotoValue",
    "RowValues",
    "Sha256Kind",
    "TakedownEntry",
    "TakedownIndex",
    "TakedownListError",
    "Thresholds",
    "UrlKind",
    "UrlSha256Kind",
    "add_matches",
    "clip_from_value",
    "clip_to_value",
    "estimated_search_ns",
    "expand_list_paths",
    "hamming_hex",
    "hex_to_bits_uint8",
    "kind_of",
    "list_format_of",
    "load_list",
    "load_lists",
    "normalize_hex",
    "register_kind",
    "unregister_kind",
    "write_list",
]
