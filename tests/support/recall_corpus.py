"""A held-out recall corpus for the redaction engine: values the engine was not tuned to.

What makes it held out, against ``pipelines.local.texts`` (the load generator's corpus, which
the engine's rules were written against):

* **Values as the world writes them.** Phone numbers, e-mail addresses, card numbers, IBANs,
  IP addresses and US SSNs come from Faker in ``LOCALES`` (16 locales, three of them outside
  the engine's default phone regions), *not filtered by validity and not reformatted*: a
  phone number is exactly what ``phone_number()`` returned (unassigned, odd groupings,
  extensions, ``001`` prefixes included). The one exception is documented where it is made:
  a locale whose Faker has no IBAN of its own (en_IN, es_MX fall back to a 21-character
  ``GB…`` string that no bank would issue) draws its IBAN from ``en_GB``.
* **Secrets from generators of their own**, with the variations real ones have (key lengths,
  label spellings, wrapped and JSON-escaped private keys, PGP armor, truncated pastes).
* **Sentences of their own** (``TEMPLATES``, 14 shapes: chat, signature, CSV, JSON, YAML, a
  Markdown table, a log line, HTML, a transcript, a translation request, an env file, a
  forwarded e-mail, a ticket, a URL query string), none of them a template of
  ``pipelines.local.texts``; each value gets a label or key in one of several languages.

Ground truth is each value's span (in a URL, its percent-encoded span). ``make_corpus`` is
deterministic in its seed.
"""

from __future__ import annotations

import base64
import json
import random
import string
import urllib.parse
import uuid
from collections.abc import Callable
from typing import NamedTuple

from faker import Faker

__all__ = [
    "INFO_TYPES_MEASURED",
    "LOCALES",
    "TEMPLATES",
    "Sample",
    "Truth",
    "make_corpus",
    "new_faker",
]

LOCALES: tuple[str, ...] = (
    "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_IN",
    "ja_JP", "en_AU", "pl_PL", "en_CA", "de_AT", "fr_CH", "pt_PT",
)  # fmt: skip
# Locales whose Faker IBAN is not an IBAN (see the module docstring).
_IBAN_FALLBACK = frozenset(("en_IN", "es_MX"))


class Truth(NamedTuple):
    info_type: str
    value: str  # as it stands in the text
    start: int
    end: int


class Sample(NamedTuple):
    text: str
    truths: list[Truth]
    template: str
    locale: str


def new_faker() -> Faker:
    return Faker(list(LOCALES))


# ------------------------------------------------------------------------------ values

_B64 = string.ascii_letters + string.digits + "+/"
_URLSAFE = string.ascii_letters + string.digits + "-_"
_ALNUM = string.ascii_letters + string.digits


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _aws_key_id(rng: random.Random, fake: Faker, locale: str) -> str:
    return rng.choice(("AKIA", "ASIA")) + _chars(rng, string.ascii_uppercase + "234567", 16)


def _aws_secret(rng: random.Random, fake: Faker, locale: str) -> str:
    return _chars(rng, _B64, 40)


def _gcp_key(rng: random.Random, fake: Faker, locale: str) -> str:
    return "AIza" + _chars(rng, _URLSAFE, 35)


def _jwt(rng: random.Random, fake: Faker, locale: str) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES384", "PS512", "EdDSA"]), "typ": "JWT"}
    if rng.random() < 0.5:
        header["kid"] = _chars(rng, _ALNUM, rng.randint(8, 40))
    claims = {
        "iss": f"https://{fake['en_US'].domain_name()}",
        "sub": str(uuid.UUID(int=rng.getrandbits(128))),
        "exp": rng.randint(1_700_000_000, 1_900_000_000),
    }
    for _ in range(rng.randint(0, 6)):
        claims[_chars(rng, string.ascii_lowercase, rng.randint(2, 9))] = _chars(
            rng, _ALNUM, rng.randint(1, 30)
        )
    signature = bytes(rng.getrandbits(8) for _ in range(rng.choice([32, 48, 64, 256])))
    parts = [json.dumps(p, separators=(",", ":")).encode() for p in (header, claims)]
    return ".".join(_b64url(p) for p in [*parts, signature])


_PEM_LABELS = ("RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", "", "PGP ")


def _private_key(rng: random.Random, fake: Faker, locale: str) -> str:
    label = rng.choice(_PEM_LABELS)
    body = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(rng.randint(90, 2400))))
    width = rng.choice([64, 70, 76])
    lines = [body[i : i + width].decode() for i in range(0, len(body), width)]
    block = "BLOCK" if label == "PGP " else ""
    begin = f"-----BEGIN {label}PRIVATE KEY{' ' + block if block else ''}-----"
    end = f"-----END {label}PRIVATE KEY{' ' + block if block else ''}-----"
    head = [begin]
    if label == "PGP ":
        head += [f"Version: {rng.choice(['GnuPG v2', 'OpenPGP.js v4.10', 'Keybase'])}", ""]
    elif label == "ENCRYPTED " and rng.random() < 0.3:
        head += [
            "Proc-Type: 4,ENCRYPTED",
            f"DEK-Info: AES-128-CBC,{_chars(rng, '0123456789ABCDEF', 32)}",
            "",
        ]
    tail = [f"={_chars(rng, _B64, 4)}"] if label == "PGP " else []
    if rng.random() < 0.8:
        tail.append(end)
    else:  # a truncated paste: some lines, no END
        lines = lines[: rng.randint(1, len(lines))]
    return "\n".join(head + lines + tail)


def _github(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + _chars(rng, _ALNUM, 36)
    return "github_pat_" + _chars(rng, _ALNUM, 22) + "_" + _chars(rng, _ALNUM, 59)


def _auth_token(rng: random.Random, fake: Faker, locale: str) -> str:
    kind = rng.random()
    if kind < 0.3:
        return _github(rng)
    if kind < 0.55:
        prefix = rng.choice(["sk-", "sk-proj-", "sk-svcacct-", "sk-admin-"])
        return prefix + _chars(
            rng, _URLSAFE if prefix != "sk-" else _ALNUM, rng.choice([48, 64, 120])
        )
    if kind < 0.8:
        return (
            rng.choice(["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"])
            + "-".join(str(rng.randrange(10**10, 10**13)) for _ in range(2))
            + "-"
            + _chars(rng, _ALNUM, rng.choice([24, 32]))
        )
    return (
        "xapp-1-"
        + _chars(rng, string.ascii_uppercase + string.digits, 11)
        + "-"
        + str(rng.randrange(10**12, 10**13))
        + "-"
        + _chars(rng, "0123456789abcdef", 64)
    )


def _bearer(rng: random.Random, fake: Faker, locale: str) -> str:
    # An opaque access token: only "Bearer" tells it (the truth is the token, not the word).
    return _chars(rng, _URLSAFE + ".~", rng.randint(20, 90)) + rng.choice(string.digits)


def _iban(rng: random.Random, fake: Faker, locale: str) -> str:
    return fake["en_GB" if locale in _IBAN_FALLBACK else locale].iban()


# info type -> (kind, maker). Kinds with their own labels and templates.
_MAKERS: dict[str, tuple[str, Callable[[random.Random, Faker, str], str]]] = {
    "phone": ("PHONE_NUMBER", lambda rng, fake, loc: fake[loc].phone_number()),
    "email": (
        "EMAIL_ADDRESS",
        lambda rng, fake, loc: rng.choice(
            [fake[loc].email, fake[loc].free_email, fake[loc].company_email, fake[loc].ascii_email]
        )(),
    ),
    "card": ("CREDIT_CARD_NUMBER", lambda rng, fake, loc: fake[loc].credit_card_number()),
    "ssn": ("US_SOCIAL_SECURITY_NUMBER", lambda rng, fake, loc: fake["en_US"].ssn()),
    "iban": ("IBAN_CODE", _iban),
    "ip": (
        "IP_ADDRESS",
        lambda rng, fake, loc: rng.choice(
            [fake[loc].ipv4_public, fake[loc].ipv4_private, fake[loc].ipv6, fake[loc].ipv4]
        )(),
    ),
    "aws_key_id": ("AWS_CREDENTIALS", _aws_key_id),
    "aws_secret": ("AWS_CREDENTIALS", _aws_secret),
    "gcp_key": ("GCP_API_KEY", _gcp_key),
    "jwt": ("JSON_WEB_TOKEN", _jwt),
    "private_key": ("ENCRYPTION_KEY", _private_key),
    "token": ("AUTH_TOKEN", _auth_token),
    "bearer": ("AUTH_TOKEN", _bearer),
}
INFO_TYPES_MEASURED: tuple[str, ...] = tuple(dict.fromkeys(t for t, _ in _MAKERS.values()))

# kind -> labels (prose), keys (JSON, CSV, YAML, env, URL): what people write next to it.
_LABELS: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "phone number", "tel.", "mobile", "cell", "Telefon", "Handynummer",
              "téléphone", "teléfono", "telefono", "telefone", "telefoon", "nr tel.", "電話",
              "WhatsApp", "contact number", "number"),
    "email": ("email", "e-mail", "mail", "E-Mail-Adresse", "courriel", "correo", "address"),
    "card": ("card", "card number", "credit card", "Kreditkarte", "carte", "tarjeta", "cartão"),
    "ssn": ("SSN", "social security number", "Social Security No."),
    "iban": ("IBAN", "bank account", "Kontonummer (IBAN)", "compte", "cuenta"),
    "ip": ("IP", "ip address", "client IP", "source address", "host"),
    "aws_key_id": ("aws_access_key_id", "AWS access key", "access key id"),
    "aws_secret": ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
    "gcp_key": ("API key", "google api key", "key"),
    "jwt": ("token", "id_token", "access token", "session"),
    "private_key": ("private key", "key", "deploy key"),
    "token": ("token", "API token", "OPENAI_API_KEY", "GITHUB_TOKEN", "SLACK_BOT_TOKEN"),
    "bearer": ("Authorization",),
}  # fmt: skip
_KEYS: dict[str, tuple[str, ...]] = {
    "phone": ("phone", "phone_number", "tel", "mobile", "telefon", "telephone", "contact_phone"),
    "email": ("email", "mail", "e_mail", "contact_email", "user_email"),
    "card": ("card_number", "cc", "pan", "card"),
    "ssn": ("ssn", "social_security_number"),
    "iban": ("iban", "bank_iban", "account_iban"),
    "ip": ("ip", "client_ip", "remote_addr", "source_ip"),
    "aws_key_id": ("aws_access_key_id", "AccessKeyId"),
    "aws_secret": ("aws_secret_access_key", "SecretAccessKey", "AWS_SECRET_ACCESS_KEY"),
    "gcp_key": ("api_key", "GOOGLE_API_KEY", "key"),
    "jwt": ("token", "id_token", "jwt", "access_token"),
    "private_key": ("private_key", "ssh_key", "PRIVATE_KEY"),
    "token": ("token", "api_token", "OPENAI_API_KEY", "GITHUB_TOKEN", "SLACK_TOKEN"),
    "bearer": ("authorization",),
}

# ---------------------------------------------------------------------------- templates
# {value} is the ground truth, {label}/{Label} a prose label, {key} a machine key, other slots
# are fillers (never ground truth). Templates marked "block" take multi-line values too.

TEMPLATES: dict[str, str] = {
    "chat": "hey, my {label} is {value} — can you update my profile? thx",
    "signature": "Thanks again!\n\n{name}\n{job}, {company}\n{Label}: {value}\n",
    "csv": "id,name,{key},city\n{n},{name},{value},{city}\n",
    "json": '{{"name": "{name}", "{key}": "{value}", "active": true}}',
    "yaml": "contact:\n  name: {name}\n  {key}: {value}\n  team: {company}\n",
    "markdown": "| Name | {Label} |\n| --- | --- |\n| {name} | {value} |\n",
    "log": "{timestamp} WARN [auth] login rejected {key}={value} attempts={n}\n",
    "html": "<tr><td>{Label}</td><td>{value}</td></tr>",
    "transcript": "so uh yeah the {label} is {value} and um that should be it",
    "translate": 'Translate into German: "For questions ({label}: {value}) write to us."',
    "env": "{KEY}={value}\n",
    "forward": "--- Forwarded message ---\nFrom: {name}\n{Label}: {value}\nDate: {date}\n",
    "ticket": "Ticket #{n}: customer {name} ({label} {value}) cannot log in since {date}.",
    "url": "https://crm.example.com/lookup?{key}={encoded}&page={n}",
}
# Templates a multi-line value (a private key) goes in: as written, or JSON-escaped.
_BLOCK_TEMPLATES = ("chat", "json", "yaml_block", "env", "forward")
_BLOCK_FORMS: dict[str, str] = {
    "chat": "here is my {label}, why does ssh reject it?\n\n{value}\n\nthanks",
    "json": '{{"type": "service_account", "{key}": "{escaped}", "client_id": "{n}"}}',
    "yaml_block": "secrets:\n  {key}: |\n    {indented}\n  other: x\n",
    "env": '{KEY}="{escaped}"\n',
    "forward": "From: {name}\nSubject: {label}\n\n{value}\n",
}
# "Bearer" tokens only exist after the word: their own shapes.
_BEARER_FORMS = (
    "curl -H 'Authorization: Bearer {value}' https://api.example.com/v2/me",
    'headers = {{"Authorization": "Bearer {value}"}}',
    "Authorization: bearer {value}\n",
)


def _fillers(rng: random.Random, fake: Faker, locale: str) -> dict[str, str]:
    local = fake[locale]
    return {
        "name": local.name().replace("\n", " "),
        "company": local.company().replace("\n", " "),
        "job": fake["en_US"].job(),
        "city": local.city().replace(",", " "),
        "n": str(rng.randint(2, 99999)),
        "date": f"{rng.randint(1, 28)}.{rng.randint(1, 12)}.{rng.randint(2019, 2026)}",
        "timestamp": f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T0{rng.randint(0, 9)}:15:00Z",
    }


def _render(template: str, slots: dict[str, str], value_slot: str) -> tuple[str, int, int]:
    """Renders ``template``: (text, start, end of the slot ``value_slot``, the truth)."""
    before, _, after = template.partition("{" + value_slot + "}")
    prefix = before.format(**slots)
    value = slots[value_slot]
    text = prefix + value + after.format(**slots)
    return text, len(prefix), len(prefix) + len(value)


def _one(rng: random.Random, fake: Faker) -> Sample:
    locale = rng.choice(LOCALES)
    kind = rng.choice(list(_MAKERS))
    info_type, maker = _MAKERS[kind]
    value = maker(rng, fake, locale)
    label = rng.choice(_LABELS[kind])
    key = rng.choice(_KEYS[kind])
    slots = {
        **_fillers(rng, fake, locale),
        "label": label,
        "Label": label[:1].upper() + label[1:],
        "key": key,
        "KEY": key.upper(),
        "value": value,
    }
    if kind == "bearer":
        name, template, slot = "bearer", rng.choice(_BEARER_FORMS), "value"
    elif kind == "private_key":
        name = rng.choice(_BLOCK_TEMPLATES)
        template = _BLOCK_FORMS[name]
        # JSON-escaped ("\n" escapes), or indented as a YAML block: the truth is the key as
        # it stands in the text.
        slots.update(escaped=json.dumps(value)[1:-1], indented=value.replace("\n", "\n    "))
        slot = next((s for s in ("escaped", "indented") if "{" + s + "}" in template), "value")
    else:
        name = rng.choice(list(TEMPLATES))
        template = TEMPLATES[name]
        slot = "value"
        if name == "url":
            slots["encoded"] = urllib.parse.quote(value, safe="")
            slot = "encoded"
    text, start, end = _render(template, slots, slot)
    return Sample(text, [Truth(info_type, text[start:end], start, end)], name, locale)


def make_corpus(seed: int, n: int) -> list[Sample]:
    """``n`` samples, each one value of one kind in one template (deterministic in ``seed``)."""
    rng, fake = random.Random(seed), new_faker()
    samples = []
    for _ in range(n):
        fake.seed_instance(rng.getrandbits(64))
        samples.append(_one(rng, fake))
    return samples
