"""Hypothesis strategies: PII and secrets generated from their grammars, written in the shapes
people paste them in, for the property-based privacy tests.

A ``Planted`` value is what the engine must remove: ``text`` (as it stands in the input) and
``needles``, the strings that must not appear in any output (the value itself and, for numbers,
its digits). The domain is each documented detector's: e-mail local parts of letters, digits
and ``._%+-`` (not RFC 5322's quoted or ``!#$`` forms), phone numbers after a phone word or in
international form, valid card and IBAN checksums, SSA-valid SSNs, IPv4 and IPv6 addresses
outside a version context, secrets in their vendors' formats.
"""

from __future__ import annotations

import json
import string
import urllib.parse
from typing import NamedTuple

from hypothesis import strategies as st
from stdnum import iban as stdnum_iban

__all__ = ["Planted", "planted", "planted_in_shape"]


class Planted(NamedTuple):
    kind: str
    text: str  # as written in the input
    needles: tuple[str, ...]  # none may appear in an output


def _digits(value: str) -> str:
    return "".join(c for c in value if c.isdigit())


def _needles(value: str, numeric: bool) -> tuple[str, ...]:
    digits = _digits(value)
    return (value, digits) if numeric and len(digits) >= 9 else (value,)


_LOWER = string.ascii_lowercase + string.digits
_B32 = string.ascii_uppercase + "234567"
_B64URL = string.ascii_letters + string.digits + "-_"


def _word(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=low, max_size=high)


@st.composite
def emails(draw) -> str:
    local = draw(_word(_LOWER, 1, 12))
    if draw(st.booleans()):
        local += draw(st.sampled_from("._+-")) + draw(_word(_LOWER, 1, 10))
    labels = draw(st.lists(_word(string.ascii_lowercase, 2, 10), min_size=1, max_size=3))
    tld = draw(st.sampled_from(["com", "org", "de", "fr", "co.uk", "io", "example", "museum"]))
    return f"{local}@{'.'.join(labels)}.{tld}"


# (calling code, national significant number lengths, trunk prefix)
_COUNTRIES = [
    ("1", (10,), ""), ("44", (10,), "0"), ("49", (10, 11), "0"), ("33", (9,), "0"),
    ("34", (9,), ""), ("39", (9, 10), ""), ("31", (9,), "0"), ("55", (10, 11), "0"),
    ("91", (10,), "0"), ("81", (9, 10), "0"), ("61", (9,), "0"), ("48", (9,), ""),
]  # fmt: skip


@st.composite
def phones(draw) -> str:
    code, lengths, trunk = draw(st.sampled_from(_COUNTRIES))
    length = draw(st.sampled_from(lengths))
    nsn = draw(st.sampled_from("23456789")) + draw(_word(string.digits, length - 1, length - 1))
    groups, position = [], 0
    while position < len(nsn):
        size = draw(st.integers(2, 4))
        groups.append(nsn[position : position + size])
        position += size
    sep = draw(st.sampled_from([" ", "-", ".", "", "\u00a0"]))
    body = sep.join(groups)
    form = draw(st.sampled_from(["plus", "00", "trunk"] if trunk else ["plus", "00"]))
    if form == "plus":
        return f"+{code} {body}"
    if form == "00":
        return f"00{code} {body}"
    return f"{trunk}{body}"


def _luhn_complete(prefix_and_body: str) -> str:
    total = 0
    for i, char in enumerate(reversed(prefix_and_body)):
        d = int(char)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return prefix_and_body + str((10 - total % 10) % 10)


@st.composite
def cards(draw) -> str:
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "37", "6011", "35"]))
    length = 15 if prefix == "37" else 16
    body = length - 1 - len(prefix)
    digits = _luhn_complete(prefix + draw(_word(string.digits, body, body)))
    if length == 15:
        return " ".join((digits[:4], digits[4:10], digits[10:]))
    sep = draw(st.sampled_from([" ", "-", "", ".", "  "]))
    return sep.join(digits[i : i + 4] for i in range(0, 16, 4))


@st.composite
def ssns(draw) -> str:
    area = draw(st.integers(1, 899).filter(lambda n: n != 666))
    return f"{area:03d}-{draw(st.integers(1, 99)):02d}-{draw(st.integers(1, 9999)):04d}"


# country -> its BBAN as (characters, count) runs
_BBANS = {
    "DE": ((string.digits, 18),),
    "GB": ((string.ascii_uppercase, 4), (string.digits, 14)),
    "NL": ((string.ascii_uppercase, 4), (string.digits, 10)),
    "AT": ((string.digits, 16),),
    "CH": ((string.digits, 17),),
}


@st.composite
def ibans(draw) -> str:
    country = draw(st.sampled_from(sorted(_BBANS)))
    bban = "".join(draw(_word(chars, n, n)) for chars, n in _BBANS[country])
    value = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
    if draw(st.booleans()):
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value.lower() if draw(st.integers(0, 9)) == 0 else value


@st.composite
def ips(draw) -> str:
    if draw(st.booleans()):
        return str(draw(st.ip_addresses(v=4)))
    address = draw(st.ip_addresses(v=6)).exploded
    return address if draw(st.booleans()) else address.replace(":0000", ":0")


@st.composite
def secrets(draw) -> tuple[str, str]:
    kind = draw(st.sampled_from(["aws", "gcp", "openai", "github", "jwt"]))
    if kind == "aws":
        return kind, "AKIA" + draw(_word(_B32, 16, 16))
    if kind == "gcp":
        return kind, "AIza" + draw(_word(_B64URL, 35, 35))
    if kind == "openai":
        return kind, "sk-proj-" + draw(_word(_B64URL, 40, 60)) + "7"
    if kind == "github":
        return kind, "ghp_" + draw(_word(string.ascii_letters + string.digits, 36, 36))
    header = "eyJhbGciOiJIUzI1NiJ9"
    payload = "eyJ" + draw(_word(_B64URL, 10, 60))
    return kind, f"{header}.{payload}.{draw(_word(_B64URL, 20, 43))}"


@st.composite
def planted(draw) -> Planted:
    """One PII value or secret, in its plain form with the context its detector needs."""
    kind = draw(st.sampled_from(["email", "phone", "card", "ssn", "iban", "ip", "secret"]))
    if kind == "secret":
        kind, value = draw(secrets())
        return Planted(kind, value, (value,))
    value = draw(
        {
            "email": emails(),
            "phone": phones(),
            "card": cards(),
            "ssn": ssns(),
            "iban": ibans(),
            "ip": ips(),
        }[kind]
    )
    return Planted(kind, value, _needles(value, kind in ("phone", "card", "ssn", "iban")))


def _wide(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@st.composite
def planted_in_shape(draw) -> Planted:
    """A planted value, written in one of the shapes people paste values in."""
    value = draw(planted())
    label = {"phone": "phone", "ssn": "SSN", "card": "card", "iban": "IBAN"}.get(value.kind, "")
    shapes = ["plain", "followed", "json", "csv"]
    if value.kind in ("email", "phone", "card", "ssn"):
        shapes += ["wide", "zero_width"]
    if value.kind == "email":
        shapes += ["percent", "entity"]
    shape = draw(st.sampled_from(shapes))
    text = value.text
    if shape == "followed":
        text += draw(
            st.sampled_from([",42", " 12/27", ".", "2024" if value.kind == "email" else ";7"])
        )
    elif shape == "json":
        text = json.dumps({"note": f"{label} {text}"})[10:-2]
    elif shape == "csv":  # under a header that names the column, the table on lines of its own
        text = f"\nname,{label or value.kind},n\njo,{text},42\n"
    elif shape == "wide":
        text = _wide(text)
    elif shape == "zero_width":
        text = text.replace("@", "\u200b@").replace("-", "-\u200b").replace(" ", "\u200b ")
    elif shape == "percent":
        text = urllib.parse.quote(text, safe="")
    elif shape == "entity":
        text = text.replace("@", "&#64;")
    needles = (
        value.needles if shape in ("plain", "followed", "csv", "json") else (*value.needles, text)
    )
    prefix = f"{label}: " if label and shape != "csv" else ""
    return Planted(value.kind, prefix + text, needles)
