"""Personal data and medical context in captions: caption text in, sorted flag names out.

The flags (``CAPTION_FLAGS``) say what a caption gives away about a person: contact
details (``email``, ``phone``, ``street_address``), numbers that identify a person or an
account, each validated by its check digits (``national_id``, ``tax_id``, ``health_id``,
``iban``, ``payment_card``), a ``date_of_birth``, account pages
(``personal_handle_url``), medical context (``medical_term``) and, the case that matters
most, a person's name next to medical context (``name_with_medical_term``).

Modules: ``scanner`` (the flags of one caption, e-mail, handles), ``identifiers``,
``phones``, ``dates``, ``addresses``, ``names``, ``patterns`` (regex building) and
``stage`` (the packaged scanner and the Beam transform).
"""
from transforms.captions.names import NAME_TERM_WINDOW
from transforms.captions.patterns import MAX_CAPTION_CHARS
from transforms.captions.scanner import CAPTION_FLAGS, CaptionScanner
from transforms.captions.stage import (
    FlagCaptions,
    caption_flags,
    caption_flags_batch,
    default_scanner,
)

__all__ = [
    "CAPTION_FLAGS",
    "MAX_CAPTION_CHARS",
    "NAME_TERM_WINDOW",
    "CaptionScanner",
    "FlagCaptions",
    "caption_flags",
    "caption_flags_batch",
    "default_scanner",
]
