"""The adversarial corpus: hand-written shapes that broke the redaction engine, by family.

Every family of issue 20's findings that concerns the engine (identifier fields and dead-letter
payloads are tested where they are handled: ``transforms/redact.py``, ``transforms/pii/
payload.py``), with the values as people paste them. A case passes when every planted value
is covered by findings, whatever their info type (what matters is that it is gone). The
target is all of them: 1.0 per family.
"""

from __future__ import annotations

import base64
import json
import random
from typing import NamedTuple

__all__ = ["FAMILIES", "Case", "cases"]

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


CARD, JP_PHONE = "4111 1111 1111 1111", "090-1234-5678"


class Case(NamedTuple):
    family: str
    text: str
    values: tuple[str, ...]  # each must be fully covered by findings


def _wide(text: str) -> str:
    """``text`` in full-width forms (as Japanese and Chinese input methods type it)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _key_body(seed: int, size: int) -> str:
    rng = random.Random(seed)
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(size))).decode("ascii")


def _lines(body: str, width: int = 64) -> str:
    return "\n".join(body[i : i + width] for i in range(0, len(body), width))


def _private_keys() -> list[Case]:
    pgp_lines = _lines(_key_body(1, 600))
    pgp = (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\nComment: laptop key\n\n"
        f"{pgp_lines}\n=Xk9a"
    )
    big_body = _lines(_key_body(2, 13_000))  # > 16 KB of base64
    big = f"-----BEGIN RSA PRIVATE KEY-----\n{big_body}\n-----END RSA PRIVATE KEY-----"
    pem = (
        "-----BEGIN PRIVATE KEY-----\n"
        + _lines(_key_body(3, 1200))
        + "\n-----END PRIVATE KEY-----\n"
    )
    service_account = json.dumps(
        {
            "type": "service_account",
            "project_id": "demo-project",
            "private_key_id": "3f1d2c",
            "private_key": pem,
            "client_id": "1234567890",
        },
        indent=2,
    )
    escaped = json.dumps(pem.rstrip("\n"))[1:-1]  # the key; the line break after it is not
    truncated = json.dumps(pem[:700])[1:-1]
    openssh = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + _lines(_key_body(4, 400), 70)
    return [
        Case("private_keys", f"my gpg key, why won't it import?\n{pgp}\n\nthanks", (pgp,)),
        Case("private_keys", f"key:\n{big}\nend", (big,)),
        Case("private_keys", f"here is the SA file:\n{service_account}", (escaped,)),
        Case(
            "private_keys",
            f'{{"private_key": "{truncated}',  # a paste cut short, JSON-escaped
            (truncated,),
        ),
        Case("private_keys", f"{openssh}\n\nwhy?", (openssh,)),
        Case(
            "private_keys",
            "deploy:\n  key: |\n    " + pem.strip().replace("\n", "\n    ") + "\n  host: x",
            (pem.strip().replace("\n", "\n    "),),
        ),
    ]


def cases() -> list[Case]:
    """Every case, in a fixed order."""
    found = [
        # --- PII followed by a number: a failed candidate, then the shorter one.
        Case("followed_by_number", "card 4111 1111 1111 1111 12/27", ("4111 1111 1111 1111",)),
        Case("followed_by_number", "jane,536-22-8141,42", ("536-22-8141",)),
        Case("followed_by_number", "4111111111111111,123", ("4111111111111111",)),
        Case("followed_by_number", "call +44 7911 123456 24/7", ("+44 7911 123456",)),
        Case(
            "followed_by_number", "4111-1111-1111-1111 exp 0927 cvv 123", ("4111-1111-1111-1111",)
        ),
        Case(
            "followed_by_number",
            "name,card,cvv\njo,5555 5555 5555 4444,737",
            ("5555 5555 5555 4444",),
        ),
        Case("followed_by_number", "Tel. 030 1234567 ab 9 Uhr", ("030 1234567",)),
        Case("followed_by_number", "jane@example.com2024 was her login", ("jane@example.com",)),
        Case(
            "followed_by_number",
            "IBAN DE89370400440532013000BIC COBADEFFXXX",
            ("DE89370400440532013000",),
        ),
        Case("followed_by_number", "my ssn: 536-22-8141.", ("536-22-8141",)),
        # --- Separators inside a value.
        Case(
            "separators",
            "card 4111\u00a01111\u00a01111\u00a01111",
            ("4111\u00a01111\u00a01111\u00a01111",),
        ),
        Case(
            "separators",
            "card 4111\u200b1111\u200b1111\u200b1111",
            ("4111\u200b1111\u200b1111\u200b1111",),
        ),
        Case("separators", "card 4111.1111.1111.1111", ("4111.1111.1111.1111",)),
        Case("separators", "card 4111  1111  1111  1111", ("4111  1111  1111  1111",)),
        Case("separators", "card 4111 1111\n1111 1111", ("4111 1111\n1111 1111",)),
        Case(
            "separators",
            "call +44\u00a020\u00a07946\u00a00958",
            ("+44\u00a020\u00a07946\u00a00958",),
        ),
        Case("separators", "call +44 20\u200b7946 0958", ("+44 20\u200b7946 0958",)),
        Case("separators", "phone: 020.7946.0958", ("020.7946.0958",)),
        Case("separators", "phone: +44 20  7946  0958", ("+44 20  7946  0958",)),
        Case("separators", "phone: +44 20 7946\n0958", ("+44 20 7946\n0958",)),
        Case(
            "separators",
            "tel 06\u202f12\u202f34\u202f56\u202f78",
            ("06\u202f12\u202f34\u202f56\u202f78",),
        ),
        Case(
            "separators",
            "IBAN DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",
            ("DE89\u00a03704\u00a00044\u00a00532\u00a00130\u00a000",),
        ),
        Case("separators", "iban: de89 3704 0044 0532 0130 00", ("de89 3704 0044 0532 0130 00",)),
        Case("separators", "IBAN DE89-3704-0044-0532-0130-00", ("DE89-3704-0044-0532-0130-00",)),
        Case("separators", "IBAN GB82.WEST.1234.5698.7654.32", ("GB82.WEST.1234.5698.7654.32",)),
        Case("separators", "IBAN GB82 WEST 1234\n5698 7654 32", ("GB82 WEST 1234\n5698 7654 32",)),
        Case("separators", "SSN: 536\u201122\u20118141", ("536\u201122\u20118141",)),
        Case("separators", "card " + _wide(CARD), (_wide(CARD),)),
        # --- E-mail addresses in disguise.
        Case("email_shapes", "mail jane\uff20example.com", ("jane\uff20example.com",)),
        Case("email_shapes", "mailto:jane%40example.com", ("jane%40example.com",)),
        Case("email_shapes", "<a>jane&#64;example.com</a>", ("jane&#64;example.com",)),
        Case("email_shapes", "<a>jane&#x40;example.com</a>", ("jane&#x40;example.com",)),
        Case("email_shapes", "jane&commat;example&period;com", ("jane&commat;example&period;com",)),
        Case("email_shapes", "write to jane\u200b@example.com", ("jane\u200b@example.com",)),
        Case("email_shapes", "write to jane@\nexample.com", ("jane@\nexample.com",)),
        Case(
            "email_shapes", "write to jane@xn--bcher-kva.example", ("jane@xn--bcher-kva.example",)
        ),
        Case("email_shapes", "write to jane@example.xn--p1ai", ("jane@example.xn--p1ai",)),
        Case("email_shapes", "login jane.doe@example.com2", ("jane.doe@example.com",)),
        Case("email_shapes", "jane [at] example [dot] com", ("jane [at] example [dot] com",)),
        Case("email_shapes", "jane(at)example(dot)com", ("jane(at)example(dot)com",)),
        Case("email_shapes", '{"email": "jane\\u0040example.com"}', ("jane\\u0040example.com",)),
        Case("email_shapes", _wide("jane@example.com"), (_wide("jane@example.com"),)),
        # --- A JSON web token wrapped over lines.
        Case("jwt_wrapped", f"token: {JWT[:60]}\n{JWT[60:]}", (f"{JWT[:60]}\n{JWT[60:]}",)),
        Case("jwt_wrapped", f"id_token={JWT[:36]}\n.{JWT[37:]}", (f"{JWT[:36]}\n.{JWT[37:]}",)),
        Case("jwt_wrapped", f"Bearer {JWT[:100]}\n{JWT[100:]}", (f"{JWT[:100]}\n{JWT[100:]}",)),
        # --- Phone numbers as people (and generators) write them: possible, not assigned.
        Case("phones_as_written", "call 001-922-351-2905x68940", ("001-922-351-2905x68940",)),
        Case("phones_as_written", "898-581-8277x47385 is my desk", ("898-581-8277x47385",)),
        Case("phones_as_written", "fax +1-493-910-9205", ("+1-493-910-9205",)),
        Case("phones_as_written", "office (01706) 04935", ("(01706) 04935",)),
        Case("phones_as_written", "ring +4429 2018841 today", ("+4429 2018841",)),
        Case("phones_as_written", "+44(0)115 4960914", ("+44(0)115 4960914",)),
        Case("phones_as_written", "0044 20 7946 0958 (home)", ("0044 20 7946 0958",)),
        Case("phones_as_written", "011 44 20 7946 0958 from the US", ("011 44 20 7946 0958",)),
        Case("phones_as_written", "(351) 917964596", ("(351) 917964596",)),
        Case("phones_as_written", "phone=01154960060 attempts=3", ("01154960060",)),
        Case("phones_as_written", "PHONE=789 300 570\n", ("789 300 570",)),
        Case("phones_as_written", "name,phone\nJo,5272868387\n", ("5272868387",)),
        Case(
            "phones_as_written", "| Name | Phone |\n|---|---|\n| Jo | 5272868387 |", ("5272868387",)
        ),
        Case("phones_as_written", "my number is 5272868387", ("5272868387",)),
        Case("phones_as_written", "Mobil: 0151 23456789", ("0151 23456789",)),
        Case("phones_as_written", "tel: +1 (150) 889-9579 ext. 12", ("+1 (150) 889-9579 ext. 12",)),
        Case("phones_as_written", "\u96fb\u8a71" + _wide(":" + JP_PHONE), (_wide(JP_PHONE),)),
        Case(
            "phones_as_written",
            "tel \u0660\u0666\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
            ("\u0660\u0666\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",),
        ),
        # --- Secrets next to their labels in any syntax.
        Case(
            "secrets",
            "<td>SecretAccessKey</td><td>wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY</td>",
            ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",),
        ),
        Case(
            "secrets",
            "the aws secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY ok",
            ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",),
        ),
        Case(
            "secrets",
            "url: https://x.example/?key=AIzaSyD3x9Kq2Lm8Np4Rs6Tu1Vw7Xy5Za0Bc2De",
            ("AIzaSyD3x9Kq2Lm8Np4Rs6Tu1Vw7Xy5Za0Bc2De",),
        ),
        Case(
            "secrets", "Authorization: Bearer%20abcdef0123456789abcdef", ("abcdef0123456789abcdef",)
        ),
        *_private_keys(),
    ]
    return found


FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(case.family for case in cases()))
