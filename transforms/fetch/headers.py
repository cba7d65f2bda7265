"""What a response's headers say before any body byte is read: opt-outs, Retry-After,
declared types.

Two opt-out standards are read from the headers: ``X-Robots-Tag`` with ``noai`` /
``noimageai`` (whichever crawler a directive names) and W3C TDMRep's
``tdm-reservation: 1``. `OptOut` keeps both what said no (the names that go into a
row's ``opt_out``) and the header lines seen (``opt_out_headers``), so an auditor can
show why a row was or was not fetched.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

AI_OPT_OUT_DIRECTIVES = ("noai", "noimageai")
TDM_RESERVATION = "tdm-reservation"  # the opt_out name W3C TDMRep's header gives
# Header names whose lines a row keeps as evidence (lower case).
EVIDENCE_HEADERS = ("x-robots-tag", "tdm-reservation", "tdm-policy")
_OPT_OUT_PATTERN = re.compile(r"(?<![\w-])(noai|noimageai)(?![\w-])", re.IGNORECASE)
_EVIDENCE_CHARS = 200  # one header line kept on a row, at most
_EVIDENCE_LINES = 8


def opt_out_directives(values: Iterable[str]) -> list[str]:
    """The AI opt-out directives in ``X-Robots-Tag`` header values, in order, deduplicated.

    Directives count whichever crawler they name ("otherbot: noai"): an image its owner
    withheld from AI use stays withheld from an audit that feeds AI datasets.
    """
    seen: list[str] = []
    for value in values:
        for match in _OPT_OUT_PATTERN.finditer(value):
            directive = match.group(1).lower()
            if directive not in seen:
                seen.append(directive)
    return seen


def tdm_reserved(values: Iterable[str]) -> bool:
    """Whether ``tdm-reservation`` header values reserve text-and-data-mining rights
    (TDMRep: the value ``1``; ``0`` or anything else reserves nothing)."""
    return any(value.strip() == "1" for value in values)


@dataclass
class OptOut:
    """The opt-outs of one response: ``said_no`` names each standard that opted out
    (``noai``, ``noimageai``, ``tdm-reservation``), ``headers`` the lines seen."""

    said_no: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    getall = getattr(headers, "getall", None)  # multidict: every line of a repeated header
    if getall is not None:
        return list(getall(name, ()))
    value = headers.get(name)
    return [] if value is None else [value]


def read_opt_out(headers: Mapping[str, str]) -> OptOut:
    """The opt-outs a response's headers declare, and the header lines that declare them."""
    robots_tag = _getall(headers, "X-Robots-Tag")
    said_no = opt_out_directives(robots_tag)
    if tdm_reserved(_getall(headers, "tdm-reservation")):
        said_no.append(TDM_RESERVATION)
    lines: list[str] = []
    for name in EVIDENCE_HEADERS:
        for value in _getall(headers, name):
            line = f"{name}: {value.strip()}"
            lines.append(line if len(line) <= _EVIDENCE_CHARS else line[: _EVIDENCE_CHARS - 3] + "...")
    return OptOut(said_no, lines[:_EVIDENCE_LINES])


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = now or dt.datetime.now(dt.timezone.utc)
    return max(0.0, (when - now).total_seconds())


def is_non_image_type(content_type: str) -> bool:
    """True for declared types that are certainly not images (pages, text, JSON)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime.startswith("text/") or "html" in mime or "json" in mime
