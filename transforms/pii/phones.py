"""Whether a phone-number candidate is accepted: possible lengths, groupings and context.

A phone number is redacted when it *could* be one, not only when it is assigned: many numbers
people (and generators) write are well formed but unassigned, and ``is_valid_number`` would let
them through. What decides, from ``phonenumbers`` metadata (no parsing, no network):

* **International** (``+``, ``00``, ``011`` or ``0011`` before a country calling code): the
  calling code exists and the rest has a possible length for it (a ``(0)`` trunk written after
  the code is ignored, as is a trunk the writer kept by mistake). No context needed: ids do
  not start with ``+44``.
* **After a phone word** (``phone_context`` ``"positive"``): any 7-15 digits.
* **Nearer to an id word** (``"negative"``): rejected, unless international.
* **Otherwise** a national number must look like one: written in digit groups that coarsen one
  of the national formats of a region in ``regions`` for a possible length there (``020 7946
  0958``, ``(0161) 4960066``, ``898-581-8277``), with the region's trunk prefix where it has
  one (omitted only where that is common: BR, IN); or a parenthesised area code (``(029)
  2018374``); or a bare run of 9-12 digits starting with a trunk ``0`` (``07700900123``).
  Any other bare run needs a phone word: bare runs are ids and counts far more often.

Extensions (``x204``, ``ext. 5``, ``#12``) are stripped before any of this. The shapes that are
never phone numbers (dates, postal codes, the SSN shape, decimals, dotted quads) are rejected
first.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = [
    "MAX_DIGITS",
    "MIN_DIGITS",
    "accepts",
    "digit_groups",
    "grouping_fits",
    "international_possible",
    "not_a_phone",
]

MIN_DIGITS, MAX_DIGITS = 7, 15  # E.164 allows 15; shorter than 7 are extensions or local

# Regions where national numbers are commonly written without their trunk 0 (BR area codes,
# IN mobiles); elsewhere a number without it is not read as national to that region.
_TRUNK_OPTIONAL = frozenset(("BR", "IN"))
_INTERNATIONAL_PREFIXES = ("0011", "011", "00")  # AU, NANP, most of the world

# Shapes that are not phone numbers: dates, bare YYYYMMDD, postal codes (BR 12345-678,
# JP 123-4567), the SSN shape (left to the SSN detector), decimals (57452.87), dotted quads
# (an IP or a version; "020.00.000.000", with its leading zero, may be a number).
_NOT_A_PHONE = re.compile(
    r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01])"
    r"|\d{5}-\d{3}|\d{3}-\d{4}|\d{3}-\d{2}-\d{4}|\d+\.\d{1,2}"
    r"|(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}\d{1,3}",  # a dotted quad without leading 0
    re.ASCII,
)
_DIGIT_RUN = re.compile(r"\d+", re.ASCII)
_TRUNK_BARE = re.compile(r"0[1-9]\d{7,10}", re.ASCII)  # 0612345678: ids rarely lead with 0
_PAREN_AREA = re.compile(r"\+?\(0?\d{2,4}\)", re.ASCII)  # (029) 2018374, (01706) 04935
_SEPARATORS = str.maketrans("", "", " ().-/+\t\n\r")
_FORMAT_TOKEN = re.compile(r"(\\d|\[[^\]]*\]|\d)(?:\{(\d+)(?:,(\d+))?\}|(\?))?")


def not_a_phone(main: str) -> bool:
    """Whether ``main`` (a candidate without extension) has a shape no phone number has."""
    return _NOT_A_PHONE.fullmatch(main) is not None


def digit_groups(main: str) -> list[int]:
    """The lengths of the digit runs of ``main``, in order."""
    return [len(group) for group in _DIGIT_RUN.findall(main)]


def _group_widths(pattern: str) -> list[tuple[int, int]] | None:
    """(min, max) digits of each capturing group of a format pattern; None if unusual."""
    widths = []
    for group in re.findall(r"\(([^()]*)\)", pattern):
        low = high = 0
        position = 0
        for token in _FORMAT_TOKEN.finditer(group):
            if token.start() != position:
                return None
            position = token.end()
            if token.group(4):  # "x?"
                high += 1
            else:
                n = int(token.group(2) or 1)
                low, high = low + n, high + int(token.group(3) or n)
        if position != len(group):
            return None
        widths.append((low, high))
    return widths or None


class _Region(NamedTuple):
    trunk: str  # the national (trunk) prefix, "" where there is none
    trunk_optional: bool
    lengths: frozenset[int]  # possible national significant number lengths
    # total NSN length -> the sets of group boundaries of its national formats
    boundaries: dict[int, tuple[frozenset[int], ...]]


@functools.cache
def _region(code: str) -> _Region:
    metadata = PhoneMetadata.metadata_for_region(code)
    lengths = frozenset(metadata.general_desc.possible_length)
    boundaries: dict[int, set[frozenset[int]]] = {}
    for number_format in metadata.number_format:
        widths = _group_widths(number_format.pattern)
        if widths is None:
            continue
        for sizes in itertools.product(*(range(lo, hi + 1) for lo, hi in widths)):
            cuts = frozenset(itertools.accumulate(sizes[:-1]))
            boundaries.setdefault(sum(sizes), set()).add(cuts)
    return _Region(
        trunk=metadata.national_prefix or "",
        trunk_optional=code in _TRUNK_OPTIONAL,
        lengths=lengths,
        boundaries={n: tuple(sets) for n, sets in boundaries.items()},
    )


@functools.cache
def _calling_code_lengths(code: int) -> tuple[frozenset[int], str]:
    """Possible NSN lengths of every region on calling ``code``, and its trunk prefix."""
    lengths: set[int] = set()
    trunk = ""
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()):
        metadata = PhoneMetadata.metadata_for_region(region) or (
            PhoneMetadata.metadata_for_nongeo_region(code)
        )
        if metadata is None:
            continue
        lengths.update(metadata.general_desc.possible_length)
        trunk = trunk or metadata.national_prefix or ""
    return frozenset(lengths), trunk


def international_possible(digits: str) -> bool:
    """Whether ``digits`` (after the international prefix) are a calling code followed by a
    number of a possible length for it (or that number with its trunk prefix kept)."""
    for size in (1, 2, 3):
        code = int(digits[:size])
        if code not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            continue
        lengths, trunk = _calling_code_lengths(code)
        rest = digits[size:]
        if len(rest) in lengths or (trunk and rest.startswith(trunk) and len(rest) - 1 in lengths):
            return True
    return False


def _international_digits(main: str, digits: str) -> str | None:
    """The digits after the international prefix, or None when ``main`` has none."""
    if main[0] == "+":
        return digits
    for prefix in _INTERNATIONAL_PREFIXES:
        if digits.startswith(prefix) and len(digits) > len(prefix) + 1:
            return digits[len(prefix) :]
    return None


def grouping_fits(groups: Sequence[int], region: str) -> bool:
    """Whether digit groups ``groups`` (as written, trunk prefix included) coarsen a national
    format of ``region`` for a possible length there.

    ``020 7946 0958`` and ``020 79460958`` fit GB's ``20 7946 0958``; ``02 07 94 60 95 8`` does
    not. The trunk prefix may be its own group; a NANP number may lead with ``1``.
    """
    rules = _region(region)
    total = sum(groups)
    if len(groups) < 2:
        return False
    readings = []  # (digits to drop at the front, the front digits form their own group)
    if rules.trunk == "1":  # NANP: no trunk 0; a leading 1 is the long-distance prefix
        readings += [(0, False), (1, True), (1, False)] if total == 11 else [(0, False)]
    elif rules.trunk:
        readings.append((len(rules.trunk), False))
        if rules.trunk_optional:
            readings.append((0, False))
    else:
        readings.append((0, False))
    for drop, own_group in readings:
        national = total - drop
        if national not in rules.lengths or national not in rules.boundaries:
            continue
        cuts = list(itertools.accumulate(groups[:-1]))
        if own_group:
            if cuts[0] != drop:
                continue
            cuts = cuts[1:]
        written = {cut - drop for cut in cuts if cut != drop}
        if any(cut <= 0 for cut in written):
            continue
        if any(written <= boundaries for boundaries in rules.boundaries[national]):
            return True
    return False


@functools.lru_cache(maxsize=4096)
def _fits_any(groups: tuple[int, ...], regions: tuple[str, ...]) -> bool:
    """``grouping_fits`` for any of ``regions`` (cached: few groupings recur in any text)."""
    return any(grouping_fits(groups, region) for region in regions)


@functools.lru_cache(maxsize=64)
def _trunk_bare_lengths(regions: tuple[str, ...]) -> frozenset[int]:
    """Lengths of a bare trunk-prefixed number possible in one of ``regions``."""
    return frozenset(
        n + len(_region(r).trunk)
        for r in regions
        if _region(r).trunk == "0"
        for n in _region(r).lengths
    )


def _national_fits(main: str, digits: str, regions: Sequence[str]) -> bool:
    if len(digits) == len(main):  # bare digits
        return _TRUNK_BARE.fullmatch(digits) is not None and (
            len(digits) in _trunk_bare_lengths(tuple(regions))
        )
    if _PAREN_AREA.match(main) and len(digits) >= 8:
        return True
    return _fits_any(tuple(digit_groups(main)), tuple(regions))


def accepts(main: str, regions: Sequence[str], context: str | None) -> bool:
    """Whether ``main`` (a candidate without extension, as written) is a phone number.

    Args:
        main: the candidate: digits with separators, an optional leading ``+``.
        regions: the regions whose national formats a number without a phone word may have.
        context: ``phone_context`` of the candidate in its text.
    """
    if not_a_phone(main):
        return False
    digits = main.translate(_SEPARATORS)
    if not digits.isdigit() or not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        return False
    if main.count("(") != main.count(")"):
        return False
    international = _international_digits(main, digits)
    if international is not None:
        if international_possible(international):
            return True
        if main[0] == "+":
            return context == "positive"
    if context == "positive":
        return True
    if context == "negative":
        return False
    return _national_fits(main, digits, regions)
