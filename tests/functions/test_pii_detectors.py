"""Plain-function tests of the PII validators and context rules (transforms.pii.detectors)."""

import random
import re

import phonenumbers
import pytest

from transforms.pii.detectors import (
    DEFAULT_PHONE_REGIONS,
    _may_be_valid_national,
    _national_shapes,
    build_detectors,
    grouping_fits,
    has_version_context,
    is_valid_card_number,
    is_valid_iban,
    is_valid_ipv4,
    is_valid_ipv6,
    is_valid_phone,
    is_valid_ssn,
    luhn_ok,
    phone_context,
)
from transforms.pii.engine import INFO_TYPES


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("378282246310005", True),  # Amex
        ("6011111111111117", True),  # Discover
        ("79927398713", True),  # the textbook example
        ("79927398710", False),
    ],
)
def test_luhn_ok(digits, valid):
    assert luhn_ok(digits) is valid


@pytest.mark.parametrize(
    ("digits", "bare", "valid"),
    [
        ("4111111111111111", True, True),
        ("4111111111111112", True, False),  # Luhn-invalid
        ("4444444444444448", False, True),
        ("0000000000000000", False, False),  # one repeated digit, Luhn-valid
        ("1700000000009", True, False),  # epoch-ms-like bare run: no issuer prefix
        ("1700000000009", False, False),  # still Luhn-invalid when grouped
        ("601100099998", False, True),  # 12 digits with a Maestro prefix
        ("411111111113", False, False),  # 12 digits, Visa prefix: not a card length
        ("41111111111111111111", False, False),  # 20 digits
    ],
)
def test_is_valid_card_number(digits, bare, valid):
    assert is_valid_card_number(digits, bare=bare) is valid


@pytest.mark.parametrize(
    ("ssn", "valid"),
    [
        ("123-45-6789", True),
        ("000-45-6789", False),
        ("666-45-6789", False),
        ("912-45-6789", False),
        ("123-00-6789", False),
        ("123-45-0000", False),
    ],
)
def test_is_valid_ssn(ssn, valid):
    assert is_valid_ssn(*ssn.split("-")) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("DE89370400440532013000", True),
        ("DE89 3704 0044 0532 0130 00", True),
        ("GB82WEST12345698765432", True),
        ("DE89370400440532013001", False),  # checksum
        ("GB79GGJW6480943888231", False),  # wrong length for GB
        ("XX89370400440532013000", False),  # unknown country
    ],
)
def test_is_valid_iban(iban, valid):
    assert is_valid_iban(iban) is valid


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("192.168.0.1", True),
        ("0.0.0.0", True),
        ("255.255.255.255", True),
        ("256.1.1.1", False),
        ("01.2.3.4", False),  # leading zero
        ("1.2.3", False),
        ("1.2.3.4.5", False),
    ],
)
def test_is_valid_ipv4(address, valid):
    assert is_valid_ipv4(address) is valid


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("2001:db8::8a2e:370:7334", True),
        ("fe80::1", True),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", True),
        ("::ffff:192.168.1.1", True),
        ("::1", False),  # loopback shorthand: too little to be an address in prose
        ("::", False),
        ("1::2", False),  # a Python slice x[1::2]
        ("10:30:00", False),  # a time
        ("00:1A:2B:3C:4D:5E", False),  # a MAC address
    ],
)
def test_is_valid_ipv6(address, valid):
    assert is_valid_ipv6(address) is valid


def _quad_at_end(text):
    match = list(re.finditer(r"\d+(?:\.\d+){3}", text))[-1]
    return text, match.start(), match.end()


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("we upgraded to version 1.2.3.4", True),
        ("upgraded to 1.2.3.4", True),
        ("Build: 1.2.3.4", True),
        ("pip install pkg==1.2.3.4", True),
        ("Mozilla/5.0 Chrome/120.0.0.0", True),
        ("bumped from 1.2.3.3 to 1.2.3.4", True),
        ("v 1.2.3.4", True),
        ("the server at 10.0.0.1", False),
        ("please update 10.0.0.1", False),  # a verb without "to" is not a version context
        ("allow from 10.0.0.1 to 10.0.0.2", False),
        ("http://10.0.0.1", False),
        ("the IP is 10.0.0.1", False),
    ],
)
def test_has_version_context(text, version):
    assert has_version_context(*_quad_at_end(text)) is version


def test_has_version_context_looks_after_the_number():
    text = "the 1.2.3.4 release changed it"
    assert has_version_context(text, 4, 11)
    assert not has_version_context("the 1.2.3.4 host changed", 4, 11)


@pytest.mark.parametrize(
    ("prefix", "context"),
    [
        ("Call me at ", "positive"),
        ("Telefon: ", "positive"),
        ("電話: ", "positive"),
        ("My order number is ", "negative"),
        ("call about invoice ", "negative"),  # the nearer word wins
        ("Invoice paid. Call ", "positive"),
        ("Call me. Order ", "negative"),
        ("Phone. Then the total is ", "negative"),
        ("Phone list.\nRows ", "negative"),
        ("The weather is nice and ", None),
        ("Phone numbers are sorted. Now ", None),  # another sentence
    ],
)
def test_phone_context(prefix, context):
    text = prefix + "0612345678"
    assert phone_context(text, len(prefix)) == context


@pytest.mark.parametrize(
    ("candidate", "region", "fits"),
    [
        ("020 7946 0958", "GB", True),
        ("020 79460958", "GB", True),
        ("20 7946 0958", "GB", True),  # trunk 0 omitted, as its own group
        ("02 07 94 60 95 8", "GB", False),
        ("(415) 555-2671", "US", True),
        ("1 (415) 555-2671", "US", True),
        ("41 555 526 71", "US", False),
    ],
)
def test_grouping_fits(candidate, region, fits):
    number = phonenumbers.parse(candidate, region)
    assert grouping_fits(candidate, number) is fits


@pytest.mark.parametrize(
    ("candidate", "context", "valid"),
    [
        ("+44 20 7946 0958", None, True),
        ("0044 20 7946 0958", None, True),
        ("+1 415-555-2671", None, True),
        ("+49 30 1234567", "negative", True),  # international numbers need no context
        ("020 7946 0958", None, True),
        ("(415) 555-2671", None, True),
        ("030 1234567", "positive", True),
        ("4155552671", None, False),  # bare digits without a phone word
        ("4155552671", "positive", True),
        ("07700900123", None, True),  # bare but trunk-prefixed
        ("020 7946 0958", "negative", False),
        ("+44 20 7946 095", None, False),  # invalid: one digit short
        ("2024-03-15", "positive", False),  # a date
        ("10.20.30.40", "positive", False),  # a dotted quad
        ("57452.87", "positive", False),  # a decimal
        ("123-45-6789", "positive", False),  # the SSN shape
        ("4111 1111 1111 1111", "positive", False),  # 16 digits
        ("(415) 555-2671 x204", None, True),
    ],
)
def test_is_valid_phone(candidate, context, valid):
    assert is_valid_phone(candidate, DEFAULT_PHONE_REGIONS, context=context) is valid


def test_build_detectors_covers_every_info_type_once_named():
    detectors = build_detectors()
    assert {d.info_type for d in detectors} == set(INFO_TYPES)
    assert len({d.name for d in detectors}) == len(detectors)


def test_build_detectors_rejects_unknown_regions():
    with pytest.raises(ValueError, match="XX"):
        build_detectors(phone_regions=("GB", "XX"))
    with pytest.raises(ValueError):
        build_detectors(phone_regions=())


def test_locators_compile_as_python_regexes():
    # The "re" fallback searches the same locators with Python's re module.
    for detector in build_detectors():
        for locator in detector.locators:
            assert locator.isascii(), detector.name
            re.compile(locator, re.ASCII)


def test_detector_find_at_starts_equals_finditer():
    text = "a 4111 1111 1111 1111 b 4111-1111-1111-1111 c"
    card = next(d for d in build_detectors() if d.name == "card")
    assert card.find(text, starts=range(len(text))) == card.find(text)
    assert len(card.find(text)) == 2


@pytest.mark.parametrize("region", DEFAULT_PHONE_REGIONS)
def test_national_shortcut_never_rejects_what_phonenumbers_accepts(region):
    # The regex shortcut may only skip parses that could not succeed: over random digit
    # strings (with and without a trunk 0, a calling code or an international prefix) and the
    # library's own example numbers, it never says no to a number phonenumbers finds valid.
    rng = random.Random(region)
    code = str(phonenumbers.country_code_for_region(region))
    candidates = []
    for length in range(7, 14):
        for _ in range(150):
            digits = "".join(rng.choice("0123456789") for _ in range(length))
            candidates += [digits, "0" + digits[1:], code + digits, "00" + digits]
    for kind in range(12):
        example = phonenumbers.example_number_for_type(region, kind)
        if example is not None:
            written = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)
            candidates.append(re.sub(r"\D", "", written))
    skipped = 0
    for digits in candidates:
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(digits, region))
        except phonenumbers.NumberParseException:
            valid = False
        shortcut = _may_be_valid_national(digits, region)
        assert shortcut or not valid, digits
        skipped += not shortcut
    assert _national_shapes(region) is not None or skipped == 0
    if region in ("US", "GB", "FR"):  # strict numbering plans: most random digits are skipped
        assert skipped > len(candidates) // 4
