"""Detectors for PII and secrets: exact patterns, validators and hyperscan locators.

Each ``Detector`` has an exact Python ``re`` pattern (ASCII classes), an optional validator
that accepts, trims or rejects a candidate span, and *locators*: lookaround-free patterns
(hyperscan and ``re`` syntax) such that wherever ``pattern`` matches at position ``p``, a
locator match starts at ``p`` or ``p - 1`` (one boundary character) and is the leftmost
match with its end. The engine scans every locator in one hyperscan pass and tries the
exact pattern only at those positions, so Python's ``re`` never scans a whole text. Keep
that property when editing a pattern: the tests compare the located output with running
every pattern over every text.

Patterns match the longest run that could hold a value (a card number and the groups after
it, a phone number and the digits glued to it); validators then try that run and, when it
fails, its shorter prefixes at group boundaries, so ``card 4111 1111 1111 1111 12/27``,
``4111111111111111,123`` and ``call +44 7911 123456 24/7`` are found (a value preceded by
more digit groups of the same run is not: ``1234 5678 4111 1111 1111 1111``). The engine also
runs every detector on the text's normalised view (``transforms.pii.normalise``: NFKC, no
zero-width characters, decoded ``%40``, ``&#64;`` ...), so these patterns only need the ASCII
shapes.

What is redacted, and what deliberately is not (and why):

EMAIL_ADDRESS
    ``local@domain.tld`` with an ASCII local part and a letters-only or punycode TLD, also
    glued to trailing digits (``jane@example.com123``) or wrapped after the ``@``.
    ``git@github.com`` is redacted too (indistinguishable from a mailbox). Not found:
    non-ASCII (IDN) local parts and domains, a line break before the ``@`` (``x\\n@app.route``
    is a Python decorator).
PHONE_NUMBER
    Candidates are digit runs with ``space - . / ( )`` separators (a line break too) and an
    optional extension, accepted by ``transforms.pii.phones.accepts``: a *possible* number
    (length and grouping from ``phonenumbers`` metadata), not only an assigned one.
    International numbers (``+``, ``00``, ``011``) need no context; national ones must be
    written in a national grouping of ``DEFAULT_PHONE_REGIONS``, or trunk-prefixed, or come
    after a phone word (``phone``, ``tel``, ``call``, ``WhatsApp``, ``Telefon``, ``電話`` …, or
    the header of their column in a CSV or Markdown table). A bare digit run counts only
    right after a phone word (``WhatsApp 4155552671``: at most 30 characters between them,
    none a digit or a line break), as such runs are ids and counts far more often. A number
    nearer to an id word (``order``, ``invoice``, ``ticket``, ``id``, ``ref`` …) than to a
    phone word is not national; neither is a date, a dotted quad, a dotted version after a
    version word, an amount (a currency after it, or thousands groups before ``,dd``), a run
    glued to an identifier (``INV-2024…``, ``#…``, ``/path/…``) or part of a time (``…:30``).
    A line break inside a national number needs a phone word.

    Not found: bare digits without a phone word and without a trunk 0, national groupings
    of regions outside the default list without a phone word, vanity numbers
    (``1-800-FLOWERS``). Residual false positives: digit groups that happen to form a
    national grouping (``654 751 890``, a Polish mobile's shape).
CREDIT_CARD_NUMBER
    12-19 digits, bare or in groups (4-4-4[-4[-3]], 4-6-5, 4-6-4) separated by spaces (one or
    two), dashes, dots or a line break, Luhn-valid and not one repeated digit; 12 digits only
    with a Maestro prefix. A bare (unseparated) run must also start with a known issuer
    prefix, because bare Luhn-valid runs include epoch-ms timestamps and ids (1 in 10 random
    numbers pass Luhn), and is never shortened. A Luhn-valid 16-digit order id written in
    groups of four is redacted: that is the price of failing closed. Visa-13 grouped 4-3-3-3
    is not recognised (rare).
US_SOCIAL_SECURITY_NUMBER
    ``ddd-dd-dddd`` with SSA-valid parts (area not 000/666/9xx, group not 00, serial not
    0000). The same digits spaced, dotted or bare count only right after ``SSN``/``social
    security`` (up to 20 non-digit characters between), as nine-digit runs are common ids.
IBAN_CODE
    Country code + check digits + BBAN in either case, compact or in groups of four
    separated by spaces, dashes, dots or a line break, valid per ``stdnum.iban`` (country
    length/format and the ISO 7064 mod-97 checksum). Whatever is glued after it
    (``… 3000 BIC``, ``…3000BIC``) is trimmed off until the checksum holds.
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
    JSON_WEB_TOKEN: ``eyJ….eyJ….sig`` (base64url JSON header and payload), also wrapped over
    lines. ENCRYPTION_KEY: PEM/OpenSSH/PGP private-key blocks of any size, to the END line
    or, when it is missing (truncated paste), to the last line of the block (base64 lines,
    armor headers such as ``Version:``, blank lines, ``\\n``-escaped line breaks as in a
    service-account JSON key). AUTH_TOKEN: OpenAI ``sk-``/``sk-proj-`` keys, GitHub ``ghp_
    gho_ ghu_ ghs_ ghr_ github_pat_`` tokens, Slack ``xox[abprs]-``/``xapp-`` tokens, and the
    token after ``Bearer``. Tokens and ``sk-`` keys must contain a digit and be >= 16/20
    characters, so placeholders (``Bearer YOUR_TOKEN``) stay readable.
    Not found: generic ``password=`` / ``api_key=`` assignments, public keys and
    certificates (not secret), Stripe/Twilio/other vendors' formats.

Overlaps are resolved by the engine (``priority``: secrets below 10, PII from 10): a secret
beats PII, then the longer span wins, then the lower priority (more specific type), then the
earlier start. So a JWT after ``Bearer`` is one JSON_WEB_TOKEN, ``+81 568-76-9840`` is a
phone number rather than an SSN, an SSN-shaped phone candidate is an SSN, a card is never
also a phone, and a token in ``https://ghp_…@github.com`` stays an AUTH_TOKEN.

Length (over 600 lines): every detector's pattern, locators and validator sit together, since
the locator property above is checked across all of them; pattern tables are most of it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Collection, Sequence
from types import ModuleType
from typing import NamedTuple

import phonenumbers
from stdnum import exceptions as stdnum_exceptions
from stdnum import iban as stdnum_iban
from stdnum import numdb
from stdnum import util as stdnum_util

from transforms.pii import phones
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
    "has_version_context",
    "is_phone_number",
    "is_valid_card_number",
    "is_valid_iban",
    "is_valid_ipv4",
    "is_valid_ipv6",
    "is_valid_ssn",
    "luhn_ok",
    "phone_context",
]

# National-format phone numbers without a phone word must have a national grouping of one of
# these regions (ISO 3166 codes, phonenumbers metadata). "US" covers every NANP region.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP", "AU", "PL",
)  # fmt: skip

_CONTEXT_WINDOW = 32  # characters before a phone candidate searched for context words


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
        whole_text: the locators only tell whether the pattern may match in a text (a long
            repetition whose every start would cost the scan); the pattern then searches it.
    """

    name: str
    info_type: str
    source: str
    pattern: re.Pattern[str]
    locators: tuple[str, ...]
    validator: Validator | None
    priority: int
    whole_text: bool = False

    def find(self, text: str, starts: Collection[int] | None = None) -> list[Finding]:
        """Accepted findings in ``text``, left to right, only trying ``starts``.

        After an accepted finding (which a validator may have trimmed) the search resumes at
        its end; after a rejected candidate, at the candidate's end.

        Args:
            text: the text.
            starts: candidate positions (from the locators), in any order, repeats allowed;
                None searches the whole text. Both give the same findings when every match
                starts at a candidate.
        """
        validator, info_type, priority = self.validator, self.info_type, self.priority
        findings = []
        if starts is None:
            search, position = self.pattern.search, 0
            while (match := search(text, position)) is not None:
                start, end = match.span()
                span = (start, end) if validator is None else validator(text, start, end)
                if span is None:
                    position = max(end, start + 1)
                else:
                    findings.append(Finding(span[0], span[1], info_type, priority))
                    position = max(span[1], start + 1)
            return findings
        resume, match_at = 0, self.pattern.match
        for start in sorted(starts) if len(starts) > 1 else starts:
            if start >= resume:
                match = match_at(text, start)
                if match is None:
                    continue
                end = match.end()
                span = (start, end) if validator is None else validator(text, start, end)
                if span is None:
                    resume = end if end > start else start + 1
                else:
                    findings.append(Finding(span[0], span[1], info_type, priority))
                    resume = span[1] if span[1] > start else start + 1
        return findings


_FLAGS = re.ASCII | re.VERBOSE


def _detector(
    name: str,
    info_type: str,
    source: str,
    locators: Sequence[str],
    priority: int,
    validator: Validator | None = None,
    whole_text: bool = False,
) -> Detector:
    return Detector(
        name=name,
        info_type=info_type,
        source=source,
        pattern=re.compile(source, _FLAGS),
        locators=tuple(locators),
        validator=validator,
        priority=priority,
        whole_text=whole_text,
    )


# Separators inside a grouped number (card, IBAN): one or two spaces or tabs, a dash, a dot,
# or a line break (with two characters of indentation at most). The locators take any run of
# up to 5 of these characters: a plain class keeps the hyperscan database fast. A line break
# is not a separator when the next line starts with an ISO date (a log line's timestamp after
# a number is not more of it).
_SEP = r"(?:[\ \t]{1,2}|[\-.]|[\ \t]?\r?\n[\ \t]{0,2}(?!\d{4}-\d\d-\d\d(?!\d)))"
_SEP_LOCATOR = r"[ \t\r\n.\-]{1,5}"
_SEP_LOCATOR_OPT = r"[ \t\r\n.\-]{0,5}"
_DIGIT_GROUP = re.compile(r"\d+", re.ASCII)


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
    return _card_number_ok(digits, bare)


def _card_number_ok(digits: str, bare: bool) -> bool:
    # is_valid_card_number with positional arguments (a keyword builds a dict per call), the
    # prefixes looked up by the first four digits, the cheap rejections first.
    if not 12 <= len(digits) <= 19:
        return False
    if bare and digits[:4] not in _BARE_CARD_PREFIX4:
        return False
    if len(digits) == 12 and digits[:4] not in _MAESTRO_PREFIX4:
        return False
    if digits == digits[0] * len(digits):
        return False
    return luhn_ok(digits)


def _four_digit_prefixes(prefixes: tuple[str, ...]) -> frozenset[str]:
    return frozenset(p for p in (f"{n:04d}" for n in range(10_000)) if p.startswith(prefixes))


_BARE_CARD_PREFIX4 = _four_digit_prefixes(_BARE_CARD_PREFIXES)
_MAESTRO_PREFIX4 = _four_digit_prefixes(_MAESTRO_PREFIXES)


# The complete shapes a card number can be cut back to when more digit groups follow it.
_COMPLETE_CARD_SHAPES = ([4, 4, 4, 4], [4, 4, 4, 4, 3], [4, 6, 5], [4, 6, 4])


def _card_shape(groups: Sequence[int]) -> bool:
    """4-4-4[-1..4[-1..3]], 4-6-4 or 4-6-5."""
    if groups[:3] == [4, 4, 4]:
        return len(groups) == 3 or (
            len(groups) <= 5
            and 1 <= groups[3] <= 4
            and (len(groups) == 4 or (groups[3] == 4 and 1 <= groups[4] <= 3))
        )
    return len(groups) == 3 and groups[:2] == [4, 6] and groups[2] in (4, 5)


def _validate_card(text: str, start: int, end: int) -> tuple[int, int] | None:
    candidate = text[start:end]
    if candidate.isdigit():  # bare: the pattern checked its boundaries; never shortened
        return (start, end) if _card_number_ok(candidate, True) else None
    if end < len(text) and (text[end].isalnum() or text[end] == "_"):
        # Glued to a word: only what comes before its last space can be a number.
        end = max(text.rfind(" ", start, end), text.rfind("\t", start, end))
        if end <= start:
            return None  # part of an identifier
        candidate = text[start:end]
    runs = _DIGIT_GROUP.findall(candidate)
    groups = [len(run) for run in runs]
    # The whole run, then its complete card-shaped prefixes ("… 1111 12/27"): never a
    # shorter number than the groups show (the first 12 digits of a 16-digit id).
    for count in range(len(runs), 2, -1):
        shape = groups[:count]
        shaped = _card_shape(shape) if count == len(runs) else shape in _COMPLETE_CARD_SHAPES
        if shaped and _card_number_ok("".join(runs[:count]), False):
            run_ends = [run.end() for run in _DIGIT_GROUP.finditer(text, start, end)]
            return start, run_ends[count - 1]
    return None


def is_valid_ssn(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_FIRST_DIGIT = re.compile(r"\d", re.ASCII)
_SSN_SEPARATORS = str.maketrans("", "", " -.")


def _validate_ssn(text: str, start: int, end: int) -> tuple[int, int] | None:
    # A context match starts with its label ("SSN: "), which holds no digit: skip it.
    number_start = _FIRST_DIGIT.search(text, start, end).start()  # type: ignore[union-attr]
    digits = text[number_start:end].translate(_SSN_SEPARATORS)
    if not is_valid_ssn(digits[:3], digits[3:5], digits[5:]):
        return None
    return number_start, end


def is_valid_iban(candidate: str) -> bool:
    """Country format and length plus the mod-97 checksum (``stdnum.iban``; any case,
    spaces, dashes and dots allowed)."""
    return bool(stdnum_iban.is_valid(candidate))


_ALNUM = re.compile(r"[A-Za-z0-9]", re.ASCII)
_BBAN_FIELD = re.compile(r"(\d+)!([nac])")


_BBAN_CHARS = {"n": "[0-9]", "a": "[A-Z]", "c": "[A-Z0-9]"}
# Letters as the numbers the mod-97 check reads them as (A = 10 ... Z = 35).
_IBAN_NUMBERS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)})


@functools.cache
def _iban_rules(country: str) -> tuple[int, re.Pattern[str]] | None:
    """The IBAN length of ``country`` and the shape of its BBAN (``stdnum``'s registry),
    None when the country has no IBAN."""
    structure = numdb.get("iban").info(country)[0][1].get("bban")
    if not structure:
        return None
    fields = _BBAN_FIELD.findall(structure)
    shape = "".join(f"{_BBAN_CHARS[kind]}{{{n}}}" for n, kind in fields)
    return 4 + sum(int(n) for n, _ in fields), re.compile(shape)


def _validate_iban(text: str, start: int, end: int) -> tuple[int, int] | None:
    # An IBAN has its country's length: what is glued after it ("… 3000 BIC", "…3000BIC")
    # is cut off there, and only that prefix is checked. Shape and checksum first (cheap),
    # then stdnum's country-specific checks.
    rules = _iban_rules(text[start : start + 2].upper())
    if rules is None:
        return None
    length, bban = rules
    positions = [m.start() for m in _ALNUM.finditer(text, start, end)]
    if len(positions) < length:
        return None
    compact = "".join(text[i] for i in positions[:length]).upper()
    if bban.fullmatch(compact, 4) is None:
        return None
    if int((compact[4:] + compact[:4]).translate(_IBAN_NUMBERS)) % 97 != 1:
        return None
    return (start, positions[length - 1] + 1) if _country_rules_hold(compact) else None


@functools.cache
def _iban_country_module(country: str) -> ModuleType | None:
    """``stdnum``'s module of national IBAN checks for ``country``, if it has one."""
    return stdnum_util.get_cc_module(country.lower(), "iban")


def _country_rules_hold(compact: str) -> bool:
    """The rest of ``is_valid_iban`` for an IBAN whose length, BBAN shape and checksum
    already hold (what ``_validate_iban`` checked): the national checks ``stdnum`` has for
    some countries (a Belgian or Spanish account's own check digits ...). ``stdnum.iban``
    would repeat the others, at about 300,000 instructions per IBAN."""
    module = _iban_country_module(compact[:2])
    if module is None:
        return True
    try:
        module.validate(compact)
    except stdnum_exceptions.ValidationError:
        return False
    return True


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
    " signal sms text texts contact reach hotline dial landline telefon handy rufnummer"
    " telefonnummer handynummer mobilnummer mobil festnetz téléphone tél portable teléfono"
    " telefono tfno tlf móvil movil llamar llámame cellulare chiamare telefoon"
    " telefoonnummer mobiel bellen telefone celular ligar zadzwoń komórka komorka telefonu"
    " whats"
)
# Weak phone words: they count only when no id word comes before them ("my number is …"
# yes, "order number …" no).
_PHONE_WEAK = _words("number nr num nummer numéro numero número numer")
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
_SEPARATORS = "".join(chr(c) for c in range(0x21, 0x7F) if not chr(c).isalpha())
_NOT_BREAKING = "".join(c for c in _SEPARATORS if c not in ".!?;")  # no sentence ends with


# Every context word and what it makes of a number after it (a positive word beats a negative
# one, a negative one a weak one): one lookup per word.
_CONTEXT_KIND: dict[str, str] = {
    **dict.fromkeys(_PHONE_WEAK, "weak"),
    **dict.fromkeys(_PHONE_NEGATIVE, "negative"),
    **dict.fromkeys(_PHONE_POSITIVE, "positive"),
}


def _word_context(lowered: str) -> str | None:
    """The context of the words of ``lowered`` (lower-cased text) read from the nearest (last)
    to the farthest: the first phone or id word decides; otherwise a weak word is positive.

    Words are what whitespace, ASCII punctuation and digits separate (``_CONTEXT_WORD``); most
    tokens between spaces are one word, or one word in punctuation (``(ISBN``), so the regex
    only runs on the others."""
    weak = False
    cjk = not lowered.isascii()
    for token in reversed(lowered.split()):
        if token in _CONTEXT_KIND:
            words = (token,)
        else:
            word = token.strip(_SEPARATORS)
            words = (word,) if word.isalpha() else reversed(_CONTEXT_WORD.findall(token))
        for word in words:
            kind = _CONTEXT_KIND.get(word)
            if kind is None and cjk:
                kind = _cjk_context(word)
            if kind == "weak":
                weak = True
            elif kind is not None:
                return kind
    return "positive" if weak else None


@functools.lru_cache(maxsize=1024)
def _name_context(name: str) -> str | None:
    """``_word_context`` of a key or a column header (lower case): the same few names recur
    in a text (``created_at=``, a CSV header over every row), so they are cached."""
    return _word_context(name)


def _cjk_context(word: str) -> str | None:
    if any(k in word for k in _PHONE_POSITIVE_CJK):
        return "positive"
    if any(k in word for k in _PHONE_NEGATIVE_CJK):
        return "negative"
    return None


def phone_context(text: str, start: int) -> str | None:
    """``"positive"``/``"negative"`` for the phone or id word nearest before ``start``.

    Only the 32 characters before ``start`` within the same sentence or line count; when
    they hold neither, a CSV or Markdown table row's column header does (``column_context``).
    """
    window = text[max(0, start - _CONTEXT_WINDOW) : start]
    # The word right before the number usually decides ("order 1234567", "call 0612 …"):
    # when it is a whole phone or id word, the rules below would stop at it too.
    stripped = window.rstrip(" \t")
    if stripped and not stripped[-1].isspace():  # a line break after it would cut it off
        nearest = stripped.rsplit(None, 1)
        if len(nearest) == 2:  # not cut by the window's start
            # Punctuation around it ("(ISBN", "Tel:") is no part of a word; a period, "!",
            # "?" or ";" after it may end a sentence, so the rules below decide those.
            word = nearest[1].lower().lstrip(_SEPARATORS).rstrip(_NOT_BREAKING)
            kind = _CONTEXT_KIND.get(word)
            if kind == "negative" or kind == "positive":
                return kind
    period = window.rfind(". ")
    while period >= 0 and _ends_with_abbreviation(window, period):
        period = window.rfind(". ", 0, period)  # "tel. 0612…" ends no sentence
    cut = max(period, window.rfind("! "), window.rfind("? "), window.rfind("; "))
    cut = max(cut + 2 if cut >= 0 else 0, window.rfind("\n") + 1)
    window = window[cut:]
    context = _word_context(window.lower())
    return context if context is not None else column_context(text, start)


# Abbreviations whose period ends no sentence (a phone word, "nr.", "no."), 2-4 letters.
_ABBREVIATIONS = frozenset(("tel", "tél", "ph", "mob", "fax", "nr", "no", "num", "tfno", "tlf"))
_ABBREVIATION_ENDS = frozenset(
    "".join(a[-1] for a in _ABBREVIATIONS) + "".join(a[-1].upper() for a in _ABBREVIATIONS)
)
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _ends_with_abbreviation(window: str, end: int) -> bool:
    """Whether ``window[:end]`` ends with an abbreviation not glued to an ASCII letter before it
    (any case): ``Tel`` and ``(nr`` yes, ``Hotel`` no. A slice per length, no regex search."""
    if not end or window[end - 1] not in _ABBREVIATION_ENDS:
        return False  # most sentences: no abbreviation ends with their last character
    for length in (2, 3, 4):
        start = end - length
        if start < 0:
            return False
        if window[start:end].lower() in _ABBREVIATIONS and (
            not start or window[start - 1] not in _ASCII_LETTERS
        ):
            return True
    return False


_DELIMITERS = (",", ";", "\t", "|")
_MAX_HEADER_LINES = 50
_DATA_CELL = re.compile(r"\s*[+(\-]?\d")
_RULE_ROW = frozenset("|-:+ \t")


def column_context(text: str, start: int) -> str | None:
    """The context of the column ``start`` is in, when its line is a row of a delimited table
    (CSV, TSV, a Markdown table) under a header row: ``phone`` or ``Tel.`` is positive,
    ``order_id`` negative. None when the line is not such a row."""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start].rstrip(" \t\"'")
    if before and before[-1] not in _DELIMITERS:
        return None  # not the first thing in a field: a number in prose
    line_end = text.find("\n", start)
    line = text[line_start : len(text) if line_end < 0 else line_end]
    delimiter = max(_DELIMITERS, key=line.count)
    cells = line.count(delimiter)
    if not cells or line_start == 0:
        return None
    column = text.count(delimiter, line_start, start)
    position = line_start - 1
    for _ in range(_MAX_HEADER_LINES):
        if position <= 0:
            return None
        above = text.rfind("\n", 0, position) + 1
        row = text[above:position].rstrip("\r")
        position = above - 1
        if row.count(delimiter) != cells:
            return None  # the table ends before a header
        if set(row) <= _RULE_ROW:
            continue  # a Markdown rule |---|---|
        names = row.split(delimiter)
        name = names[column].lower()
        if _DATA_CELL.match(name):
            continue  # another data row
        context = _name_context(name)
        if context is None and any(_DATA_CELL.match(cell) for cell in names):
            continue  # a data row whose cell in this column holds no number
        return context  # the header (its first cell may follow other text on its line)
    return None


_PHONE_EXTENSION = re.compile(r"[ \t]?(?:x|ext\.?)[ \t]?\d{1,6}$", re.IGNORECASE)
_TRUNK_BARE = re.compile(r"0[1-9]\d{7,10}", re.ASCII)  # 0612345678: ids rarely lead with 0
_AMOUNT_AFTER = re.compile(r" ?(?:[€$£¥₹]|eur|usd|gbp|chf|jpy|inr|brl|pln|zł|kr|r\$)", re.I)
_DECIMALS_AFTER = re.compile(r"[.,]\d{1,2}(?!\d)", re.ASCII)


def _strip_extension(candidate: str) -> str:
    if "x" in candidate or "X" in candidate:
        return _PHONE_EXTENSION.sub("", candidate)
    return candidate


def is_phone_number(candidate: str, regions: Sequence[str], *, context: str | None = None) -> bool:
    """Whether ``candidate`` (no surrounding text) is accepted as a phone number.

    Args:
        candidate: the number as written, with an optional extension.
        regions: regions whose national groupings count without a phone word.
        context: ``phone_context`` of the candidate in its text.
    """
    return phones.accepts(_strip_extension(candidate), regions, context)


def _may_end(text: str, end: int, main: str, context: str | None = None) -> bool:
    """Whether a national candidate ``main`` may end at ``end``: not a time, and without a
    phone word before it not an amount (a currency after it, or thousands groups before
    decimals) or a decimal."""
    if end == len(text):
        return True
    following = text[end]
    if following == ":" and text[end + 1 : end + 2].isdigit():
        return False
    if context == "positive":
        return True
    if _AMOUNT_AFTER.match(text, end):
        return False
    decimals = _DECIMALS_AFTER.match(text, end)
    if decimals is not None:
        return " " not in main and "." not in main and not _AMOUNT_AFTER.match(text, decimals.end())
    return True


# A date or a time after a line break starts a new line of a log, not the rest of a number.
_DATE_OR_TIME = re.compile(
    r"\s*(?:\d{4}[-./]\d\d?[-./]\d|\d\d?[-./]\d\d?[-./]\d\d|\d\d?:\d\d)", re.ASCII
)


def _is_phone_key(text: str, equals: int) -> bool:
    """Whether the key before the ``=`` at ``equals`` names a phone (``phone=``,
    ``contact_phone=``, ``?telephone=``, ``TELEFON=``)."""
    before = text[max(0, equals - 40) : equals].rsplit(None, 1)
    return _name_context(before[-1].lower() if before else "") == "positive"


def _candidate_ends(text: str, start: int, end: int) -> list[int]:
    """Where candidates starting at ``start`` may end: the whole run, then every shorter prefix
    ending at a digit group before any line break. A run across a line break is a candidate
    whole or not at all, and not when the next line starts with a date or a time."""
    line_break = text.find("\n", start, end)
    stop = end if line_break < 0 else line_break
    ends = [run.end() for run in _DIGIT_GROUP.finditer(text, start, stop)]
    ends.reverse()
    if line_break < 0 and ends[0] != end:
        ends.insert(0, end)  # an extension's letters end the run: "… x204"
    elif line_break >= 0 and not _DATE_OR_TIME.match(text, line_break + 1):
        ends.insert(0, end)
    return ends


# The phone validators take the regions first, bound with a positional functools.partial: a
# keyword-bound partial builds a dict on every call.
def _validate_phone(
    regions: tuple[str, ...], text: str, start: int, end: int
) -> tuple[int, int] | None:
    if text[start] == "(" and text.count("(", start, end) > text.count(")", start, end):
        start += 1  # "Anna (0161 496 0066)": the paren belongs to the sentence
    following = text[end : end + 1]
    if following and ((following.isascii() and following.isalnum()) or following in "_@%-/"):
        # Glued to a word or an identifier: only what comes before its last space can be a
        # number ("+44 20 7946 0958 5pm"); without one, the run is an id ("7350-0006-05ac").
        end = max(text.rfind(" ", start, end), text.rfind("\t", start, end))
        if end <= start:
            return None
    international = text[start] == "+" or text.startswith("00", start)
    # An id word before a national number rejects it whatever its shape, and is the commonest
    # reason (ISBN, invoice, card): decide that first, it is the cheapest.
    context = None if text[start] == "+" else phone_context(text, start)
    if context == "negative" and not international:
        return None
    equals = not international and text[start - 1 : start] == "="
    if equals and not _is_phone_key(text, start - 1):
        return None  # "created_at=1700000000": a key=value needs a phone key
    for candidate_end in _candidate_ends(text, start, end):
        main = text[start:candidate_end]
        if candidate_end == end:
            main = _strip_extension(main)
        if main.isdigit() and not _TRUNK_BARE.fullmatch(main):
            continue  # a bare run counts only after a phone word: see phone_after_word
        if not international:
            if "\n" in main and context != "positive":
                continue
            if not _may_end(text, candidate_end, main, context):
                continue
            if "." in main and has_version_context(text, start, candidate_end):
                return None
        if phones.accepts(main, regions, context):
            return start, candidate_end
    return None


def _validate_phone_after_word(
    regions: tuple[str, ...], text: str, start: int, end: int
) -> tuple[int, int] | None:
    # The match is a bare number; it counts after "<phone word><up to 30 non-digits>", or in
    # a table column whose header is a phone word.
    if text[start - 1 : start] == "=" and not _is_phone_key(text, start - 1):
        return None  # "created_at=1700000000": decided on the key alone, the commonest case
    if phone_context(text, start) != "positive":
        return None  # no phone word, an id word is nearer, or the word is in another sentence
    if not _PHONE_WORD_BEFORE.search(text, max(0, start - _PHONE_WORD_REACH), start) and (
        column_context(text, start) != "positive"
    ):
        return None  # the phone word is further away, or a digit or line break intervenes
    number = text[start:end]
    if not _may_end(text, end, number, "positive"):
        return None
    return (start, end) if phones.accepts(number, regions, "positive") else None


# ----------------------------------------------------------------------------- patterns

# Phone words that make a bare digit run a phone number ("t.l.phone" is also "téléphone").
_PHONE_WORDS = (
    r"phones?|tel|telephone|mobile|mob|cell|cellphone|calls?|ring|fax|whatsapp|signal|sms"
    r"|texts?|contact|reach|hotline|dial|landline|telefon|handy|rufnummer|telefonnummer"
    r"|handynummer|mobilnummer|mobil|festnetz|t.l.phone|t.l|portable|tel.fono|tfno|tlf|m.vil"
    r"|llamar|ll.mame|cellulare|chiamare|telefoon|telefoonnummer|mobiel|bellen|telefone"
    r"|celular|ligar|zadzwo.|kom.rka|telefonu|whats|number|nr|num|nummer|num.ro|n.mero|numer"
)
_PHONE_WORDS_CJK = ("電話", "携帯", "連絡先")  # no word boundaries in CJK
# A bare number (no separators) is a phone number only after a phone word followed by at
# most 30 characters that are neither digits nor line breaks: "call me on 4155552671".
# The detector matches the number (so the locators find it where they find other phone
# numbers, no word scan needed) and the validator looks back for the word.
_PHONE_AFTER_WORD = r"""
    (?<![\w\#@$%&/.+\\\-£€¥₹])(?<!\d:)\d{7,15}(?![\w@%\-/]|[.:]\d)
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
    @(?:[\ \t]*\r?\n[\ \t]*)?                        # wrapped after the @
    (?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+
    (?:[A-Za-z]{2,24}|xn--[A-Za-z0-9\-]{1,59})       # a TLD, or a punycode one
    (?![A-Za-z\-])                                   # digits may follow: "…@example.com123"
"""

# Starts at '+' or at a digit/paren not glued to an identifier, path, version, time or amount,
# and takes the whole run of digit groups (possessive: no backtracking into it); the
# validator tries it and its shorter prefixes. Separators: ( ) - /, or before a digit a "." or
# a tab, one or two spaces, or a line break (not before a date or a time: a log's next line).
_PHONE = r"""
    (?:
        (?<![\w+])\+
      | (?<![\w\#@$%&/.+\\\-£€¥₹])(?<!\d:)
        (?!\d{4}[-./]\d\d?[-./]\d\d?(?![-./]?\d)                         # a date (not
          |\d\d?(?P<phone_sep>[-./])\d\d?(?P=phone_sep)\d\d(?:\d\d)?(?![-./]?\d)  # 4 groups),
          |(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}\d{1,3}(?![\d.]))   # an IP-like quad
        (?![1-9]\d*+(?![\d()\-/]|[.\ \t][\d(]|\r?\n[\d(]))  # bare, no trunk 0: after_word
    )
    \(?\d(?:
        (?:[()\-/]|(?:[.\t]|\ \ ?)(?=[\d(])|\r?\n(?=[\d(])(?!\d{4}[-./]|\d\d?[-./:]\d)){0,3}+
        \d
    ){6,30}+
    (?:[\ \t]?(?:[xX]|[eE]xt\.?)[\ \t]?\d{1,6})?
"""

_CARD = rf"""
    (?<![\w.\-+/])
    (?:
        \d{{4}}{_SEP}\d{{4,6}}(?:{_SEP}\d{{1,5}}){{1,4}}+   # groups, and any after the number
      | \d{{12,19}}(?![\w\-])                             # bare
    )
"""

_SSN = r"""
    (?<![\w\-.])\d{3}-\d{2}-\d{4}(?![\w\-])
"""

_SSN_CONTEXT = r"""
    (?i:\b(?:ssn|ss\#|ss\ no|social\ security|soc\.?\ ?sec))
    [^\d\n]{0,20}?
    (?<![\w\-.])\d{3}(?P<ssn_sep>[\ \-.]?)\d{2}(?P=ssn_sep)\d{4}(?![\w\-])
"""


# Two letters (the validator checks the country: an alternation of the 89 countries with an
# IBAN costs every candidate more than one dictionary lookup does), check digits, the BBAN.
_IBAN = rf"""
    (?<![A-Za-z0-9])
    [A-Za-z]{{2}}\d{{2}}(?:{_SEP}?[A-Za-z0-9]{{4}}){{2,7}}+(?:{_SEP}?[A-Za-z0-9]{{1,4}})?
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

# A secret access key away from its label (a table cell under a header, a CSV field, prose):
# in a text that mentions a secret, credentials or AWS, any run of exactly 40 base64
# characters mixing upper case, lower case and digits (hex digests, UUIDs and words do not).
_AWS_SECRET_BARE = r"""
    [A-Za-z0-9/+=]{40,}   # a whole run (a class first: the search skips other text in C)
"""

_GCP_API_KEY = r"""
    (?<![A-Za-z0-9_\-])AIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])
"""

# A JWT part may be wrapped over lines (its first five characters on the line of "eyJ").
_JWT_PART = r"[A-Za-z0-9_\-]{5,}(?:\r?\n[A-Za-z0-9_\-]+)*"
_JWT = rf"""
    (?<![A-Za-z0-9_\-])
    eyJ{_JWT_PART}(?:\r?\n)?\.(?:\r?\n)?eyJ{_JWT_PART}(?:\r?\n)?\.
    [A-Za-z0-9_\-]*
    (?:\r?\n(?=[A-Za-z0-9_\-]*[0-9_\-])[A-Za-z0-9_\-]{{4,}}(?![^\r\n]))?  # a wrapped signature
"""

# A line break of a key block: a real one, or escaped ("\n") as in a JSON string.
_PEM_BREAK = r"(?:[\ \t]*(?:\r?\n|\\(?:r\\)?n)[\ \t]*)"
_PEM = rf"""
    -----BEGIN\ (?P<pem_label>[A-Z0-9]+(?:\ [A-Z0-9]+)*\ )?PRIVATE\ KEY(?:\ BLOCK)?-----
    (?:
        (?:(?!-----)[\s\S])*+   # up to the next dashes: linear however many BEGINs
        -----END\ (?P=pem_label)?PRIVATE\ KEY(?:\ BLOCK)?-----
      | (?:                     # no END line: every line of the block, blank ones inside it
          {_PEM_BREAK}+
          (?:[A-Za-z0-9+/=]{{4,}}|[A-Za-z][A-Za-z0-9\-]*:\ [^\r\n\\]*)   # base64, or a header
          [\ \t]*(?![^\r\n\\"'])              # the line ends (a JSON string may end too)
        )*+
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


def _validate_aws_secret_bare(text: str, start: int, end: int) -> tuple[int, int] | None:
    # The pattern matched a maximal run of base64 characters: exactly 40 of them, no "=".
    candidate = text[start:end]
    if end - start != 40 or "=" in candidate:
        return None
    mixed = not candidate.isupper() and not candidate.islower()  # both cases
    return (start, end) if mixed and _HAS_DIGIT.search(candidate) else None


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
    r"(?:^|[^\w+])\+\(?\d(?:[ ().\-/\t\r\n]{0,6}\d){6}",
    r"(?:^|[^\w#@$%&/.+\\\-])\(?\d(?:[ ().\-/\t\r\n]{0,6}\d){6}",
)


def build_detectors(
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
) -> tuple[Detector, ...]:
    """Returns every detector; ``priority`` decides between overlapping findings.

    Args:
        phone_regions: regions whose national groupings count without a phone word.

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
        _detector(
            "aws_secret_bare",
            AWS_CREDENTIALS,
            _AWS_SECRET_BARE,
            # A text that mentions a secret, credentials or AWS: a 40-character run anywhere
            # would cost the hyperscan pass more than the whole-text search it spares.
            [r"(?i)secret|credential|aws"],
            priority=9,  # the least specific secret: any other type of the same span wins
            validator=_validate_aws_secret_bare,
            whole_text=True,
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
            [
                # Any two letters: the validator checks the country (an alternation of 89
                # countries costs the hyperscan pass more than the candidates it spares).
                rf"[A-Za-z]{{2}}\d{{2}}{_SEP_LOCATOR_OPT}[A-Za-z0-9]{{4}}"
                rf"{_SEP_LOCATOR_OPT}[A-Za-z0-9]{{4}}"
            ],
            priority=11,
            validator=_validate_iban,
        ),
        _detector(
            "card",
            CREDIT_CARD_NUMBER,
            _CARD,
            [
                rf"(?:^|[^\w.\-+/])\d{{4}}{_SEP_LOCATOR}\d{{4,6}}{_SEP_LOCATOR}\d",
                r"(?:^|[^\w.\-+/])\d{12}",
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
            [r"(?:^|[^\w#@$%&/.+\\\-])\d{7}"],
            priority=15,
            validator=functools.partial(_validate_phone_after_word, regions),
        ),
    )
