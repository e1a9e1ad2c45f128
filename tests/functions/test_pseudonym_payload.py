"""Function layer: pseudonyms, key references and dead-letter payload redaction."""

import base64
import json
from types import SimpleNamespace

import pytest

from tests.support.fakes import FAIL_MARKER, FailingEngine
from transforms.pii.engine import build_engine
from transforms.pii.payload import redact_payload
from transforms.pii.pseudonym import load_key, pseudonymize

KEY = b"k" * 32
ENGINE = build_engine("offline")


def test_pseudonym_is_stable_keyed_and_not_the_id():
    assert pseudonymize("U-456", KEY) == pseudonymize("U-456", KEY)
    assert pseudonymize("U-456", KEY) != pseudonymize("U-457", KEY)
    assert pseudonymize("U-456", KEY) != pseudonymize("U-456", b"x" * 32)
    assert len(pseudonymize("U-456", KEY)) == 64
    assert "U-456" not in pseudonymize("U-456", KEY)


def test_key_references(monkeypatch, tmp_path):
    monkeypatch.setenv("PSEUDO_KEY_TEST", "a" * 20)
    assert load_key("env:PSEUDO_KEY_TEST") == b"a" * 20
    monkeypatch.setenv("PSEUDO_KEY_TEST", "base64:" + base64.b64encode(b"\x01" * 16).decode())
    assert load_key("env:PSEUDO_KEY_TEST") == b"\x01" * 16
    path = tmp_path / "key"
    path.write_text("b" * 24 + "\n")
    assert load_key(f"file:{path}") == b"b" * 24


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("env:PSEUDO_KEY_MISSING", "not set"),
        ("file:/nonexistent/key", "no such file"),
        ("vault:x", "expected env:NAME or file:PATH"),
    ],
)
def test_bad_key_references_name_the_reference_not_the_key(reference, message):
    with pytest.raises(ValueError, match=message):
        load_key(reference)


def test_short_keys_are_rejected_without_echoing_them(monkeypatch):
    monkeypatch.setenv("PSEUDO_KEY_TEST", "short-secret")
    with pytest.raises(ValueError) as caught:
        load_key("env:PSEUDO_KEY_TEST")
    assert "short-secret" not in str(caught.value)


def test_json_payload_is_redacted_structurally():
    raw = json.dumps(
        {
            "user_id": "alice-42",
            "latency_ms": "780",
            "prompt": "mail alice@example.com",
            "nested": {"note": ["call +1 415 555 2671"]},
        }
    ).encode()
    text = redact_payload(raw, ENGINE, KEY, max_bytes=10_000)
    document = json.loads(text)
    assert document["user_id"] == {"pseudonym": pseudonymize("alice-42", KEY)}
    assert document["prompt"] == "mail [EMAIL_ADDRESS]"
    assert document["nested"]["note"] == ["call [PHONE_NUMBER]"]
    assert document["latency_ms"] == "780"
    assert "alice" not in text.replace(pseudonymize("alice-42", KEY), "")


def test_broken_json_payload_is_redacted_as_text():
    raw = b'{"user_id": "bob-7", "prompt": "my card 4111 1111 1111 1111 and bob@example.org'
    text = redact_payload(raw, ENGINE, KEY, max_bytes=10_000)
    assert "bob-7" not in text and "bob@example.org" not in text
    assert "4111 1111 1111 1111" not in text
    assert f"pseudonym:{pseudonymize('bob-7', KEY)}" in text


def test_payload_is_omitted_when_oversize_or_engine_fails():
    assert redact_payload(b'{"prompt": "x"}', ENGINE, KEY, max_bytes=5) is None
    raw = json.dumps({"prompt": FAIL_MARKER}).encode()
    assert redact_payload(raw, FailingEngine(), KEY, max_bytes=10_000) is None


class _FakeSecretClient:
    """Fake of Secret Manager's client (an external API) at its boundary: answers
    ``access_secret_version`` from a dict, or raises what the real client raises."""

    payloads: dict = {}

    def access_secret_version(self, name):
        from google.api_core.exceptions import PermissionDenied

        if name not in self.payloads:
            raise PermissionDenied(f"Permission denied on {name}")
        return SimpleNamespace(payload=SimpleNamespace(data=self.payloads[name]))


SECRET = "projects/p-1/secrets/genai-pseudonym-key/versions/3"


@pytest.fixture
def fake_secret_manager(monkeypatch):
    from google.cloud import secretmanager

    monkeypatch.setattr(secretmanager, "SecretManagerServiceClient", _FakeSecretClient)
    monkeypatch.setattr(_FakeSecretClient, "payloads", {})
    return _FakeSecretClient.payloads


def test_secret_manager_key_reference(fake_secret_manager):
    fake_secret_manager[SECRET] = b"c" * 32 + b"\n"
    assert load_key(f"secret:{SECRET}") == b"c" * 32
    fake_secret_manager[SECRET] = b"base64:" + base64.b64encode(b"\x02" * 16)
    assert load_key(f"secret:{SECRET}") == b"\x02" * 16
    fake_secret_manager[SECRET] = b"\xff\xfe" * 16  # binary payload: used as it is
    assert load_key(f"secret:{SECRET}") == b"\xff\xfe" * 16


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (f"secret:{SECRET}", "cannot read the secret \\(PermissionDenied\\)"),
        ("secret:genai-pseudonym-key", "expected secret:projects/PROJECT/secrets/SECRET"),
        ("secret:projects/p/secrets/s", "expected secret:projects/PROJECT/secrets/SECRET"),
    ],
)
def test_bad_secret_references_name_the_reference(fake_secret_manager, reference, message):
    with pytest.raises(ValueError, match=message):
        load_key(reference)


def test_short_secret_is_rejected_without_echoing_it(fake_secret_manager):
    fake_secret_manager[SECRET] = b"tiny-secret"
    with pytest.raises(ValueError, match="11 bytes") as caught:
        load_key(f"secret:{SECRET}")
    assert "tiny-secret" not in str(caught.value)


# ------------------------------------------------- dead-letter payloads in every shape

USER = "alice-42"
PSEUDO = {"pseudonym": pseudonymize(USER, KEY)}


def _redacted(raw: bytes, **options) -> str | None:
    return redact_payload(raw, ENGINE, KEY, max_bytes=1_000_000, **options)


@pytest.mark.parametrize(
    "spelling", ["user_id", "userId", "USER_ID", "user-id", "UserID", "userid", "uid", "user"]
)
def test_user_id_is_pseudonymised_under_any_common_spelling_at_any_depth(spelling):
    raw = json.dumps({"data": {"items": [{spelling: USER, "note": "x"}]}}).encode()
    text = _redacted(raw)
    assert json.loads(text) == {"data": {"items": [{spelling: PSEUDO, "note": "x"}]}}
    assert USER not in text


def test_top_level_array_and_envelopes_are_redacted_structurally():
    raw = json.dumps([{"user_id": USER, "prompt": "mail bob@example.com"}, [USER]]).encode()
    text = _redacted(raw)
    assert json.loads(text) == [{"user_id": PSEUDO, "prompt": "mail [EMAIL_ADDRESS]"}, [USER]]
    # ...the second USER is not under a user-id key: an opaque string, kept (not PII-shaped).


def test_keys_are_redacted_and_kept_apart():
    raw = json.dumps({"carol@example.com": 1, "dave@example.com": 2, "ok": 3}).encode()
    assert json.loads(_redacted(raw)) == {"[EMAIL_ADDRESS]": 1, "[EMAIL_ADDRESS]#2": 2, "ok": 3}


def test_integers_are_scanned_and_everything_under_a_user_key_is_pseudonymised():
    raw = json.dumps(
        {"card": 4111111111111111, "count": 3, "user": {"id": 42, "email": "e@example.com"}}
    ).encode()
    document = json.loads(_redacted(raw))
    assert document["card"] == "[CREDIT_CARD_NUMBER]" and document["count"] == 3
    assert set(document["user"]) == {"id", "email"}
    assert all(set(v) == {"pseudonym"} for v in document["user"].values())


def test_payload_that_is_not_utf8_is_omitted():
    assert _redacted(b'{"user_id": "' + "alicé".encode("latin-1") + b'"}') is None
    assert _redacted('{"user_id": "alice"}'.encode("utf-16")) is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"userId": "alice-42", "prompt": "bob@example.com',  # truncated
        b"user_id=alice-42&email=bob%40example.com",  # form-encoded
        b"{'USER_ID': 'alice-42', 'mail': 'bob@example.com'}",  # a Python dict's repr
        b'{"uid": 12345, "prompt": "bob@example.com" trailing',
    ],
)
def test_text_that_is_not_json_keeps_no_user_id_and_no_pii(raw):
    text = _redacted(raw)
    assert text is not None
    assert "alice-42" not in text and "12345" not in text and "bob" not in text
    assert "pseudonym:" in text


def test_nesting_10000_deep_redacts_without_recursion_error():
    raw = b'{"a": ' * 10_000 + b'{"userId": "alice-42", "m": "bob@example.com"}' + b"}" * 10_000
    text = _redacted(raw)
    assert "alice-42" not in text and "bob@example.com" not in text
    deep_array = b"[" * 10_000 + json.dumps({"user_id": USER}).encode() + b"]" * 10_000
    assert USER not in _redacted(deep_array)


def test_replayed_pseudonyms_are_kept_at_any_depth():
    raw = json.dumps({"envelope": {"userId": PSEUDO, "prompt": "hi"}}).encode()
    kept = json.loads(_redacted(raw, keep_pseudonyms=True))
    assert kept["envelope"]["userId"] == PSEUDO
    # From a gateway the same shape is not trusted: it is pseudonymised again.
    assert json.loads(_redacted(raw))["envelope"]["userId"] != PSEUDO


def test_a_field_outside_its_grammar_is_withheld_from_the_payload():
    raw = json.dumps({"region": "08677.7694.60", "model": "m", "user_id": USER}).encode()
    document = json.loads(_redacted(raw, withhold=("region",)))
    assert document == {"region": "[WITHHELD]", "model": "m", "user_id": PSEUDO}
