"""Tests of the redaction engine interface and the offline engine (plain functions, no Beam)."""

import itertools
import pickle
import random

import pytest

from pipelines.local.texts import make_text, new_faker
from tests.support import adversarial
from tests.support.recall_corpus import make_corpus
from transforms.pii import detectors, offline
from transforms.pii.detectors import Finding
from transforms.pii.engine import (
    ENGINE_NAMES,
    INFO_TYPES,
    Redaction,
    RedactionEngine,
    RedactionError,
    build_engine,
)
from transforms.pii.offline import OfflineEngine

JWT = (
    "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAiMTIzNDU2Nzg5MCIsICJuYW1lIjogIngifQ"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
    "aFDrBz9vFqU4yVkzSgDMEG8bmgsq+sQk1Y6DXhQHQ6eMkUgV5Ph8yS2vA==\n"
    "-----END RSA PRIVATE KEY-----"
)
PEM_TRUNCATED = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx"
)
GITHUB = "ghp_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dF3hJ5"
OPENAI = "sk-proj-" + "Xy7Qm2Lp9Rt4Vw6Zb8Nc1Df3Gh5Jk0Ls2Pq4Tu6Wx8Y"
SLACK = "xoxb-123456789012-123456789012-AbCdEfGhIjKlMnOpQrStUvWx"
GCP = "AIza" + "SyD3x9Kq2Lm8Np4Rs6Tu1Vw7Xy5Za0Bc2De"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# (text, redacted text): at least one positive case per info type, and the tricky ones.
POSITIVES = [
    ("Mail john.doe@example.com today", "Mail [EMAIL_ADDRESS] today"),
    ("From: Anna <anna+test@mail.example.co.uk>", "From: Anna <[EMAIL_ADDRESS]>"),
    ("Call me at +44 20 7946 0958.", "Call me at [PHONE_NUMBER]."),
    ("Tel: (415) 555-2671 x204", "Tel: [PHONE_NUMBER]"),
    ("Telefon 030 1234567", "Telefon [PHONE_NUMBER]"),
    ("Rappelez-moi au 06 12 34 56 78 svp", "Rappelez-moi au [PHONE_NUMBER] svp"),
    ("電話: 03-1234-5678", "電話: [PHONE_NUMBER]"),
    ("WhatsApp 4155552671", "WhatsApp [PHONE_NUMBER]"),
    ("0044 20 7946 0958", "[PHONE_NUMBER]"),
    ("ping +4915112345678 or 0612345678.", "ping [PHONE_NUMBER] or [PHONE_NUMBER]."),
    ("Anna (0161 496 0000) is on call", "Anna ([PHONE_NUMBER]) is on call"),
    ("card 4111 1111 1111 1111 exp 09/27", "card [CREDIT_CARD_NUMBER] exp 09/27"),
    ("card 4111-1111-1111-1111.", "card [CREDIT_CARD_NUMBER]."),
    ("amex 3782 822463 10005", "amex [CREDIT_CARD_NUMBER]"),
    ('"card": "4111111111111111"', '"card": "[CREDIT_CARD_NUMBER]"'),
    ("SSN 123-45-6789", "SSN [US_SOCIAL_SECURITY_NUMBER]"),
    ("social security number: 123 45 6789", "social security number: [US_SOCIAL_SECURITY_NUMBER]"),
    (
        "IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX",
        "IBAN [IBAN_CODE] BIC COBADEFFXXX",
    ),
    ("pay into GB82WEST12345698765432.", "pay into [IBAN_CODE]."),
    ("connection from 203.0.113.7 refused", "connection from [IP_ADDRESS] refused"),
    ("ssh deploy@10.0.0.12 -p 2222", "ssh deploy@[IP_ADDRESS] -p 2222"),
    ("http://192.168.1.20:8080/health", "http://[IP_ADDRESS]:8080/health"),
    ("host 2001:db8::8a2e:370:7334 up", "host [IP_ADDRESS] up"),
    ("[fe80::1]:8080", "[[IP_ADDRESS]]:8080"),
    ("please update 10.0.0.1 rules", "please update [IP_ADDRESS] rules"),
    ("key AKIAIOSFODNN7EXAMPLE leaked", "key [AWS_CREDENTIALS] leaked"),
    (
        f"aws_secret_access_key = {AWS_SECRET}",
        "aws_secret_access_key = [AWS_CREDENTIALS]",
    ),
    (f"maps?key={GCP}&x=1", "maps?key=[GCP_API_KEY]&x=1"),
    (f"token {JWT} expired", "token [JSON_WEB_TOKEN] expired"),
    (f"here:\n{PEM}\nthanks", "here:\n[ENCRYPTION_KEY]\nthanks"),
    (f"{PEM_TRUNCATED}\n\nWhy is it invalid?", "[ENCRYPTION_KEY]\n\nWhy is it invalid?"),
    (f'OPENAI_API_KEY="{OPENAI}"', 'OPENAI_API_KEY="[AUTH_TOKEN]"'),
    (f"token: {GITHUB}", "token: [AUTH_TOKEN]"),
    (f"SLACK_BOT_TOKEN={SLACK}", "SLACK_BOT_TOKEN=[AUTH_TOKEN]"),
    (
        "Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "Authorization: Bearer [AUTH_TOKEN]",
    ),
    # Overlaps: one finding, of the most specific type.
    (f"Authorization: Bearer {JWT}", "Authorization: Bearer [JSON_WEB_TOKEN]"),
    (f"Authorization: Bearer {OPENAI}", "Authorization: Bearer [AUTH_TOKEN]"),
    (f"git clone https://{GITHUB}@github.com/o/r", "git clone https://[AUTH_TOKEN]@github.com/o/r"),
    ("ping +81 568-76-9840 now", "ping [PHONE_NUMBER] now"),
    # A line break inside a card number is a separator...
    ("card 4111 1111\n1111 1111 thanks", "card [CREDIT_CARD_NUMBER] thanks"),
]

# Texts that must come back unchanged.
NEGATIVES = [
    "The test card 4111 1111 1111 1112 is Luhn-invalid.",
    "The test card 4523 0032 5064 9000 is rejected.",  # not "+32 5064 9000" either
    "My order 4839201934 has not arrived.",
    "Order ORD-2024-118233 and invoice INV-2024-00123, invoice 2024/00123.",
    "We upgraded to version 1.2.3.4 yesterday.",
    "pip install requests==2.31.0.1 and Chrome/120.0.0.0 and the 1.2.3.4 release.",
    "bumped from 1.2.3.3 to 1.2.3.4",
    "Released on 2024-03-15, logged at 2024-03-15T10:22:31Z and 15.03.2024 10:22.",
    # ...but not before a line starting with an ISO date (0913-499542-2019 passes Luhn).
    "ticket 0913-499542\n2019-02-05 05:11:10 reopened",
    "Total $1,234.56, or €1.234,56, or 12 345,67 €, or £57452.87.",
    "request 550e8400-e29b-41d4-a716-446655440000 failed",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b, short sha 097391366637",
    "localhost:8080 returned 503 after 1234 ms",
    "ISBN 978-3-16-148410-0",
    "created_at=1700000000 updated_at=1700000000123",
    "processed 12345678 rows",
    "Authorization: Bearer YOUR_ACCESS_TOKEN and Bearer <token>",
    "sk-learn and risk-assessment-framework",
    "std::vector, x[1::2], 10:30:00 and MAC 00:1A:2B:3C:4D:5E and ::1",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A\n-----END PUBLIC KEY-----",
    "AKIA is a prefix, AIza too, and eyJ.eyJ is no token.",
    "",
    "   \n\t ",
]


@pytest.fixture(scope="module")
def engine():
    return build_engine("offline")


def test_build_engine_returns_offline_engine(engine):
    assert isinstance(engine, OfflineEngine)
    assert isinstance(engine, RedactionEngine)
    assert engine.name == "offline"
    assert "offline" in ENGINE_NAMES


def test_build_engine_rejects_unknown_names():
    with pytest.raises(ValueError, match="offline"):
        build_engine("presidio")


@pytest.mark.parametrize(
    "options",
    [
        {"prefilter": "fast"},
        {"info_types": ["EMAIL_ADDRESS", "PERSON_NAME"]},
        {"info_types": []},
        {"phone_regions": ["ZZ"]},
    ],
)
def test_offline_engine_rejects_bad_options(options):
    with pytest.raises(ValueError):
        build_engine("offline", **options)


@pytest.mark.parametrize(("text", "expected"), POSITIVES)
def test_positive_cases_are_redacted(engine, text, expected):
    [result] = engine.redact([text])
    assert result.text == expected
    assert sum(result.counts.values()) == expected.count("[") - text.count("[")


def test_every_info_type_has_a_positive_case(engine):
    found = set()
    for text, _ in POSITIVES:
        found.update(engine.redact([text])[0].counts)
    assert found == set(INFO_TYPES)


# A bare number counts only after a phone word, with at most 30 characters between them and
# no digit or line break among those (the detector matches the number and looks back).
BARE_NUMBER_CASES = [
    ("call me on 4155552671 or 4155552672", "call me on [PHONE_NUMBER] or 4155552672"),
    ("order by phone 4155552671", "order by phone [PHONE_NUMBER]"),
    ("電話番号 4155552671", "電話番号 [PHONE_NUMBER]"),
    ("WhatsApp -" + " " * 20 + "4155552671", "WhatsApp -" + " " * 20 + "[PHONE_NUMBER]"),
    ("WhatsApp -" + " " * 40 + "4155552671", None),  # the word is too far
    ("Telefon\n4155552671", None),  # a line break between
    ("call 2 people at 4155552671", None),  # a digit between
    ("phone: order 4155552671", None),  # an id word is nearer
    ("recall 4155552671", None),  # not a phone word
    ("call me. 4155552671", None),  # another sentence
    ("call #4155552671", None),  # glued to an identifier
    ("Call: 415555267100000000", None),  # too long
    ("4155552671", None),
]


@pytest.mark.parametrize(("text", "expected"), BARE_NUMBER_CASES)
@pytest.mark.parametrize("prefilter", ["hyperscan", "re", "none"])
def test_bare_numbers_need_a_phone_word_just_before(text, expected, prefilter):
    engine = OfflineEngine(prefilter=prefilter)
    assert engine.redact_text(text).text == (text if expected is None else expected)


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative_cases_are_left_alone(engine, text):
    assert engine.redact([text]) == [Redaction(text, {})]


def test_batch_keeps_order_and_length(engine):
    texts = [
        text for pair in zip(POSITIVES, NEGATIVES, strict=False) for text in (pair[0][0], pair[1])
    ]
    results = engine.redact(texts)
    assert len(results) == len(texts)
    assert results == [engine.redact([text])[0] for text in texts]
    assert engine.redact([]) == []
    assert engine.redact(tuple(texts[:3])) == results[:3]


def test_counts_match_findings_and_hold_no_values(engine):
    text = (
        "Mail a@example.com or b@example.org, call +44 20 7946 0958, "
        f"card 4111 1111 1111 1111, key {GITHUB}, again a@example.com."
    )
    [result] = engine.redact([text])
    assert result.counts == {
        "EMAIL_ADDRESS": 3,
        "PHONE_NUMBER": 1,
        "CREDIT_CARD_NUMBER": 1,
        "AUTH_TOKEN": 1,
    }
    assert all(isinstance(v, int) for v in result.counts.values())
    for value in ("a@example.com", "b@example.org", "7946", "4111", GITHUB):
        assert value not in result.text


def test_non_string_input_fails_closed_without_text(engine):
    secret = "john.doe@example.com"
    for bad in (None, b"john.doe@example.com", 42):
        with pytest.raises(RedactionError) as error:
            engine.redact([secret, bad])
        assert "element 1" in str(error.value)
        assert secret not in str(error.value)


def test_detector_failure_fails_closed_without_text(monkeypatch):
    def explode(text, start, end):
        raise ValueError(f"cannot parse {text[start:end]!r} in {text!r}")

    monkeypatch.setattr(detectors, "_validate_ipv6", explode)
    engine = OfflineEngine()
    text = "secret host fe80::1234:5678 for alice@example.com"
    with pytest.raises(RedactionError) as error:
        engine.redact(["fine", text])
    message = str(error.value)
    assert "element 1" in message and "ValueError" in message
    assert "fe80" not in message and "alice" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_odd_unicode_is_redacted_not_rejected(engine):
    text = "x\ud800 mail a@example.com, 電話 +81 3-1234-5678, café 10.1.2.3"
    [result] = engine.redact([text])
    assert result.text == ("x\ud800 mail [EMAIL_ADDRESS], 電話 [PHONE_NUMBER], café [IP_ADDRESS]")


def test_long_text(engine):
    text = ("lorem ipsum 2024-03-15 v1.2.3 " * 4000) + "mail a@example.com"
    [result] = engine.redact([text])
    assert result.counts == {"EMAIL_ADDRESS": 1}
    assert result.text.endswith("mail [EMAIL_ADDRESS]")


def test_info_types_option_limits_what_is_redacted():
    engine = OfflineEngine(info_types=["EMAIL_ADDRESS"])
    [result] = engine.redact(["a@example.com +44 20 7946 0958"])
    assert result == Redaction("[EMAIL_ADDRESS] +44 20 7946 0958", {"EMAIL_ADDRESS": 1})


def test_engine_pickles_and_rebuilds(engine):
    clone = pickle.loads(pickle.dumps(engine))
    assert clone.prefilter == engine.prefilter
    texts = [text for text, _ in POSITIVES]
    assert clone.redact(texts) == engine.redact(texts)


def _adversarial_texts():
    """Hand-picked edge cases: positions at 0, glued tokens, CJK words, lists of numbers."""
    texts = [text for text, _ in POSITIVES] + NEGATIVES
    texts += [
        "4111111111111111",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "電話: 6274078825",
        "携帯 9012345678 です",
        "a@b.co",
        "1.2.3.4",
        "fe80::1",
        "271 130 517 789 654 751 890 12 34 56 78 90",
        "x4111 1111 1111 1111 4111 1111 1111 1111x",
        "tel:+4915112345678;tel:030/1234567",
        "IBAN:DE89370400440532013000BIC",
        "call 0612345678. order 0612345678. call\n0612345678",
    ]
    return texts + [" | ".join(texts[i : i + 5]) for i in range(0, len(texts), 5)]


def _corpus(n, seed):
    rng, fake = random.Random(seed), new_faker()
    return [make_text(rng, fake, pii_share=0.6, target_chars=600).text for _ in range(n)]


@pytest.fixture(scope="module")
def mixed_texts():
    # The hand-written edge cases, the adversarial corpus, held-out samples (every detector,
    # every shape, normalised views) and the load generator's texts.
    return (
        _adversarial_texts()
        + [case.text for case in adversarial.cases()]
        + [sample.text for sample in make_corpus(5, 400)]
        + _corpus(150, seed=11)
    )


def test_prefilters_give_identical_output(mixed_texts):
    # "none" runs every pattern over every text: the located engines must match it exactly.
    reference = OfflineEngine(prefilter="none").redact(mixed_texts)
    assert OfflineEngine(prefilter="hyperscan").redact(mixed_texts) == reference
    assert OfflineEngine(prefilter="re").redact(mixed_texts) == reference


def test_fallback_when_hyperscan_is_missing(monkeypatch, mixed_texts):
    expected = OfflineEngine(prefilter="hyperscan").redact(mixed_texts)
    monkeypatch.setattr(offline, "_hyperscan", None)
    engine = build_engine("offline")
    assert engine.prefilter == "re"
    assert engine.redact(mixed_texts) == expected
    with pytest.raises(ValueError, match="hyperscan"):
        OfflineEngine(prefilter="hyperscan")


def test_resolve_overlaps_is_deterministic_and_disjoint():
    rng = random.Random(5)
    for _ in range(500):
        findings = []
        for _ in range(rng.randint(0, 10)):
            start = rng.randint(0, 50)
            priority = rng.choice([0, 4, 10, 12, 15])
            findings.append(Finding(start, start + rng.randint(1, 12), "T", priority))
        kept = offline.resolve_overlaps(findings)
        assert kept == sorted(kept)
        assert all(a.end <= b.start for a, b in itertools.pairwise(kept))
        assert offline.resolve_overlaps(reversed(findings)) == kept
        # A finding is dropped only for overlapping a kept one.
        for f in set(findings) - set(kept):
            assert any(k.start < f.end and f.start < k.end for k in kept)


def test_resolve_overlaps_ranks_secrets_then_length():
    secret = Finding(10, 20, "AUTH_TOKEN", 4)
    longer_pii = Finding(10, 40, "EMAIL_ADDRESS", 10)
    shorter_pii = Finding(30, 35, "PHONE_NUMBER", 15)
    assert offline.resolve_overlaps([longer_pii, secret, shorter_pii]) == [secret, shorter_pii]
    assert offline.resolve_overlaps([longer_pii, shorter_pii]) == [longer_pii]


def test_many_findings_and_pathological_inputs_stay_linear(engine):
    blocks = "-----BEGIN RSA PRIVATE KEY-----\nabc\n" * 3000
    [result] = engine.redact([blocks])
    assert result.counts == {"ENCRYPTION_KEY": 3000}
    for text in ("1 " * 50000, "a." * 50000 + "@", ":" * 100000, "(1) " * 30000, "x@" * 50000):
        assert engine.redact([text]) == [Redaction(text, {})]


def test_the_locator_pass_reads_a_latin1_letter_as_a_question_mark():
    # The locator pass scans Latin-1 text as Latin-1 bytes (a copy), where it used to scan
    # ASCII with "?" for each accented letter: every locator must see each byte above 127 as
    # it sees "?", next to every shape it locates.
    locate = OfflineEngine(prefilter="hyperscan")._locate
    samples = [
        "?+44 20 7946 0958?",
        "?(0161) 496 0066?0612345678?",
        "call?4155552671?",
        "?4111 1111 1111 1111?4111111111111111?",
        "?jane.doe@example.com?x?@example.org",
        "?DE89 3704 0044 0532 0130 00?de89370400440532013000?",
        "?192.168.0.1?fe80::1?2001:db8::?",
        "?123-45-6789?SSN?123 45 6789?",
        "?AKIAIOSFODNN7EXAMPLE?AIzaSyA1234567890abcdefghijklmnopqrstu?",
        "?eyJhbGciOi?eyJzdWIiOi?sig?Bearer?abcdef0123456789xyz?",
        "?sk-abcdefghij0123456789abcd?ghp_?xoxb-?-----BEGIN ?",
        "?aws_secret_access_key?secret?%40?&#64;?&amp;?\\u0040?[at]?(dot)?",
    ]
    for byte in range(0x80, 0x100):
        for sample in samples:
            text = sample.replace("?", chr(byte))
            expected = {i: sorted(s) if s else s for i, s in locate(sample)}
            assert {i: sorted(s) if s else s for i, s in locate(text)} == expected, (byte, sample)
