"""Synthetic LLM-gateway prompts and responses with PII ground truth and hard negatives.

Used by the load generator, the redaction tests and the benchmark. Texts imitate what
users paste into an LLM: coding questions with config and stack traces, support tickets,
emails to draft, pasted logs, HR/finance requests, and the assistant's answers. PII values
come from Faker in many locales (``LOCALES``), so phone numbers and IBANs appear in many
national formats; secrets are generated in their vendors' formats.

Every text carries hard negatives, look-alikes a redactor must leave alone: order ids,
invoice numbers, Luhn-invalid 16-digit numbers, version strings (``upgraded to version
1.2.3.4``), dates and timestamps, amounts, UUIDs, git SHAs, ports, HTTP status codes, ISBNs,
epoch timestamps. Their spans are recorded, so precision can be asserted exactly.

Ground-truth conventions (what "found" is measured against):

* phone numbers are Faker numbers that ``phonenumbers`` deems valid for the locale's region
  (Faker draws invalid area codes about half the time; the requirement is to redact *valid*
  numbers), written as Faker wrote them or re-formatted international/national/E.164;
* the span of a bearer token or an AWS secret key is the token itself, not its label;
* names, cities and companies appear in the text but are not ground truth (no PERSON or
  LOCATION detection is in scope).

Deterministic: the output depends only on the ``random.Random`` state; Faker is re-seeded
from it on every call.

Length (over 600 lines): mostly templates and value makers (data more than logic); split,
the ground-truth conventions below would be scattered over modules.
"""

from __future__ import annotations

import base64
import functools
import json
import random
import re
import string
import uuid
from collections.abc import Callable, Iterable
from typing import NamedTuple

import phonenumbers
from faker import Faker
from stdnum import iban as stdnum_iban

__all__ = [
    "EMPTY_SCORE",
    "LOCALES",
    "LOCALE_REGIONS",
    "NEGATIVE_KINDS",
    "PII_KINDS",
    "Score",
    "Span",
    "SyntheticEvent",
    "SyntheticText",
    "make_event",
    "make_text",
    "new_faker",
    "score",
]

# Faker locale -> phone region. Every region is in the offline engine's default list.
LOCALE_REGIONS: dict[str, str] = {
    "en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "es_ES": "ES",
    "it_IT": "IT", "nl_NL": "NL", "pt_BR": "BR", "en_IN": "IN", "ja_JP": "JP",
    "en_AU": "AU", "pl_PL": "PL", "en_CA": "CA",
}  # fmt: skip
LOCALES: tuple[str, ...] = tuple(LOCALE_REGIONS)


class Span(NamedTuple):
    """A labelled substring ``text[start:end] == value``; ``span[:2]`` is (label, value)."""

    label: str  # info type for PII, negative kind for hard negatives
    value: str
    start: int
    end: int


class SyntheticText(NamedTuple):
    text: str
    pii: list[Span]  # ground truth: what must be redacted
    negatives: list[Span]  # hard negatives: what must be left alone
    locale: str  # the Faker locale the PII and names were drawn from


class SyntheticEvent(NamedTuple):
    prompt: SyntheticText
    response: SyntheticText


def new_faker(locales: Iterable[str] = LOCALES) -> Faker:
    """A multi-locale Faker; ``make_text`` seeds it, so no seed is needed here."""
    return Faker(list(locales))


# ------------------------------------------------------------------------- value makers

_B32 = string.ascii_uppercase + "234567"
_ALNUM = string.ascii_letters + string.digits
_URLSAFE = _ALNUM + "-_"
_B64 = _ALNUM + "+/"


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    # Real keys of this length always contain a digit; make sure ours do too.
    while True:
        value = "".join(rng.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in value) or not any(c.isdigit() for c in alphabet):
            return value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _phone(rng: random.Random, fake: Faker, locale: str) -> str:
    region = LOCALE_REGIONS[locale]
    number = None
    for _ in range(60):
        raw = fake[locale].phone_number()
        try:
            number = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            break
    else:
        raw, number = "", phonenumbers.example_number(region)
    style = rng.random()
    if raw and style < 0.6:
        return raw
    if style < 0.8:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    if style < 0.92:
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _card(rng: random.Random, fake: Faker, locale: str) -> str:
    digits = fake["en_US"].credit_card_number()
    style = rng.random()
    if style < 0.3 or len(digits) == 13:
        return digits
    sep = " " if style < 0.7 else "-"
    if len(digits) in (14, 15):  # Amex 4-6-5, Diners 4-6-4
        return sep.join((digits[:4], digits[4:10], digits[10:]))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


def _iban(rng: random.Random, fake: Faker, locale: str) -> str:
    value = fake[locale].iban()
    if not stdnum_iban.is_valid(value):  # en_IN's Faker makes 21-character "GB" IBANs
        value = fake["en_GB"].iban()
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def _jwt(rng: random.Random, fake: Faker, locale: str) -> str:
    header = {"alg": rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {
        "sub": str(uuid.UUID(int=rng.getrandbits(128))),
        "iat": 1_700_000_000 + rng.randrange(50_000_000),
        "scope": rng.choice(["read", "read write", "admin"]),
    }
    signature = bytes(rng.getrandbits(8) for _ in range(32))
    parts = (json.dumps(header).encode(), json.dumps(payload).encode(), signature)
    return ".".join(_b64url(part) for part in parts)


def _pem(rng: random.Random, fake: Faker, locale: str) -> str:
    label = rng.choice(["RSA ", "EC ", "", "OPENSSH ", "ENCRYPTED "])
    body = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(rng.randint(120, 260))))
    text = body.decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    block = f"-----BEGIN {label}PRIVATE KEY-----\n" + "\n".join(lines)
    if rng.random() < 0.8:  # else a truncated paste without the END line
        block += f"\n-----END {label}PRIVATE KEY-----"
    return block


def _auth_token(rng: random.Random, fake: Faker, locale: str) -> str:
    kind = rng.random()
    if kind < 0.45:
        prefix = rng.choice(["sk-proj-", "sk-", "sk-svcacct-"])
        return prefix + _chars(rng, _URLSAFE if prefix != "sk-" else _ALNUM, 48)
    if kind < 0.75:
        if rng.random() < 0.7:
            return rng.choice(["ghp_", "gho_", "ghs_"]) + _chars(rng, _ALNUM, 36)
        return "github_pat_" + _chars(rng, _ALNUM, 22) + "_" + _chars(rng, _ALNUM, 59)
    return (
        rng.choice(["xoxb-", "xoxp-", "xoxa-"])
        + "-".join(str(rng.randrange(10**11, 10**12)) for _ in range(2))
        + "-"
        + _chars(rng, _ALNUM, 24)
    )


_PII_MAKERS: dict[str, Callable[[random.Random, Faker, str], str]] = {
    "EMAIL_ADDRESS": lambda rng, fake, loc: rng.choice(
        [fake[loc].email, fake[loc].free_email, fake[loc].company_email]
    )(),
    "PHONE_NUMBER": _phone,
    "CREDIT_CARD_NUMBER": _card,
    "US_SOCIAL_SECURITY_NUMBER": lambda rng, fake, loc: fake["en_US"].ssn(),
    "IBAN_CODE": _iban,
    "IP_ADDRESS": lambda rng, fake, loc: rng.choice(
        [fake[loc].ipv4_public, fake[loc].ipv4_private, fake[loc].ipv6]
    )(),
    "AWS_CREDENTIALS": lambda rng, fake, loc: rng.choice(["AKIA", "ASIA"]) + _chars(rng, _B32, 16),
    "AWS_SECRET": lambda rng, fake, loc: _chars(rng, _B64, 40),
    "GCP_API_KEY": lambda rng, fake, loc: "AIza" + _chars(rng, _URLSAFE, 35),
    "JSON_WEB_TOKEN": _jwt,
    "ENCRYPTION_KEY": _pem,
    "AUTH_TOKEN": _auth_token,
    # Opaque tokens are only recognisable after "Bearer": their own kind, with those contexts.
    "AUTH_BEARER": lambda rng, fake, loc: _chars(rng, _URLSAFE + ".~", rng.randint(32, 64)),
}
# Kind -> info type: a kind is an info type, or a variant with its own contexts.
PII_KINDS: dict[str, str] = {kind: kind for kind in _PII_MAKERS} | {
    "AWS_SECRET": "AWS_CREDENTIALS",
    "AUTH_BEARER": "AUTH_TOKEN",
}
_PII_WEIGHTS: dict[str, float] = {
    "EMAIL_ADDRESS": 3, "PHONE_NUMBER": 3, "IP_ADDRESS": 2, "CREDIT_CARD_NUMBER": 1.5,
    "IBAN_CODE": 1.5, "US_SOCIAL_SECURITY_NUMBER": 1, "AWS_CREDENTIALS": 0.7,
    "AWS_SECRET": 0.4, "GCP_API_KEY": 0.6, "JSON_WEB_TOKEN": 0.7, "ENCRYPTION_KEY": 0.4,
    "AUTH_TOKEN": 1.2, "AUTH_BEARER": 0.6,
}  # fmt: skip


def _luhn_invalid(rng: random.Random) -> str:
    digits = [rng.choice("3456")] + [rng.choice(string.digits) for _ in range(15)]
    total = sum(
        (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d
        for i, d in enumerate(int(c) for c in reversed(digits))
    )
    if total % 10 == 0:  # make it invalid by bumping the last digit
        digits[-1] = str((int(digits[-1]) + 1) % 10)
    value = "".join(digits)
    sep = rng.choice(["", " ", "-"])
    return sep.join(value[i : i + 4] for i in range(0, 16, 4))


def _amount(rng: random.Random) -> str:
    whole, cents = rng.randint(1, 99_999), rng.randint(0, 99)
    dotted = f"{whole:,}".replace(",", ".")  # 12.345 (de, pt, it)
    spaced = f"{whole:,}".replace(",", " ")  # 12 345 (fr, pl)
    return rng.choice(
        [
            f"${whole:,}.{cents:02d}",
            f"€{dotted},{cents:02d}",
            f"{spaced},{cents:02d} €",
            f"USD {whole:,}",
            f"R$ {dotted},{cents:02d}",
            f"£{whole}.{cents:02d}",
        ]
    )


def _date(rng: random.Random) -> tuple[int, int, int, int, int, int]:
    return (
        rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28),
        rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59),
    )  # fmt: skip


def _order_id(r: random.Random) -> str:
    return r.choice(
        [
            f"ORD-{r.randint(2019, 2026)}-{r.randint(100000, 999999)}",
            f"#{r.randint(10**8, 10**9)}",
            "A" + "".join(r.choice(_B32) for _ in range(9)),
        ]
    )


def _invoice(r: random.Random) -> str:
    year, number = r.randint(2019, 2026), r.randint(1, 99999)
    return r.choice([f"INV-{year}-{number:05d}", f"{year}/{number:05d}"])


_TIMESTAMP_FORMATS = (
    "{0:04d}-{1:02d}-{2:02d}T{3:02d}:{4:02d}:{5:02d}Z",
    "{0:04d}-{1:02d}-{2:02d} {3:02d}:{4:02d}:{5:02d},123",
    "{2:02d}.{1:02d}.{0:04d} {3:02d}:{4:02d}",
    "{1:02d}/{2:02d}/{0:04d} {3:02d}:{4:02d}:{5:02d}",
)
_PORTS = (80, 443, 3000, 5432, 6379, 8000, 8080, 8443, 9092, 27017)
_STATUSES = (200, 201, 204, 301, 400, 401, 403, 404, 409, 429, 500, 502, 503)


def _isbn(r: random.Random) -> str:
    return (
        f"978-{r.randint(0, 9)}-{r.randint(10, 99)}-{r.randint(100000, 999999)}-{r.randint(0, 9)}"
    )


_NEGATIVE_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "order_id": _order_id,
    "order_number": lambda r: str(r.randint(10**9, 10**10 - 1)),  # bare; "order" precedes it
    "invoice": _invoice,
    "luhn_invalid": _luhn_invalid,
    "version": lambda r: ".".join(str(r.randint(0, 20)) for _ in range(4)),
    "semver": lambda r: f"{r.randint(0, 5)}.{r.randint(0, 40)}.{r.randint(0, 20)}",
    "iso_date": lambda r: "{:04d}-{:02d}-{:02d}".format(*_date(r)[:3]),
    "timestamp": lambda r: r.choice(_TIMESTAMP_FORMATS).format(*_date(r)),
    "amount": _amount,
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128))),
    "git_sha": lambda r: f"{r.getrandbits(160):040x}"[: r.choice([7, 12, 40])],
    "port": lambda r: str(r.choice(_PORTS)),
    "status": lambda r: str(r.choice(_STATUSES)),
    "isbn": _isbn,
    "epoch": lambda r: str(r.randint(1_600_000_000, 1_800_000_000) * r.choice([1, 1000])),
    "count": lambda r: str(r.randint(1000, 10**8)),
}
NEGATIVE_KINDS: tuple[str, ...] = tuple(_NEGATIVE_MAKERS)


# --------------------------------------------------------------------------- templates
# Templates use {slots}: {pii} is the ground-truth value, {neg:KIND} a hard negative, any
# other slot a filler (names, companies, cities ... never ground truth).

_LANGS = ("Python", "TypeScript", "Go", "Java", "Rust", "Kotlin", "C#", "Ruby")
_FRAMEWORKS = ("FastAPI", "Django", "Spring Boot", "Express", "Flask", "Rails", "gin", "Next.js")
_PACKAGES = (
    "requests",
    "urllib3",
    "pydantic",
    "numpy",
    "boto3",
    "grpcio",
    "protobuf",
    "sqlalchemy",
)


@functools.cache
def _sorted_cities(fake: Faker, locale: str) -> tuple[str, ...] | None:
    # Faker's it_IT builds its city list from a set, so its order, and city(), change with
    # PYTHONHASHSEED; drawing from a sorted copy keeps texts the same in every process.
    for provider in fake[locale].get_providers():
        cities = getattr(provider, "cities", None)
        if isinstance(cities, list | tuple):
            return tuple(sorted(cities))
    return None


def _fillers(rng: random.Random, fake: Faker, locale: str) -> dict[str, Callable[[], str]]:
    local = fake[locale]
    cities = _sorted_cities(fake, locale)
    return {
        "name": local.name,
        "first": local.first_name,
        "company": local.company,
        "city": (lambda: local.random_element(cities)) if cities else local.city,
        "address": lambda: local.address().replace("\n", ", "),
        "product": fake["en_US"].catch_phrase,
        "domain": fake["en_US"].domain_name,
        "user": fake["en_US"].user_name,
        "bic": local.swift,
        "sentence": local.sentence,
        "words": lambda: " ".join(fake["en_US"].words(rng.randint(4, 9))),
        "lang": lambda: rng.choice(_LANGS),
        "framework": lambda: rng.choice(_FRAMEWORKS),
        "package": lambda: rng.choice(_PACKAGES),
        "n": lambda: str(rng.randint(2, 48)),
        "ms": lambda: str(rng.randint(12, 30_000)),
        "weekday": lambda: rng.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")),
    }


_PII_CONTEXTS: dict[str, tuple[str, ...]] = {
    "EMAIL_ADDRESS": (
        "You can reach me at {pii} if anything is unclear. ",
        "From: {name} <{pii}>\nSubject: Re: invoice {neg:invoice}\n",
        "The user {pii} cannot reset the password since {neg:iso_date}. ",
        'git config --global user.email "{pii}"\n',
        "Please cc {first} ({pii}) on the reply. ",
        'INFO auth: login failed for user="{pii}" status={neg:status}\n',
        "Send the draft to {pii} and keep it short. ",
    ),
    "PHONE_NUMBER": (
        "You can call me at {pii} after 5pm. ",
        "My phone number is {pii}, text me if that is easier. ",
        "Tel: {pii}\n",
        "Mobile: {pii} (WhatsApp works too). ",
        "Please ring {first} on {pii} to confirm the delivery slot. ",
        "Kontakt: Telefon {pii}. ",
        "Customer phone: {pii}; order {neg:order_id}. ",
        "Teléfono de contacto: {pii}. ",
        "電話: {pii}\n",
        "Reach me on {pii} or by email. ",
        "Best regards,\n{name}\n{company}\n{pii}\n",
        "-- {name}, {pii}\n",
        "Il mio numero è {pii}, grazie. ",
        "{first} ({pii}) is the on-call contact this week. ",
    ),
    "CREDIT_CARD_NUMBER": (
        "My card {pii} was charged twice for order {neg:order_id}. ",
        "Card number: {pii}, expiry 09/27. ",
        'payment failed: {{"card": "{pii}", "amount": "{neg:amount}"}}\n',
        "The customer paid with {pii} on {neg:iso_date}. ",
        "Can you check why {pii} is declined? ",
    ),
    "US_SOCIAL_SECURITY_NUMBER": (
        "SSN: {pii}\n",
        "Her social security number is {pii}, please update the payroll record. ",
        "Employee record: {name}, SSN {pii}, start date {neg:iso_date}. ",
        "Fill in the W-4 for {name} ({pii}). ",
    ),
    "IBAN_CODE": (
        "Please wire the refund to IBAN {pii}. ",
        "IBAN: {pii} (BIC {bic})\n",
        "Bank details: {pii} BIC {bic}, reference {neg:invoice}. ",
        "Pay {neg:amount} into {pii} by {weekday}. ",
    ),
    "IP_ADDRESS": (
        "The connection from {pii} is refused by the firewall. ",
        "ssh deploy@{pii} -p 2222 hangs after the key exchange. ",
        "My server's IP is {pii}, listening on port {neg:port}. ",
        '{pii} - - "GET /api/v1/orders HTTP/1.1" {neg:status} {ms}\n',
        "X-Forwarded-For: {pii}\n",
        "WARN rate limit exceeded for client {pii} ({n} req/s)\n",
    ),
    "AWS_CREDENTIALS": (
        "aws_access_key_id = {pii}\n",
        'export AWS_ACCESS_KEY_ID="{pii}"\n',
        "Our CI uses the key {pii} and it suddenly gets AccessDenied. ",
    ),
    "AWS_SECRET": (
        "aws_secret_access_key = {pii}\n",
        'AWS_SECRET_ACCESS_KEY="{pii}"\n',
        '  "SecretAccessKey": "{pii}",\n',
    ),
    "GCP_API_KEY": (
        'const API_KEY = "{pii}";\n',
        "curl 'https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key={pii}'\n",
        "Is {pii} a valid Maps key? It returns {neg:status}. ",
    ),
    "JSON_WEB_TOKEN": (
        "Authorization: Bearer {pii}\n",
        "My session token is {pii} and it expires too early. ",
        "GET /callback?id_token={pii}&state=af0ifjsldkj\n",
    ),
    "ENCRYPTION_KEY": (
        "Here is my key, why does ssh say invalid format?\n\n{pii}\n\n",
        "```\n{pii}\n```\n",
    ),
    "AUTH_TOKEN": (
        'OPENAI_API_KEY="{pii}"\n',
        "my token is {pii}, is it still valid? ",
        "token: {pii}\n",
        'headers = {{"Authorization": "token {pii}"}}\n',
        "SLACK_BOT_TOKEN={pii}\n",
    ),
    "AUTH_BEARER": (
        "Authorization: Bearer {pii}\n",
        "curl -H 'Authorization: Bearer {pii}' https://api.{domain}/v1/me\n",
        'headers = {{"Authorization": f"Bearer {pii}"}}\n',
    ),
}

_NEGATIVE_SENTENCES: tuple[str, ...] = (
    "We upgraded to version {neg:version} yesterday and it broke. ",
    "Build {neg:version} is what runs in prod; staging runs {neg:semver}. ",
    "pip install {package}=={neg:version} fixed it locally. ",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/{neg:version} Safari/537.36\n",
    "The {neg:version} release changed the retry policy. ",
    "My order {neg:order_number} has not arrived yet. ",
    "Order {neg:order_id} was placed on {neg:iso_date}. ",
    "Invoice {neg:invoice} for {neg:amount} is overdue. ",
    "The test card {neg:luhn_invalid} is rejected, as expected. ",
    "Request {neg:uuid} failed with HTTP {neg:status} after {ms} ms. ",
    "The regression came in with commit {neg:git_sha}. ",
    "Postgres listens on localhost:{neg:port} but the app uses port {neg:port}. ",
    "Nightly job finished at {neg:timestamp}, processed {neg:count} rows. ",
    "The book (ISBN {neg:isbn}) covers this in chapter {n}. ",
    "created_at={neg:epoch} updated_at={neg:epoch}\n",
    "Total this quarter: {neg:amount}, up {n}% on last year. ",
)

_TOPICS = ("coding", "support", "email", "logs", "finance", "meeting")

_PROMPT_BLOCKS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "coding": (
        ("I'm getting an error in my {lang} service. ",
         "Can you help me debug this {framework} endpoint? It returns {neg:status}. ",
         "Why does this {lang} code hang under load? "),
        ("```\nresp = session.get(f\"{{BASE_URL}}/orders/{{order_id}}\", timeout={n})\n"
         "resp.raise_for_status()\n```\n",
         "Traceback (most recent call last):\n  File \"app/main.py\", line {n}, in handler\n"
         "    result = client.fetch(item_id)\nTimeoutError: read timed out after {ms} ms\n",
         "I already tried increasing the pool size to {n} and the timeout to {ms} ms. ",
         "It only happens when more than {n} workers run at once. ",
         "The {framework} docs say {words}, but that does not match what I see. ",),
        ("What am I doing wrong?", "Any idea how to fix this?", "Thanks in advance!"),
    ),
    "support": (
        ("Hi, I need help with my account at {company}. ",
         "Hello support team, ", "Good morning, I'm writing about a problem with my order. "),
        ("The parcel was supposed to arrive on {weekday} but the tracking page shows nothing. ",
         "Please ship the replacement to {address}. ",
         "I have been a customer of {company} for {n} years and this never happened. ",
         "{sentence} ",),
        ("Kind regards, {name}", "Thanks, {first}", "Looking forward to your answer."),
    ),
    "email": (
        ("Draft a polite email to {name} at {company}. ",
         "Write a reply to this message, keep it friendly: ",
         "Help me write a follow-up to {first} about our meeting in {city}. "),
        ("Mention that we can meet on {weekday} in {city}. ",
         "Say that the {product} pilot went well and we want to extend it by {n} weeks. ",
         "Original message: \"{sentence} {sentence}\" ",),
        ("Make it under 150 words.", "Sign it with my name, {first}.", "Tone: formal."),
    ),
    "logs": (
        ("Here are the logs from last night, what is going on?\n",
         "Can you summarize these log lines?\n", "Our {framework} app logs this repeatedly:\n"),
        ("{neg:timestamp} ERROR worker-{n} job failed: connection reset by peer\n",
         "{neg:timestamp} INFO request_id={neg:uuid} status={neg:status} duration_ms={ms}\n",
         "{neg:timestamp} WARN retrying in {n}s (attempt {n} of 5)\n",
         "{neg:timestamp} DEBUG cache hit ratio 0.{n} for shard {n}\n",),
        ("Is this a network problem?", "What should I look at first?", "Thanks."),
    ),
    "finance": (
        ("Please prepare the payroll changes for {company}. ",
         "Can you reconcile these payments? ", "I need a summary of this expense report. "),
        ("{name} joins the {city} office on {weekday}. ",
         "The budget for the {product} project is {neg:amount}. ",
         "Expenses above {neg:amount} need approval from {first}. ",),
        ("Format it as a table.", "Flag anything unusual.", "Thanks!"),
    ),
    "meeting": (
        ("Summarize these meeting notes: ", "Turn these notes into action items:\n",
         "Write minutes for the {city} offsite. "),
        ("{first} will own the {product} rollout. ",
         "Decision: move the launch by {n} days. ",
         "{name} raised concerns about {words}. ",),
        ("Keep it brief.", "Use bullet points.", "Add owners and dates."),
    ),
}  # fmt: skip

_RESPONSE_BLOCKS: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
    (
        "Sure! Here is what is happening. ",
        "Good question. ",
        "Here's a draft you can use:\n\n",
        "Thanks for the details. ",
    ),
    (
        "The error means the server closed the connection before the response was complete. ",
        "Set the header as `Authorization: Bearer <YOUR_TOKEN>` and keep the key in an "
        "environment variable, never in code. ",
        '```python\nclient = Client(api_key=os.environ["API_KEY"], timeout={n})\n```\n',
        "Dear {name},\n\nThank you for your message. {sentence} ",
        "1. Check the retry settings.\n2. Raise the pool size to {n}.\n3. Redeploy.\n",
        "{first} will follow up by {weekday}. ",
        "This usually happens when {words}. ",
    ),
    ("Let me know if you need anything else.", "Hope this helps!", "Best regards"),
)


def _blocks(topic: str, role: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    return _PROMPT_BLOCKS[topic] if role == "prompt" else _RESPONSE_BLOCKS


# ----------------------------------------------------------------------------- builder

_SLOT = re.compile(r"\{\{|\}\}|\{(\w+(?::\w+)?)\}")  # "{{" and "}}" are literal braces


class _Builder:
    """Appends rendered templates, recording PII and negative spans."""

    def __init__(self, rng: random.Random, fake: Faker, locale: str) -> None:
        self.rng, self.fake, self.locale = rng, fake, locale
        self.parts: list[str] = []
        self.length = 0
        self.pii: list[Span] = []
        self.negatives: list[Span] = []
        self._fillers = _fillers(rng, fake, locale)

    def _append(self, value: str) -> tuple[int, int]:
        start = self.length
        self.parts.append(value)
        self.length += len(value)
        return start, self.length

    def render(self, template: str, pii_kind: str | None = None) -> None:
        position = 0
        for slot in _SLOT.finditer(template):
            self._append(template[position : slot.start()])
            key = slot.group(1)
            if key is None:
                self._append(slot.group(0)[0])
            elif key == "pii":
                assert pii_kind is not None
                value = _PII_MAKERS[pii_kind](self.rng, self.fake, self.locale)
                self.pii.append(Span(PII_KINDS[pii_kind], value, *self._append(value)))
            elif key.startswith("neg:"):
                kind = key[4:]
                value = _NEGATIVE_MAKERS[kind](self.rng)
                self.negatives.append(Span(kind, value, *self._append(value)))
            else:
                self._append(self._fillers[key]())
            position = slot.end()
        self._append(template[position:])

    def build(self) -> SyntheticText:
        return SyntheticText("".join(self.parts), self.pii, self.negatives, self.locale)


def make_text(
    rng: random.Random,
    fake: Faker,
    *,
    pii_share: float,
    target_chars: int = 1000,
    role: str = "prompt",
) -> SyntheticText:
    """One prompt or response of about ``target_chars`` characters (usually a little more).

    Args:
        rng: the only source of randomness; Faker is re-seeded from it.
        fake: a Faker whose locales are a subset of ``LOCALES`` including ``en_US`` (SSNs,
            cards) and ``en_GB`` (IBANs for locales Faker gets wrong); see ``new_faker``.
        pii_share: probability that the text contains PII (1 to 3 values); 0 and 1 are exact.
        target_chars: length to reach before the text is closed.
        role: ``"prompt"`` or ``"response"`` (assistant-style wording).

    Raises:
        ValueError: an unknown role, or ``fake`` lacks the locales this needs.
    """
    if role not in ("prompt", "response"):
        raise ValueError(f"role must be 'prompt' or 'response', got {role!r}")
    unsupported = sorted(set(fake.locales) - set(LOCALES))
    if unsupported or not {"en_US", "en_GB"} <= set(fake.locales):
        raise ValueError(
            f"fake needs locales from LOCALES including en_US and en_GB; got {fake.locales}"
        )
    fake.seed_instance(rng.getrandbits(64))
    locale = rng.choice(fake.locales)
    builder = _Builder(rng, fake, locale)
    kinds: list[str] = []
    if rng.random() < pii_share:
        names = list(_PII_WEIGHTS)
        kinds = rng.choices(names, [_PII_WEIGHTS[k] for k in names], k=rng.choice([1, 1, 2, 3]))
    intro, fillers, outro = _blocks(rng.choice(_TOPICS), role)
    builder.render(rng.choice(intro))
    while builder.length < target_chars or kinds:
        if kinds and (builder.length >= target_chars or rng.random() < 0.35):
            kind = kinds.pop()
            builder.render(rng.choice(_PII_CONTEXTS[kind]), pii_kind=kind)
        elif rng.random() < 0.3:
            builder.render(rng.choice(_NEGATIVE_SENTENCES))
        else:
            builder.render(rng.choice(fillers))
    builder.render(rng.choice(outro))
    return builder.build()


def make_event(
    rng: random.Random, fake: Faker, *, pii_share: float, target_chars: int = 1000
) -> SyntheticEvent:
    """A prompt and its response; with probability ``pii_share`` the event holds PII.

    PII goes into the prompt (70%), the response (10%) or both (20%: answers often echo
    the address or number they were asked to write into a draft).
    """
    has_pii = rng.random() < pii_share
    where = rng.random()
    prompt_pii = has_pii and where < 0.9
    response_pii = has_pii and where >= 0.7
    prompt = make_text(rng, fake, pii_share=float(prompt_pii), target_chars=target_chars)
    response = make_text(
        rng, fake, pii_share=float(response_pii), target_chars=target_chars, role="response"
    )
    return SyntheticEvent(prompt, response)


# ----------------------------------------------------------------------------- scoring


class Score(NamedTuple):
    """Counts from comparing found spans with one or more texts' ground truth."""

    found: dict[str, int]  # info type -> ground-truth spans fully covered by that type
    missed: dict[str, int]  # info type -> ground-truth spans not fully covered
    false_positives: int  # found spans overlapping no ground truth of their type
    negatives_hit: dict[str, int]  # negative kind -> negatives overlapped by any found span
    true_positives: int  # found spans overlapping ground truth of their type

    def recall(self, info_type: str) -> float:
        total = self.found.get(info_type, 0) + self.missed.get(info_type, 0)
        return self.found.get(info_type, 0) / total if total else float("nan")

    def precision(self) -> float:
        total = self.true_positives + self.false_positives
        return self.true_positives / total if total else float("nan")

    def __add__(self, other: object) -> Score:
        if not isinstance(other, Score):
            return NotImplemented

        def merged(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}

        return Score(
            merged(self.found, other.found),
            merged(self.missed, other.missed),
            self.false_positives + other.false_positives,
            merged(self.negatives_hit, other.negatives_hit),
            self.true_positives + other.true_positives,
        )


EMPTY_SCORE = Score({}, {}, 0, {}, 0)


def score(sample: SyntheticText, found: Iterable[tuple[int, int, str]]) -> Score:
    """Scores ``found`` (start, end, info type) spans against ``sample``'s ground truth.

    A ground-truth value counts as found only if one span of its type covers all of it:
    a partly redacted value leaks, so it is a miss.
    """
    spans = list(found)
    hit: dict[str, int] = {}
    miss: dict[str, int] = {}
    for truth in sample.pii:
        covered = any(t == truth.label and s <= truth.start and e >= truth.end for s, e, t in spans)
        bucket = hit if covered else miss
        bucket[truth.label] = bucket.get(truth.label, 0) + 1
    true_positives = sum(
        any(t == p.label and s < p.end and e > p.start for p in sample.pii) for s, e, t in spans
    )
    negatives: dict[str, int] = {}
    for negative in sample.negatives:
        if any(s < negative.end and e > negative.start for s, e, _ in spans):
            negatives[negative.label] = negatives.get(negative.label, 0) + 1
    return Score(hit, miss, len(spans) - true_positives, negatives, true_positives)
