"""Detectors for PII and secrets: exact patterns, validators and hyperscan locators.

Each ``Detector`` has an exact Python ``re`` pattern (ASCII classes), an optional validator
that accepts, trims or rejects a candidate span, and *locators*: lookaround-free patterns
(hyperscan and ``re`` syntax) such that wherever ``pattern`` matches at position ``p``, a
locator match starts at ``p`` or ``p - 1`` (one boundary character) and is the leftmost
match with its end. The engine scans every locator in one hyperscan pass and tries the
exact pattern only at those positions, so Python's ``re`` never scans a whole text. Keep
that property when editing a pattern: the tests compare the located output with running
every pattern over every text.

What is redacted, and what deliberately is not (and why):

EMAIL_ADDRESS
    ``local@domain.tld`` with an ASCII local part and a letters-only TLD. ``git@github.com``
    is redacted too (indistinguishable from a mailbox). Not found: IDN/non-ASCII addresses,
    obfuscations such as ``name [at] example [dot] com``.
PHONE_NUMBER
    Candidates are digit runs with ``space - . / ( )`` separators and an optional extension;
    every candidate must be a *valid* number per ``phonenumbers`` metadata (not merely
    possible). International numbers (``+`` or ``00`` prefix) are accepted on validity alone.
    National numbers are tried against ``DEFAULT_PHONE_REGIONS`` (the regions whose
    traffic we expect; a number valid in none of them is missed), skipping regions whose
    numbering plan rules the digits out (length, NANP area codes, a missing trunk 0 except
    in BR and IN, where it is commonly omitted), and must also:

    * be preceded by a phone word (``phone``, ``tel``, ``call``, ``mobile``, ``Telefon``,
      ``téléphone``, ``電話`` …) in the same sentence or line, within 32 characters; or,
      without one, be written in digit groups that coarsen the number's national format
      (``020 7946 0958``, ``020 79460958``; not ``271 130 517 789``, a list of numbers), or
      be a bare trunk-prefixed number of 9-12 digits (``07700900123``). Any other bare digit
      run (``4155552671``) counts only right after a phone word (``WhatsApp 4155552671``:
      at most 30 characters between them, none a digit or a line break), as such runs are
      ids and counts far more often than phone numbers;
    * not be nearer to an id word (``order``, ``invoice``, ``ticket``, ``id``, ``ref`` …)
      than to a phone word;
    * not be a date (``2024-03-15``, ``15.03.2024``), a dotted quad, a dotted version after
      a version word, an amount (followed by ``,dd``/``.dd`` or a currency), glued to an
      identifier (``INV-2024…``, ``#…``, ``/path/…``) or part of a time (``…:30``).

    Not found: numbers valid only outside the default regions and written in national
    format, unusual groupings without a phone word, bare digits without a phone word and
    without a trunk 0, full-width digits, vanity numbers (``1-800-FLOWERS``). Residual
    false positives: lists of 3-digit numbers that happen to form a valid, plausibly
    grouped number (measured ~9% of random 3-6 element lists, e.g. ``654 751 890``).
CREDIT_CARD_NUMBER
    12-19 digits, bare or in groups (4-4-4[-4[-3]], 4-6-5, 4-6-4) separated consistently by
    spaces or dashes, Luhn-valid and not one repeated digit; 12 digits only with a Maestro
    prefix. A bare (unseparated) run must also start with a known issuer prefix, because
    bare Luhn-valid runs include epoch-ms timestamps and ids (1 in 10 random numbers pass
    Luhn). A Luhn-valid 16-digit order id written in groups of four is redacted: that is the
    price of failing closed. Visa-13 grouped 4-3-3-3 is not recognised (rare).
US_SOCIAL_SECURITY_NUMBER
    ``ddd-dd-dddd`` with SSA-valid parts (area not 000/666/9xx, group not 00, serial not
    0000). The same digits spaced or bare count only right after ``SSN``/``social
    security`` (up to 20 non-digit characters between), as nine-digit runs are common ids.
IBAN_CODE
    Upper-case country code + check digits + BBAN, compact or in groups of four, valid per
    ``stdnum.iban`` (country length/format and the ISO 7064 mod-97 checksum). A trailing
    word glued to the candidate (``… 3000 BIC``) is trimmed off until the checksum holds.
IP_ADDRESS
    IPv4 dotted quads with octets 0-255 and no leading zeros (``ipaddress`` rules), not part
    of a longer dotted run (``10.0.19041.1``), and not in a version context: right after a
    version noun (``version``, ``v``, ``release``, ``build``, ``rev`` …, optionally with
    ``is``/``:``/``=``), a version verb with ``to``/``from`` (``upgraded to``, ``bumped
    from``), ``==``/``>=``, or a product token (``Chrome/120.0.0.0``); right before a version
    word (``the 1.2.3.4 release``); or the right side of ``<version> to <x>``. Everything
    else valid is redacted, private and loopback addresses included (they map internal
    networks), so ``release 10.0.0.1`` is a known miss and ``please update 10.0.0.1`` is not.
    IPv6 per ``ipaddress`` with at least two non-empty groups and five hex digits, so that
    ``::``, ``::1``, C++ ``a::b`` and Python ``x[1::2]`` are not addresses.
Secrets
    AWS_CREDENTIALS: access key ids ``AKIA``/``ASIA`` + 16, and a 40-character secret access
    key after an ``aws_secret_access_key``-like label. GCP_API_KEY: ``AIza`` + 35.
    JSON_WEB_TOKEN: ``eyJ….eyJ….sig`` (base64url JSON header and payload). ENCRYPTION_KEY:
    PEM/OpenSSH/PGP private-key blocks, to the END line or, when the END line is missing
    (truncated paste), to the last base64 line. AUTH_TOKEN: OpenAI ``sk-``/``sk-proj-`` keys,
    GitHub ``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_`` tokens, Slack ``xox[abprs]-``/``xapp-``
    tokens, and the token after ``Bearer``. Tokens and ``sk-`` keys must contain a digit and
    be >= 16/20 characters, so placeholders (``Bearer YOUR_TOKEN``) stay readable.
    Not found: generic ``password=`` / ``api_key=`` assignments, public keys and
    certificates (not secret), Stripe/Twilio/other vendors' formats.

Overlaps are resolved by the engine (``priority``: secrets below 10, PII from 10): a secret
beats PII, then the longer span wins, then the lower priority (more specific type), then the
earlier start. So a JWT after ``Bearer`` is one JSON_WEB_TOKEN, ``+81 568-76-9840`` is a
phone number rather than an SSN, an SSN-shaped phone candidate is an SSN, a card is never
also a phone, and a token in ``https://ghp_…@github.com`` stays an AUTH_TOKEN.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

import phonenumbers
from stdnum import iban as stdnum_iban

from transforms.pii.engine import (
    AUTH_TOKEN,
    AWS_CREDENTIALS,
    CREDIT_CARD_NUMBER,
    EMAIL_ADDRESS,
    ENCRYPTION_KEY,
    GCP_API_KEY,
    IBAN_CODE,
    IP_ADDRESS,
    JSON_WEB_TOKEN,
    PHONE_NUMBER,
    US_SOCIAL_SECURITY_NUMBER,
)

__all__ = [
    "DEFAULT_PHONE_REGIONS",
    "Detector",
    "Finding",
    "Validator",
    "build_detectors",
    "grouping_fits",
    "has_version_context",
    "is_valid_card_number",
    "is_valid_iban",
    "is_valid_ipv4",
    "is_valid_ipv6",
    "is_valid_phone",
    "is_valid_ssn",
    "luhn_ok",
    "phone_context",
]

# National-format phone numbers are validated against these regions (ISO 3166 codes,
# phonenumbers metadata). Order only matters for speed: the most common first. "US" also
# covers every NANP region (CA, caribbean) since validity is checked on the parsed number.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP", "AU", "PL",
)  # fmt: skip

_CONTEXT_WINDOW = 32  # characters before a phone candidate searched for context words

# Parsing compiles metadata patterns on the fly; keep them all compiled rather than let them
# compete for the ``re`` module's bounded cache with everyone else's patterns.
phonenumbers.enable_pattern_cache()


class Finding(NamedTuple):
    """One accepted span of ``text[start:end]``; never carries the matched value."""

    start: int
    end: int
    info_type: str
    priority: int


# A validator gets the text and a candidate span and returns the span to redact (possibly
# trimmed) or None to reject the candidate.
Validator = Callable[[str, int, int], "tuple[int, int] | None"]


class Detector(NamedTuple):
    """An exact pattern plus validator for one info type, and its locator patterns.

    Attributes:
        name: unique detector name, also the group name in a combined alternation.
        info_type: Cloud DLP info type reported for its findings.
        source: the exact pattern's source (``re.ASCII | re.VERBOSE``); named groups are
            prefixed with ``name`` so that sources can be joined into one alternation.
        pattern: ``source`` compiled.
        locators: hyperscan-compatible patterns (see the module docstring).
        validator: None to accept every match as is.
        priority: overlap resolution; below 10 marks a secret, which beats any PII;
            otherwise a tie-break between equal-length overlaps, lower wins.
    """

    name: str
    info_type: str
    source: str
    pattern: re.Pattern[str]
    locators: tuple[str, ...]
    validator: Validator | None
    priority: int

    def find(self, text: str, starts: Collection[int] | None = None) -> list[Finding]:
        """Accepted findings in ``text``, like ``finditer`` but only trying ``starts``.

        Args:
            text: the text.
            starts: candidate positions (from the locators), in any order, repeats allowed;
                None scans the text.
        """
        validator, info_type, priority = self.validator, self.info_type, self.priority
        findings = []
        if starts is None:
            for match in self.pattern.finditer(text):
                start, end = match.span()
                span = (start, end) if validator is None else validator(text, start, end)
                if span is not None:
                    findings.append(Finding(span[0], span[1], info_type, priority))
            return findings
        # Same matches as finditer when every finditer match starts at a candidate: a
        # candidate inside the previous match is skipped, as finditer resumes at its end, and
        # a repeated candidate is tried once (after a miss, finditer moves on by one).
        resume, match_at = 0, self.pattern.match
        for start in sorted(starts) if len(starts) > 1 else starts:
            if start >= resume:
                match = match_at(text, start)
                if match is None:
                    resume = start + 1
                    continue
                resume = end = match.end()
                span = (start, end) if validator is None else validator(text, start, end)
                if span is not None:
                    findings.append(Finding(span[0], span[1], info_type, priority))
        return findings


_FLAGS = re.ASCII | re.VERBOSE


def _detector(
    name: str,
    info_type: str,
    source: str,
    locators: Sequence[str],
    priority: int,
    validator: Validator | None = None,
) -> Detector:
    return Detector(
        name=name,
        info_type=info_type,
        source=source,
        pattern=re.compile(source, _FLAGS),
        locators=tuple(locators),
        validator=validator,
        priority=priority,
    )


# ------------------------------------------------------------------- cards, SSNs, IBANs


# Digit -> digit sum of twice the digit, as a byte translation (sums of bytes run in C).
_LUHN_DOUBLED = bytes.maketrans(b"0123456789", b"0246813579")


def luhn_ok(digits: str) -> bool:
    """True if the decimal string passes the Luhn (mod 10) check."""
    data = digits.encode("ascii")
    total = sum(data[-1::-2]) + sum(data[-2::-2].translate(_LUHN_DOUBLED)) - 48 * len(data)
    return total % 10 == 0


# Issuer prefixes required of *bare* digit runs only (grouped numbers are card-shaped by
# themselves): Visa, Mastercard (51-55, 2221-2720), Amex, Discover, JCB, Diners, UnionPay,
# Maestro, RuPay, Mir. Faker's Maestro 0604 and JCB 1800/2131 ranges are included.
_BARE_CARD_PREFIXES = (
    "4", *(f"5{d}" for d in "012345678"), *(f"2{d}" for d in "234567"),
    *(f"3{d}" for d in "0123456789"), "6", "1800", "2131", "0604", "81", "82",
)  # fmt: skip
_MAESTRO_PREFIXES = ("50", "56", "57", "58", "6", "0604")


def is_valid_card_number(digits: str, *, bare: bool) -> bool:
    """Length 12-19, Luhn-valid, not one repeated digit.

    Bare runs need an issuer prefix, and 12-digit numbers (Maestro only) a Maestro prefix.
    """
    if not 12 <= len(digits) <= 19 or digits == digits[0] * len(digits):
        return False
    if len(digits) == 12 and not digits.startswith(_MAESTRO_PREFIXES):
        return False
    if bare and not digits.startswith(_BARE_CARD_PREFIXES):
        return False
    return luhn_ok(digits)


def _validate_card(text: str, start: int, end: int) -> tuple[int, int] | None:
    candidate = text[start:end]
    digits = candidate.replace(" ", "").replace("-", "")
    bare = len(digits) == len(candidate)
    return (start, end) if is_valid_card_number(digits, bare=bare) else None


def is_valid_ssn(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_FIRST_DIGIT = re.compile(r"\d", re.ASCII)


def _validate_ssn(text: str, start: int, end: int) -> tuple[int, int] | None:
    # A context match starts with its label ("SSN: "), which holds no digit: skip it.
    number_start = _FIRST_DIGIT.search(text, start, end).start()  # type: ignore[union-attr]
    digits = text[number_start:end].replace(" ", "").replace("-", "")
    if not is_valid_ssn(digits[:3], digits[3:5], digits[5:]):
        return None
    return number_start, end


def is_valid_iban(candidate: str) -> bool:
    """Country format and length plus the mod-97 checksum (``stdnum.iban``)."""
    return bool(stdnum_iban.is_valid(candidate))


def _validate_iban(text: str, start: int, end: int) -> tuple[int, int] | None:
    # Trim trailing space-separated groups: "DE89 3704 0044 0532 0130 00 BIC" -> "... 00".
    while end - start >= 15:
        if is_valid_iban(text[start:end]):
            return start, end
        cut = text.rfind(" ", start, end)
        if cut < 0:
            return None
        end = cut
    return None


# ---------------------------------------------------------------------- IP addresses


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Nouns make the next dotted number a version ("version 1.2.3.4", "build: 1.2.3.4"); verbs
# only with "to"/"from" ("upgraded to 1.2.3.4"), since "update 10.0.0.1's rules" is an IP.
_VERSION_NOUNS = _words("v ver version versions release rel build firmware fw rev revision tag sdk")
_VERSION_VERBS = _words(
    "update updated upgrade upgraded upgrading downgrade downgraded bump bumped pin"
    " pinned released install installed"
)
_VERSION_LINKS = frozenset(("is", "was", "=", ":"))
_VERSION_VERB_LINKS = frozenset(("to", "from"))
_VERSION_AFTER = re.compile(
    r"[ \t]+(?:release|build|version|update|patch|firmware)\b", re.IGNORECASE
)
_DOTTED = re.compile(r"\d+(?:\.\d+)+$", re.ASCII)
_RANGE_LINKS = frozenset(("to", "->", "→", "-", "and", ","))


def has_version_context(text: str, start: int, end: int, *, follow_range: bool = True) -> bool:
    """True if the dotted number ``text[start:end]`` reads as a version, not an address.

    A version word or ``==``/``>=`` just before it (``upgraded to version 1.2.3.4``,
    ``pkg==1.2.3.4``), a product token (``Chrome/120.0.0.0``), a version word right after
    (``the 1.2.3.4 release``), or the right side of ``<version> to <it>``.
    """
    window = text[max(0, start - 40) : start]
    if window.endswith("/"):  # "Chrome/" but not "http://"
        token = window.rsplit(None, 1)[-1] if window.strip() else ""
        if token[:1].isalpha() and "//" not in token and ":" not in token:
            return True
    stripped = window.rstrip(" \t")
    if stripped.endswith(("==", ">=", "<=", "~=", "!=", "^=")):
        return True
    # Only the last two words count: split off at most two.
    words = stripped.replace("=", " = ").replace(":", " : ").lower().rsplit(None, 2)
    if len(words) > 1 and words[-1] in _VERSION_VERB_LINKS:
        if words[-2] in _VERSION_VERBS or words[-2].rstrip(".") in _VERSION_NOUNS:
            return True  # "upgraded to 1.2.3.4", "version from 1.2.3.4"
    elif len(words) > 1 and words[-1] in _VERSION_LINKS:
        words.pop()
    if words and words[-1].rstrip(".") in _VERSION_NOUNS:
        return True
    if _VERSION_AFTER.match(text, end):
        return True
    # One level only: "1.2.3.4 to 1.2.3.5" yes, but no chains through a list of numbers.
    words = stripped.rsplit(None, 2)
    if (
        follow_range
        and len(words) >= 2
        and words[-1].lower() in _RANGE_LINKS
        and _DOTTED.match(words[-2])
    ):
        left_end = stripped.rfind(words[-2]) + len(words[-2]) + max(0, start - 40)
        left_start = left_end - len(words[-2])
        return has_version_context(text, left_start, left_end, follow_range=False)
    return False


_IPV4_OCTETS = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?!$)|$)){4}", re.ASCII)


def is_valid_ipv4(candidate: str) -> bool:
    """A dotted quad with octets 0-255 and no leading zeros (as ``ipaddress`` requires)."""
    return _IPV4_OCTETS.fullmatch(candidate) is not None


def is_valid_ipv6(candidate: str) -> bool:
    """An address ``ipaddress`` accepts with >= 2 non-empty groups and >= 5 hex digits.

    The extra rule keeps ``::``, ``::1``, C++ ``a::b`` and Python slices ``x[1::2]`` out.
    """
    groups = [group for group in re.split(r"[:.]", candidate) if group]
    if len(groups) < 2 or sum(len(group) for group in groups) < 5:
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _validate_ipv4(text: str, start: int, end: int) -> tuple[int, int] | None:
    # The pattern only matches valid octets; what is left is the version context.
    return None if has_version_context(text, start, end) else (start, end)


def _validate_ipv6(text: str, start: int, end: int) -> tuple[int, int] | None:
    return (start, end) if is_valid_ipv6(text[start:end]) else None


# ---------------------------------------------------------------------- phone numbers

_PHONE_POSITIVE = _words(
    "phone phones ph tel telephone mobile mob cell cellphone call calls ring fax whatsapp"
    " signal sms contact reach hotline dial landline telefon handy rufnummer téléphone tél"
    " portable teléfono telefono móvil movil llamar llámame cellulare chiamare telefoon"
    " mobiel bellen telefone celular ligar zadzwoń komórka komorka telefonu"
)
_PHONE_NEGATIVE = _words(
    "order orders invoice inv ticket case ref reference id account acct tracking"
    " transaction txn po sku serial isbn iban bic swift zip postcode postal item part"
    " build version port pid uid line row amount total price balance qty quantity booking"
    " confirmation reservation policy claim passport license licence ssn vat tax card"
    " bestellung rechnung commande facture pedido factura ordine fattura nota zamówienie"
    " faktura usd eur gbp chf jpy inr brl pln cost costs paid pay budget rows processed"
    " commit sha hash uuid checksum"
)
# CJK has no spaces: these count when contained in a word.
_PHONE_POSITIVE_CJK = ("電話", "携帯", "連絡先")
_PHONE_NEGATIVE_CJK = ("注文", "請求書", "伝票")
# Context words are what whitespace, ASCII punctuation and digits separate.
_CONTEXT_WORD = re.compile(r"[^\s!-/0-9:-@\[-`{-~]+")


def phone_context(text: str, start: int) -> str | None:
    """``"positive"``/``"negative"`` for the phone or id word nearest before ``start``.

    Only the 32 characters before ``start`` within the same sentence or line count.
    """
    window = text[max(0, start - _CONTEXT_WINDOW) : start]
    cut = max(window.rfind(". "), window.rfind("! "), window.rfind("? "), window.rfind("; "))
    cut = max(cut + 2 if cut >= 0 else 0, window.rfind("\n") + 1)
    window = window[cut:]
    cjk = not window.isascii()
    # Whitespace separates most words: only tokens with punctuation or digits need the regex.
    for token in reversed(window.lower().split()):
        for word in (token,) if token.isalpha() else reversed(_CONTEXT_WORD.findall(token)):
            if word in _PHONE_POSITIVE or (cjk and any(k in word for k in _PHONE_POSITIVE_CJK)):
                return "positive"
            if word in _PHONE_NEGATIVE or (cjk and any(k in word for k in _PHONE_NEGATIVE_CJK)):
                return "negative"
    return None


_DIGIT_RUN = re.compile(r"\d+", re.ASCII)


def grouping_fits(candidate: str, number: phonenumbers.PhoneNumber) -> bool:
    """Whether the digit groups of ``candidate`` coarsen the number's national format.

    "020 7946 0958" and "020 79460958" fit GB's "020 7946 0958"; "02 07 94 60 95" does not.
    Digits the candidate omits (a trunk 0) or adds (NANP "1 (555) …") at the front are
    allowed when they form their own group. Without a phone word, this is what tells a
    number from a list such as "271 130 517 789".
    """
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    written = [len(group) for group in _DIGIT_RUN.findall(candidate)]
    formatted = [len(group) for group in _DIGIT_RUN.findall(national)]
    offset = sum(formatted) - sum(written)
    if offset < 0 and written[0] != -offset:
        return False
    allowed = set(itertools.accumulate(formatted[:-1])) | {0}
    return all(b + offset in allowed for b in itertools.accumulate(written[:-1]))


_PHONE_EXTENSION = re.compile(r" ?(?:x|ext\.?) ?\d{1,6}$", re.IGNORECASE)
_PHONE_SEPARATORS = str.maketrans("", "", " ().-/+")
# Shapes that are not phone numbers: dates, bare YYYYMMDD, postal codes (BR 12345-678,
# JP 123-4567), the SSN shape (left to the SSN detector), decimals (57452.87), dotted quads.
_NOT_A_PHONE = re.compile(
    r"\d{4}([-./])\d{1,2}\1\d{1,2}|\d{1,2}([-./])\d{1,2}\2\d{2,4}"
    r"|(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:[0-2]\d|3[01])"
    r"|\d{5}-\d{3}|\d{3}-\d{4}|\d{3}-\d{2}-\d{4}|\d+\.\d{1,2}|\d{1,3}(?:\.\d{1,3}){3}",
    re.ASCII,
)
_TRUNK_BARE = re.compile(r"0[1-9]\d{7,10}", re.ASCII)  # 0612345678: ids rarely lead with 0
_AMOUNT_AFTER = re.compile(r" ?(?:[€$£¥₹]|eur|usd|gbp|chf|jpy|inr|brl|pln|zł|kr|r\$)", re.I)


def _phone_digits(main: str) -> str | None:
    """The digits of a candidate without extension, or None if its shape is not a phone's."""
    digits = main.translate(_PHONE_SEPARATORS)
    if not 7 <= len(digits) <= 15 or main.count("(") != main.count(")"):
        return None
    return None if _NOT_A_PHONE.fullmatch(main) else digits


# Regions where national numbers are commonly written without their trunk 0 (BR area codes,
# IN mobiles). Elsewhere a national number without it is not tried for trunk-0 regions.
_TRUNK_OPTIONAL = frozenset(("BR", "IN"))


@functools.cache
def _region_rules(region: str) -> tuple[frozenset[int], str, bool]:
    """Possible national lengths, trunk prefix, and whether the trunk may be omitted."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = metadata.national_prefix or ""
    return frozenset(metadata.general_desc.possible_length), prefix, region in _TRUNK_OPTIONAL


class _NationalShapes(NamedTuple):
    country_code: str
    international_prefix: re.Pattern[str]
    national_prefix: re.Pattern[str] | None
    # Of every region on the calling code: its general description, and one pattern for all
    # its number types (fixed line, mobile, toll free...). Valid means matching both.
    descriptions: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...]


# The number types ``phonenumbers`` checks in ``is_valid_number`` (``_number_type_helper``).
_NUMBER_TYPES = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
    "voicemail", "fixed_line", "mobile",
)  # fmt: skip


def _region_patterns(metadata) -> tuple[re.Pattern[str], re.Pattern[str]]:
    types = [
        f"(?:{desc.national_number_pattern})"
        for name in _NUMBER_TYPES
        if (desc := getattr(metadata, name)) is not None and desc.national_number_pattern
    ]
    return (
        re.compile(metadata.general_desc.national_number_pattern),
        re.compile("|".join(types) or "(?!)"),
    )


@functools.cache
def _national_shapes(region: str) -> _NationalShapes | None:
    """What parsing a national number in ``region`` can make of its digits; None where parsing
    rewrites the prefix (a transform rule: BR, JP), which this shortcut does not model."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata.national_prefix_transform_rule:
        return None
    prefix = metadata.national_prefix_for_parsing
    return _NationalShapes(
        country_code=str(metadata.country_code),
        international_prefix=re.compile(metadata.international_prefix or "(?!)"),
        national_prefix=re.compile(prefix) if prefix else None,
        descriptions=tuple(
            _region_patterns(other)
            for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[metadata.country_code]
            if (other := phonenumbers.PhoneMetadata.metadata_for_region(code)) is not None
        ),
    )


def _may_be_valid_national(digits: str, region: str) -> bool:
    """False only when ``phonenumbers`` could not find ``digits`` valid in ``region``.

    A number is valid only if its national significant number (the digits, or the digits
    after the national prefix that parsing strips) matches the general description and one
    number type of a region on its calling code; those checks are two regexes (~1 µs), parse
    plus validation ~30 µs.
    """
    shapes = _national_shapes(region)
    if shapes is None or shapes.international_prefix.match(digits):
        return True  # parsing may read an international number: no shortcut
    candidates = [digits]
    if digits.startswith(shapes.country_code):  # parsing strips a leading calling code
        candidates.append(digits[len(shapes.country_code) :])
    if shapes.national_prefix is not None:
        # Parsing can strip the prefix after the calling code and again from the rest
        # ("1 1 1 738..." in the US): follow each candidate's chain of prefixes.
        for candidate in tuple(candidates):
            while (match := shapes.national_prefix.match(candidate)) and match.end():
                candidate = candidate[match.end() :]
                candidates.append(candidate)
    return any(
        general.fullmatch(c) and types.fullmatch(c)
        for general, types in shapes.descriptions
        for c in candidates
    )


def _is_valid_national(main: str, digits: str, regions: Sequence[str], context: str | None) -> bool:
    for region in regions:
        # Cheap metadata checks first: each parse costs ~15-20 µs.
        lengths, prefix, trunk_optional = _region_rules(region)
        if prefix == "1":  # NANP: optional leading 1, then an area code 2-9
            nanp = digits[1:] if len(digits) == 11 and digits[0] == "1" else digits
            if len(nanp) != 10 or nanp[0] in "01":
                continue
        elif prefix:
            if digits.startswith(prefix):
                if len(digits) - len(prefix) not in lengths and len(digits) not in lengths:
                    continue
            elif not trunk_optional or len(digits) not in lengths:
                continue
        elif len(digits) not in lengths:
            continue
        if not _may_be_valid_national(digits, region):
            continue
        number = phonenumbers.parse(main, region)
        if phonenumbers.is_valid_number(number) and (
            context == "positive" or grouping_fits(main, number)
        ):
            return True
    return False


def _phone_accepts(main: str, digits: str, regions: Sequence[str], context: str | None) -> bool:
    try:
        if main.startswith(("+", "00")):
            number = phonenumbers.parse("+" + main.lstrip("+")[2 * main.startswith("00") :])
            return phonenumbers.is_valid_number(number)
        if context == "negative":
            return False
        if context != "positive" and len(digits) == len(main) and not _TRUNK_BARE.fullmatch(main):
            return False  # bare digits need a phone word: they are usually ids
        return _is_valid_national(main, digits, regions, context)
    except phonenumbers.NumberParseException:
        return False


def _strip_extension(candidate: str) -> str:
    if "x" in candidate or "X" in candidate:
        return _PHONE_EXTENSION.sub("", candidate)
    return candidate


def is_valid_phone(candidate: str, regions: Sequence[str], *, context: str | None = None) -> bool:
    """Whether ``candidate`` (no surrounding text) is accepted as a phone number.

    Args:
        candidate: the number as written, with an optional extension.
        regions: regions a national-format number is validated against.
        context: ``phone_context`` of the candidate in its text.
    """
    main = _strip_extension(candidate)
    digits = _phone_digits(main)
    return digits is not None and _phone_accepts(main, digits, regions, context)


# The phone validators take the regions first, bound with a positional functools.partial: a
# keyword-bound partial builds a dict on every call.
def _validate_phone(
    regions: tuple[str, ...], text: str, start: int, end: int
) -> tuple[int, int] | None:
    if text[start] == "(" and text.count("(", start, end) > text.count(")", start, end):
        start += 1  # "Anna (0161 496 0066)": the paren belongs to the sentence
    main = _strip_extension(text[start:end])
    if main.isdigit() and not _TRUNK_BARE.fullmatch(main):
        return None  # a bare run counts only after a phone word: see _validate_phone_after_word
    # An id word before a national number rejects it whatever its shape (_phone_accepts), and
    # is the commonest reason (ISBN, invoice, card): decide that first, it is the cheapest.
    if main[0] == "+":
        context = None
    else:
        context = phone_context(text, start)
        if context == "negative" and not main.startswith("00"):
            return None
    digits = _phone_digits(main)
    if digits is None or _AMOUNT_AFTER.match(text, end):
        return None
    if main[0] != "+" and "." in main and has_version_context(text, start, end):
        return None
    return (start, end) if _phone_accepts(main, digits, regions, context) else None


def _validate_phone_after_word(
    regions: tuple[str, ...], text: str, start: int, end: int
) -> tuple[int, int] | None:
    # The match is a bare number; it counts after "<phone word><up to 30 non-digits>".
    if phone_context(text, start) != "positive":
        return None  # no phone word, an id word is nearer, or the word is in another sentence
    if not _PHONE_WORD_BEFORE.search(text, max(0, start - _PHONE_WORD_REACH), start):
        return None  # the phone word is further away, or a digit or line break intervenes
    number = text[start:end]
    digits = _phone_digits(number)
    if digits is None or _AMOUNT_AFTER.match(text, end):
        return None
    return (start, end) if _phone_accepts(number, digits, regions, "positive") else None


# ----------------------------------------------------------------------------- patterns

# Phone words that make a bare digit run a phone number ("t.l.phone" is also "téléphone").
_PHONE_WORDS = (
    r"phones?|tel|telephone|mobile|mob|cell|cellphone|calls?|ring|fax|whatsapp|signal|sms"
    r"|contact|reach|hotline|dial|landline|telefon|handy|rufnummer|t.l.phone|t.l|portable"
    r"|tel.fono|m.vil|llamar|ll.mame|cellulare|chiamare|telefoon|mobiel|bellen|telefone"
    r"|celular|ligar|zadzwo.|kom.rka|telefonu"
)
_PHONE_WORDS_CJK = ("電話", "携帯", "連絡先")  # no word boundaries in CJK
# A bare number (no separators) is a phone number only after a phone word followed by at
# most 30 characters that are neither digits nor line breaks: "call me on 4155552671".
# The detector matches the number (so the locators find it where they find other phone
# numbers, no word scan needed) and the validator looks back for the word.
_PHONE_AFTER_WORD = r"""
    (?<![\w\#@$%&/.+=\\\-£€¥₹])(?<!\d:)\d{7,15}(?![\w@%\-/]|[.,:]\d)
"""
_PHONE_WORD_BEFORE = re.compile(
    rf"(?:(?<![A-Za-z])(?i:{_PHONE_WORDS})(?![A-Za-z])|{'|'.join(_PHONE_WORDS_CJK)})"
    r"[^\d\n]{0,30}\Z",
    re.ASCII,
)
_PHONE_WORD_REACH = 64  # >= 30 + the longest phone word, so the search sees every candidate

_EMAIL = r"""
    (?<![A-Za-z0-9._%+\-])
    [A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?
    @(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}
    (?![A-Za-z0-9\-])
"""

# Starts at '+' or at a digit/paren not glued to an identifier, path, version, time or amount;
# possessive quantifiers stop the regex from backtracking into a shorter, digit-truncated number.
_PHONE = r"""
    (?:
        (?<![\w+])\+
      | (?<![\w\#@$%&/.+=\\\-£€¥₹])(?<!\d:)
        (?!\d{4}[-./]\d\d?[-./]\d\d?(?!\d)|\d{1,3}(?:\.\d{1,3}){3}(?![\d.]))  # date, quad
        (?![1-9]\d*+(?![\d()\-/]|[.\ ][\d(]))  # bare run, no trunk 0: see phone_after_word
    )
    \(?\d(?:(?:[()\-/]|[.\ ](?=[\d(])){0,3}+\d){6,30}+   # "." and " " precede a digit
    (?:\ ?(?:[xX]|[eE]xt\.?)\ ?\d{1,6})?
    (?![\w@%\-/]|[.,:]\d)
"""

_CARD = r"""
    (?<![\w.\-+/])
    (?:
        \d{4}(?P<card_sep>[\ \-]?)\d{4}(?P=card_sep)\d{4}
            (?:(?P=card_sep)\d{1,4}(?:(?P=card_sep)\d{1,3})?)?
      | \d{4}(?P<card_sep6>[\ \-]?)\d{6}(?P=card_sep6)\d{4,5}
    )
    (?![\w\-]|[.,]\d)
"""

_SSN = r"""
    (?<![\w\-.])\d{3}-\d{2}-\d{4}(?![\w\-]|[.,]\d)
"""

_SSN_CONTEXT = r"""
    (?i:\b(?:ssn|ss\#|ss\ no|social\ security|soc\.?\ ?sec))
    [^\d\n]{0,20}?
    (?<![\w\-.])\d{3}(?P<ssn_sep>[\ \-]?)\d{2}(?P=ssn_sep)\d{4}(?![\w\-]|[.,]\d)
"""

_IBAN = r"""
    (?<![A-Za-z0-9])
    [A-Z]{2}\d{2}(?:\ ?[A-Z0-9]{4}){2,7}(?:\ ?[A-Z0-9]{1,4})?
    (?![A-Za-z0-9])
"""

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"  # 0-255 without leading zeros
_IPV4 = rf"""
    (?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)
"""

_IPV6 = r"""
    (?<![\w:.])
    [0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}
    (?![\w:]|\.\d)
"""

_AWS_KEY_ID = r"""
    (?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])
"""

_AWS_SECRET = r"""
    (?i:aws_?secret_?access_?key|secret_?access_?key|aws_?secret)["']?\s*[:=]\s*["']?
    [A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])
"""

_GCP_API_KEY = r"""
    (?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])
"""

_JWT = r"""
    (?<![A-Za-z0-9_\-])
    eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*
"""

_PEM = r"""
    -----BEGIN\ (?P<pem_label>[A-Z0-9]+(?:\ [A-Z0-9]+)*\ )?PRIVATE\ KEY(?:\ BLOCK)?-----
    (?:
        (?:(?!-----)[\s\S]){0,16384}+   # up to the next dashes: linear however many BEGINs
        -----END\ (?P=pem_label)?PRIVATE\ KEY(?:\ BLOCK)?-----
      | (?:[\ \t]*\r?\n[\ \t]*                              # no END line: take whole lines
         (?:[A-Za-z0-9+/=]{4,}|(?:Proc-Type|DEK-Info|Comment):\ [^\r\n]*)[\ \t]*(?![^\r\n]))*
    )
"""

_OPENAI_KEY = r"""
    (?<![A-Za-z0-9_\-])sk-[A-Za-z0-9_\-]{20,}
"""

_GITHUB_TOKEN = r"""
    (?<![A-Za-z0-9_])
    (?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})
    (?![A-Za-z0-9_])
"""

_SLACK_TOKEN = r"""
    (?<![A-Za-z0-9\-])(?:xox[abprs]|xapp)-[A-Za-z0-9\-]{10,250}
"""

_BEARER = r"""
    (?<![A-Za-z0-9])(?i:bearer)[\ \t]+[A-Za-z0-9\-._~+/]{16,}=*
"""

_HAS_DIGIT = re.compile(r"\d", re.ASCII)


def _validate_aws_secret(text: str, start: int, end: int) -> tuple[int, int] | None:
    return end - 40, end  # redact the key, keep its label readable


def _validate_openai_key(text: str, start: int, end: int) -> tuple[int, int] | None:
    return (start, end) if _HAS_DIGIT.search(text, start + 3, end) else None


def _validate_bearer(text: str, start: int, end: int) -> tuple[int, int] | None:
    token_start = start + 6
    while text[token_start] in " \t":
        token_start += 1
    # Keep "Bearer " readable; "Bearer YOUR_ACCESS_TOKEN" (no digit) is a placeholder.
    return (token_start, end) if _HAS_DIGIT.search(text, token_start, end) else None


# Locator building blocks: "(?:^|[^X])" stands in for the exact pattern's (?<![X]).
_PHONE_LOCATORS = (
    r"(?:^|[^\w+])\+\(?\d(?:[ ().\-/]{0,3}\d){6}",
    r"(?:^|[^\w#@$%&/.+=\\\-])\(?\d(?:[ ().\-/]{0,3}\d){6}",
)


def build_detectors(
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
) -> tuple[Detector, ...]:
    """Returns every detector; ``priority`` decides between overlapping findings.

    Args:
        phone_regions: regions national-format phone numbers are validated against.

    Raises:
        ValueError: a region is unknown to ``phonenumbers``, or none is given.
    """
    regions = tuple(phone_regions)
    unknown = sorted(set(regions) - phonenumbers.SUPPORTED_REGIONS)
    if unknown or not regions:
        raise ValueError(f"unknown or empty phone regions: {unknown}")
    return (
        _detector("pem", ENCRYPTION_KEY, _PEM, [r"-----BEGIN "], priority=0),
        _detector("jwt", JSON_WEB_TOKEN, _JWT, [r"eyJ[A-Za-z0-9_\-]{5}"], priority=1),
        _detector("aws_key_id", AWS_CREDENTIALS, _AWS_KEY_ID, [r"AKIA|ASIA"], priority=2),
        _detector(
            "aws_secret",
            AWS_CREDENTIALS,
            _AWS_SECRET,
            [r"(?i)aws_?secret|secret_?access_?key"],
            priority=2,
            validator=_validate_aws_secret,
        ),
        _detector("gcp_api_key", GCP_API_KEY, _GCP_API_KEY, [r"AIza"], priority=3),
        _detector("github_token", AUTH_TOKEN, _GITHUB_TOKEN, [r"gh[pousr]_|github_pat_"], 4),
        _detector("slack_token", AUTH_TOKEN, _SLACK_TOKEN, [r"xox[abprs]-|xapp-"], 4),
        _detector(
            "openai_key",
            AUTH_TOKEN,
            _OPENAI_KEY,
            [r"sk-[A-Za-z0-9_\-]{20}"],
            priority=4,
            validator=_validate_openai_key,
        ),
        _detector(
            "bearer",
            AUTH_TOKEN,
            _BEARER,
            [r"(?i)bearer[ \t]+[A-Za-z0-9\-._~+/]{16}"],
            priority=5,
            validator=_validate_bearer,
        ),
        _detector(
            "email",
            EMAIL_ADDRESS,
            _EMAIL,
            [r"(?:^|[^A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]*@"],
            priority=10,
        ),
        _detector(
            "iban",
            IBAN_CODE,
            _IBAN,
            [r"[A-Z]{2}\d{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}"],
            priority=11,
            validator=_validate_iban,
        ),
        _detector(
            "card",
            CREDIT_CARD_NUMBER,
            _CARD,
            [
                r"(?:^|[^\w.\-+/])\d{4}[ \-]?\d{4}[ \-]?\d{4}",
                r"(?:^|[^\w.\-+/])\d{4}[ \-]?\d{6}[ \-]?\d{4}",
            ],
            priority=12,
            validator=_validate_card,
        ),
        _detector(
            "ssn",
            US_SOCIAL_SECURITY_NUMBER,
            _SSN,
            [r"(?:^|[^\w\-.])\d{3}-\d{2}-\d{4}"],
            priority=13,
            validator=_validate_ssn,
        ),
        _detector(
            "ssn_context",
            US_SOCIAL_SECURITY_NUMBER,
            _SSN_CONTEXT,
            [r"(?i)ssn|ss#|ss no|social security|soc\.? ?sec"],
            priority=13,
            validator=_validate_ssn,
        ),
        _detector(
            "ipv4",
            IP_ADDRESS,
            _IPV4,
            [r"(?:^|[^\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d"],
            priority=14,
            validator=_validate_ipv4,
        ),
        _detector(
            "ipv6",
            IP_ADDRESS,
            _IPV6,
            # A valid address with >= 2 groups contains "::", or has 8 groups, or 6 + a quad.
            [
                r"(?:^|[^\w:.])(?:[0-9A-Fa-f]{1,4}:){0,7}[0-9A-Fa-f]{0,4}::",
                r"(?:^|[^\w:.])(?:[0-9A-Fa-f]{1,4}:){6}[0-9A-Fa-f]",
            ],
            priority=14,
            validator=_validate_ipv6,
        ),
        _detector(
            "phone",
            PHONE_NUMBER,
            _PHONE,
            _PHONE_LOCATORS,
            priority=15,
            validator=functools.partial(_validate_phone, regions),
        ),
        _detector(
            "phone_after_word",
            PHONE_NUMBER,
            _PHONE_AFTER_WORD,
            [r"(?:^|[^\w#@$%&/.+=\\\-])\d{7}"],
            priority=15,
            validator=functools.partial(_validate_phone_after_word, regions),
        ),
    )
