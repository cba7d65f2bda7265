"""Regex building blocks shared by the caption detectors.

Every pattern is compiled once per scanner; word lists become one alternation folded into
a prefix tree, so hundreds of words cost little more than a few.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

# Characters of a caption that are scanned. LAION captions are short (a few hundred
# characters at most); the rare multi-kilobyte one is scraped page text, and scanning
# all of it would let one row cost as much as thousands of ordinary ones.
MAX_CAPTION_CHARS = 2000

_SEPARATOR = "\x00"  # stands for "space, hyphen or nothing" inside a term

UPPER = "A-ZÀ-ÖØ-ÞĀ-Ž"  # capital letters a street or person name may start with
YEAR = r"(?:19|20)\d\d(?!\d)"  # a year is not a house number
NUMBER_END = r"(?![\w]|[.,/]\d)"  # the number ends here, not inside 12.5 or 1/2
FILE_EXTENSIONS = r"(?:png|jpe?g|gif|webp|svg|bmp|tiff?|ico|avif|heic)"

HAS_DIGIT = re.compile(r"\d")
# Phones and most identity numbers are runs of 6+ digits and separators.
NUMBERISH = re.compile(r"\d[\d\s().\-/]{4,}\d")
NON_DIGITS = re.compile(r"\D")
NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def term_regex(words: Iterable[str], flexible_separators: bool = True) -> str:
    """One alternation for many literal words, factored as a prefix tree.

    Python's regex engine tries alternatives one by one; sharing prefixes makes a failed
    position cost one branch per distinct first character instead of one per word. With
    ``flexible_separators`` a space or hyphen inside a word matches any run of spaces and
    hyphens, or nothing ("post-op" matches "post op" and "postop").
    """
    root: dict = {}
    for word in words:
        if flexible_separators:
            word = re.sub(r"[\s\-]+", _SEPARATOR, word)
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}
    return _trie_node_regex(root)


def _trie_node_regex(node: dict) -> str:
    branches = []
    for char in sorted(key for key in node if key):
        head = r"[\s\-]*" if char == _SEPARATOR else re.escape(char)
        branches.append(head + _trie_node_regex(node[char]))
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:
        return "(?:" + body + ")?"
    return body


def capped(text: str) -> str:
    """The first MAX_CAPTION_CHARS characters, ending on a whole word where possible
    (half a word could match as a different, shorter one)."""
    if len(text) <= MAX_CAPTION_CHARS:
        return text
    head = text[:MAX_CAPTION_CHARS]
    if text[MAX_CAPTION_CHARS].isspace():
        return head
    whole_words = head.rsplit(None, 1)
    return whole_words[0] if len(whole_words) == 2 else head
