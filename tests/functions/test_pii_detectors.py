"""Plain-function tests of the PII validators and context rules (transforms.pii.detectors)."""

import re

import pytest

from transforms.pii import phones
from transforms.pii.detectors import (
    DEFAULT_PHONE_REGIONS,
    build_detectors,
    column_context,
    has_version_context,
    is_phone_number,
    is_valid_card_number,
    is_valid_iban,
    is_valid_ipv4,
    is_valid_ipv6,
    is_valid_ssn,
    luhn_ok,
    phone_context,
)
from transforms.pii.engine import INFO_TYPES, build_engine


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
        ("de89 3704 0044 0532 0130 00", True),
        ("DE89-3704-0044-0532-0130-00", True),
        ("GB82WEST12345698765432", True),
        ("DE89370400440532013001", False),  # checksum
        ("GB79GGJW6480943888231", False),  # wrong length for GB
        ("XX89370400440532013000", False),  # unknown country
    ],
)
def test_is_valid_iban(iban, valid):
    assert is_valid_iban(iban) is valid


def test_the_iban_validator_agrees_with_stdnum_in_every_country():
    # _validate_iban checks length, BBAN shape and checksum itself, then only stdnum's national
    # checks: on checksum-valid IBANs of every IBAN country (random BBANs, some failing their
    # country's own check digits) it must decide as stdnum.iban.is_valid does.
    import random

    from stdnum import iban as stdnum_iban

    from transforms.pii import detectors

    alphabets = {"[0-9]": "0123456789", "[A-Z]": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    alphabets["[A-Z0-9]"] = alphabets["[A-Z]"] + alphabets["[0-9]"]
    rng, rejected = random.Random(7), 0
    countries = [a + b for a in alphabets["[A-Z]"] for b in alphabets["[A-Z]"]]
    for country in (c for c in countries if detectors._iban_rules(c) is not None):
        _, bban = detectors._iban_rules(country)
        fields = re.findall(r"(\[[^\]]+\])\{(\d+)\}", bban.pattern)
        for _ in range(40):
            body = "".join(rng.choice(alphabets[kind]) for kind, n in fields for _ in range(int(n)))
            number = country + stdnum_iban.calc_check_digits(country + "00" + body) + body
            found = detectors._validate_iban(number, 0, len(number)) is not None
            assert found is stdnum_iban.is_valid(number), number
            rejected += not found
    assert rejected  # some national checks did fail


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
    ("prefix", "context"),
    [
        ("Tel. ", "positive"),  # an abbreviation's period ends no sentence
        ("my number is ", "positive"),  # a weak word, nothing against it
        ("order number ", "negative"),  # ...unless an id word comes with it
        ("phone_number=", "positive"),
        ("created_at=", None),
    ],
)
def test_phone_context_reads_abbreviations_weak_words_and_keys(prefix, context):
    assert phone_context(prefix + "4155552671", len(prefix)) == context


@pytest.mark.parametrize(
    ("prefix", "context"),
    [
        ("The book (ISBN ", "negative"),  # punctuation before the word is no part of it
        ('{"card": "', "negative"),
        ("Tel: ", "positive"),
        ("TEL.: ", "positive"),
        ("ring me, order. ", None),  # the period ends the sentence holding "order"
        ("phone order!\n", None),  # so does a line break ...
        ("Call me; ", None),  # ... and "; "
        ("phone order\n", None),
        ("order\u00a0", "negative"),  # a no-break space separates words
        ("ss order ", "negative"),
        ("call xorder ", "positive"),  # not a whole word
        ("x" * 40 + "order ", None),  # one long word, not "order"
        ("tel. order ", "negative"),
        ("Hotel. ", None),  # "tel" inside a word is no abbreviation
    ],
)
def test_phone_context_the_nearest_word_and_where_its_sentence_starts(prefix, context):
    assert phone_context(prefix + "0612345678", len(prefix)) == context


@pytest.mark.parametrize(
    ("text", "context"),
    [
        ("name,phone,city\nJo,4155552671,Leeds", "positive"),
        ("name;Telefon\nJo;4155552671", "positive"),
        ("| Name | Phone |\n| --- | --- |\n| Jo | 4155552671 |", "positive"),
        ("id,order_id\n1,4155552671", "negative"),
        ("name,phone\nJo,x 4155552671", None),  # not the first thing in its field
        ("Jo,4155552671", None),  # no header
        ("name,phone\n\nJo,4155552671", None),  # a blank line ends the table
        # The header's first cell glued to text before it ("0@aa.com  name") is still the
        # header: only its cell in the candidate's column decides (found by hypothesis).
        ("0@aa.com  name,phone,n\njo,4155552671,42", "positive"),
        ("name,phone,n\nAl,n/a,7\njo,4155552671,42", "positive"),  # a data row, no number here
    ],
)
def test_column_context_reads_the_header_of_a_table_column(text, context):
    assert column_context(text, text.index("4155552671")) == context


@pytest.mark.parametrize(
    ("groups", "region", "fits"),
    [
        ((3, 4, 4), "GB", True),  # 020 7946 0958
        ((3, 8), "GB", True),  # 020 79460958
        ((2, 4, 4), "GB", False),  # 20 7946 0958: no trunk 0
        ((2, 2, 2, 2, 2, 1), "GB", False),
        ((3, 3, 4), "US", True),  # (415) 555-2671 and unassigned 898-581-8277
        ((1, 3, 3, 4), "US", True),  # 1 (415) 555-2671
        ((2, 3, 3, 2), "US", False),
        ((5, 5), "GB", True),  # (01706) 04935: possible, not assigned
        ((2, 2, 2, 2, 2), "FR", True),  # 06 12 34 56 78
        ((3, 3, 3), "PL", True),  # 609 141 777
        ((2, 4, 4), "BR", True),  # 12 3915-0008: the trunk may be left out
    ],
)
def test_grouping_fits_a_national_format_of_a_possible_length(groups, region, fits):
    assert phones.grouping_fits(groups, region) is fits


@pytest.mark.parametrize(
    ("digits", "possible"),
    [
        ("14939109205", True),  # +1-493-910-9205: unassigned area code
        ("4429 2018841".replace(" ", ""), True),
        ("44011549609 14".replace(" ", ""), True),  # +44(0)115 4960914: the trunk kept
        ("4420794609", False),  # one digit short
        ("9990123456", False),  # no calling code 999, 99 or 9
    ],
)
def test_international_possible(digits, possible):
    assert phones.international_possible(digits) is possible


@pytest.mark.parametrize(
    ("candidate", "context", "accepted"),
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
        ("+44 20 7946 095", None, True),  # possible (9 digits), if not assigned
        ("+44 20 7946 09", None, False),  # 8 digits: not a possible GB length
        ("001-922-351-2905x68940", None, True),  # 00 1 …, an extension
        ("898-581-8277x47385", None, True),
        ("(01706) 04935", None, True),
        ("2024-03-15", "positive", False),  # a date
        ("10.20.30.40", "positive", False),  # a dotted quad
        ("57452.87", "positive", False),  # a decimal
        ("123-45-6789", "positive", False),  # the SSN shape
        ("4111 1111 1111 1111", "positive", False),  # 16 digits
        ("(415) 555-2671 x204", None, True),
        ("271 130 517 789", None, False),  # a list of numbers
    ],
)
def test_is_phone_number(candidate, context, accepted):
    assert is_phone_number(candidate, DEFAULT_PHONE_REGIONS, context=context) is accepted


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


@pytest.mark.parametrize(
    "text", ["phone: 0612-34-56-78", "phone: 0200-00-00-00", "name,phone\njo,0612-34-56-78"]
)
def test_four_groups_after_a_phone_word_are_a_number_not_a_date(text):
    # "0612-34-56" alone reads as a date; a fourth group makes it a number (found by
    # hypothesis: tests/functions/test_pii_properties.py).
    assert "[PHONE_NUMBER]" in build_engine("offline").redact([text])[0].text
