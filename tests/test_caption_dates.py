"""Caption flag ``date_of_birth``: a date after a birth word, a life span after a name, or
a date marked with ``*`` / ``b.`` after a name; and the look-alikes that are not: event
and photo dates, common words that fold or capitalise into a birth word ("ne", "NATO"),
and a "b." that is a figure panel or a lot letter."""
from __future__ import annotations

import pytest

from transforms.captions import caption_flags


def _has(flag: str, text: str) -> bool:
    return flag in caption_flags(text)


# --------------------------------------------------------------------------- birth words

@pytest.mark.parametrize("text", [
    "Maria Silva, born 12 May 1985 in Porto",
    "born on May 12th, 1985",
    "born 3 March 1980",
    "He was born in Paris on 12 May 1985",
    "Emma Watson (born 15 April 1990)",
    "Barack Obama (born August 4, 1961) is an American politician",
    "DOB: 05/12/1985",
    "date of birth 3.4.85",
    "Hans Müller, geboren am 12.05.1985",
    "Angela Merkel, geboren am 17. Juli 1954 in Hamburg",
    "geb. 12. März 1985",
    "Geburtsdatum: 1. Mai 1960",
    "née le 3 février 1990 à Lyon",
    "né le 3 mars 1980",
    "NÉ LE 3 MARS 1980",
    "ne\u0301e le 3 mars 1980",  # the accent as a combining mark
    "Jean Dupont, né le 1er mai 1970",
    "date de naissance : 03/02/1990",
    "nacida el 12 de mayo de 1985",
    "Juan García, nacido 05-12-1985",
    "fecha de nacimiento: 12/05/1985",
    "nascido em 12 de maio de 1985",
    "Ana Souza, nascida em 03.02.1990",
    "data de nascimento 12/05/1985",
    "nata il 12 maggio 1985",
    "nato il 3 marzo 1980",
    "nata a Roma il 3 marzo 1980",
])
def test_date_after_a_birth_word_is_a_date_of_birth(text):
    assert _has("date_of_birth", text)


@pytest.mark.parametrize("text", [
    "Ne manquez pas le 12 mai 2019",  # "ne" is not "né"
    "Que ne 5 mai 2019",
    "NATO leaders meet, 11 July 2018",  # "nato" only as "nato il / a / nel"
    "NATO summit, 12 July 2018, Brussels",
    "Nato summit 12 May 2019",
    "Nata Mitsubishi 12/05/2019",
    "Born to be wild T-shirt 12/05/2019",  # too many words between
    "sortie le 12 mai 2019 naissance d'une star",  # the birth word after the date
    "born in 1985",  # a year alone
    "born 31.02.1985",  # no such day
    "born 13.13.1985",  # no 13th month in either order
    "Born This Way tour 2012",
    "reborn doll 12 inch",
    "Summer 2019",
    "Order 2019-05-12",
    "Berlin Marathon 12.05.2019",
    "size 12 May collection",
])
def test_no_birth_word_before_the_date_is_no_date_of_birth(text):
    assert not _has("date_of_birth", text)


def test_two_digit_years_are_read_in_either_century():
    assert _has("date_of_birth", "born 29.02.00")  # 2000 was a leap year
    assert not _has("date_of_birth", "born 29.02.01")
    assert _has("date_of_birth", "Dob 5/12/85")


def test_only_years_1800_to_2099_are_read():
    assert _has("date_of_birth", "born 12.05.1801")
    assert not _has("date_of_birth", "born 12.05.1799")
    assert not _has("date_of_birth", "born 12.05.2190")


# --------------------------------------------------------------------------- after a name

@pytest.mark.parametrize("text", [
    "Frida Kahlo (6 July 1907 – 13 July 1954)",
    "Albert Einstein (14 March 1879 – 18 April 1955)",
    "Portrait of Albert Einstein (14 March 1879 – 18 April 1955)",
    "Portrait of Queen Victoria (24 May 1819 – 22 January 1901)",
    "Giuseppe Verdi (Busseto, 10 ottobre 1813 – Milano, 27 gennaio 1901)",
    "in memory of Maria Schmidt (12.05.1920 – 03.04.2001)",
    "Kate Middleton * 9.1.1982",
    "Mrs Jane Doe * 9.1.1982",
    "Maria Silva * 12/05/1985",
    "Dr. Peter Krause (* 3. Mai 1950)",
    "John Smith b. 1985-05-12",
    "Maria Silva b. 12/05/1980",
    "John Smith, b. 12/05/1980",
    "Lionel Messi (b. 24 June 1987)",
])
def test_life_span_or_marked_date_after_a_name_is_a_date_of_birth(text):
    assert _has("date_of_birth", text)


@pytest.mark.parametrize("text", [
    # One date in brackets after a name is as often the photo's or the event's.
    "© Maria Silva (12.05.2019)",
    "Wedding of Maria and John Smith (12.06.2021)",
    "Interview with John Smith (May 12, 2020)",
    "Photo by Anna Smith (12.05.2019)",
    "Maria Silva (12.05.1985)",
    "Maria Silva 12.05.2019 wedding",
    "Maria Silva (2019)",
    "Vintage Dress (12.05.2019)",
    # A span of days or months is an event; the dates must be in order.
    "Art Basel (13 June 2019 – 16 June 2019)",
    "Summer Sale (1.6.2019 - 30.6.2019)",
    "Frida Kahlo (13 July 1954 – 6 July 1907)",
    "vintage poster (6 July 1907 – 13 July 1954)",  # no name before the span
    # "b." and "*" that mark no birth.
    "Fig. 2 a. 10/11/2018 b. 12/11/2018",
    "Lot 45 b. 3/4/1920 auction",
    "Plate b. 12/05/2019 Museum collection",
    "set of 2 b. 12 May 2019",
    "Prices * 12.05.2019 Offer",
    "Stock ref ** 12.05.2019",
])
def test_event_dates_and_other_marks_are_no_date_of_birth(text):
    assert not _has("date_of_birth", text)
