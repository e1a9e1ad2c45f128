"""Function layer: the classification policy and its application."""

import pytest

from transforms.classify import classify, load_policy

POLICY = load_policy()


def cls(*, text=True, info_types=(), flags=()):
    return classify(POLICY, has_text=text, info_types=info_types, policy_flags=flags)


def test_base_classes():
    assert cls(text=False) == "PUBLIC"
    assert cls() == "INTERNAL"


def test_info_types_raise_the_class():
    assert cls(info_types=["EMAIL_ADDRESS"]) == "CONFIDENTIAL"
    assert cls(info_types=["EMAIL_ADDRESS", "CREDIT_CARD_NUMBER"]) == "RESTRICTED"
    assert cls(text=False, info_types=["IP_ADDRESS"]) == "CONFIDENTIAL"


def test_flags_raise_the_class_and_never_lower_it():
    assert cls(flags=["pii_redacted"]) == "CONFIDENTIAL"
    assert cls(flags=["secret_detected"]) == "RESTRICTED"
    assert cls(text=False, flags=["some_new_flag"]) == "INTERNAL"
    assert cls(info_types=["AUTH_TOKEN"], flags=["secret_detected"]) == "RESTRICTED"


def test_unlisted_info_types_fail_safe():
    assert cls(info_types=["SOMETHING_NEW"]) == "RESTRICTED"


def test_policy_covers_every_engine_info_type():
    from transforms.pii.engine import INFO_TYPES

    assert set(INFO_TYPES) <= set(POLICY.info_types)


def test_policy_is_versioned_and_validated(tmp_path):
    assert POLICY.version
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: x\nclasses: [A, B]\nno_text_class: A\ndefault_class: A\n"
        "unlisted_info_type: C\nunlisted_policy_flag: A\n"
    )
    with pytest.raises(ValueError, match="not in"):
        load_policy(str(bad))


def test_classify_and_redact_counts_findings_once_and_classifies_from_them():
    import datetime as dt

    from transforms.elements import Event
    from transforms.pii.engine import Redaction
    from transforms.pii.pseudonym import pseudonymize
    from transforms.redact import classify_and_redact, texts_of

    when = dt.datetime(2026, 1, 27, 10, 0, tzinfo=dt.UTC)
    event = Event(
        *("e1", "r1", "user-1", when, "1", "m", None, 1.0, 3, None, None),
        ("secret_detected",),
        "eu",
        "mail a@b.example or c@d.example",
        None,
        0,
    )
    assert texts_of(event) == [event.prompt]
    redaction = Redaction("mail [EMAIL_ADDRESS] or [EMAIL_ADDRESS]", {"EMAIL_ADDRESS": 2})
    out = classify_and_redact(
        event, [redaction], key=b"k" * 16, policy=POLICY, engine_name="offline", processed_at=when
    )
    assert (out.prompt, out.response) == (redaction.text, None)
    assert out.redaction_counts == {"EMAIL_ADDRESS": 2}
    assert out.data_class == cls(info_types=["EMAIL_ADDRESS"], flags=["secret_detected"])
    assert cls(info_types=["EMAIL_ADDRESS"]) == "CONFIDENTIAL"
    assert out.data_class == "RESTRICTED"  # the flag raises it above what the findings give
    assert out.user_key == pseudonymize("user-1", b"k" * 16)
    assert out.policy_version == POLICY.version
