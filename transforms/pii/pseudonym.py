"""Keyed pseudonyms for user ids, and where the key comes from.

``user_id`` never reaches an output: it is replaced by ``pseudonymize(user_id, key)``, the hex
HMAC-SHA256 of the id under a secret key. The same id and key always give the same pseudonym
(per-user analytics keep working across runs and between streaming and backfill); without the key
the pseudonym cannot be reversed or recomputed from a guessed id. Rotating the key changes every
pseudonym, so rotate on purpose and record when.

The key is referenced, not passed: a reference is resolved on the worker (``DoFn.setup``), so the
secret is never part of the pipeline graph or its options. On Dataflow the reference is a Secret
Manager secret version (``secret:projects/P/secrets/S/versions/V``), readable by the worker service
account only; locally it is an environment variable or a file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from pathlib import Path

__all__ = ["MIN_KEY_BYTES", "PSEUDONYM_FIELD", "load_key", "pseudonym_of", "pseudonymize"]

MIN_KEY_BYTES = 16
# Dead-letter payloads write a pseudonymised user id as {"pseudonym": "<hex>"} (JSON) or
# "pseudonym:<hex>" (other text), so that a replay can tell it from a clear id.
PSEUDONYM_FIELD = "pseudonym"
_PSEUDONYM = re.compile(r"[0-9a-f]{64}")
_SECRET_VERSION = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")


def pseudonymize(user_id: str, key: bytes) -> str:
    """Returns the hex HMAC-SHA256 of ``user_id`` under ``key`` (64 characters)."""
    return hmac.new(key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()


def pseudonym_of(value: object) -> str | None:
    """The pseudonym a dead-letter payload wrote for a user id, or None if ``value`` is not one.

    Accepts exactly ``{"pseudonym": "<64 lowercase hex>"}`` (JSON payloads) or
    ``"pseudonym:<64 lowercase hex>"`` (text payloads), the forms ``pseudonymize`` output takes
    there. Only a dead-letter replay may take these as given: from a gateway they would let a
    caller choose its own user key.
    """
    if isinstance(value, dict) and set(value) == {PSEUDONYM_FIELD}:
        value = value[PSEUDONYM_FIELD]
    elif isinstance(value, str) and value.startswith(f"{PSEUDONYM_FIELD}:"):
        value = value.removeprefix(f"{PSEUDONYM_FIELD}:")
    else:
        return None
    return value if isinstance(value, str) and _PSEUDONYM.fullmatch(value) else None


def _decode(material: str) -> bytes:
    material = material.strip()
    if material.startswith("base64:"):
        return base64.b64decode(material.removeprefix("base64:"), validate=True)
    return material.encode("utf-8")


def _read_secret(reference: str, name: str) -> bytes:
    """Returns the payload of Secret Manager secret version ``name``."""
    if not _SECRET_VERSION.fullmatch(name):
        raise ValueError(
            f"pseudonym key reference {reference!r}: expected "
            "secret:projects/PROJECT/secrets/SECRET/versions/VERSION"
        )
    # Imported here: only Dataflow runs need the client (it comes with apache-beam[gcp]).
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    from google.cloud import secretmanager

    try:
        response = secretmanager.SecretManagerServiceClient().access_secret_version(name=name)
    except (GoogleAPIError, GoogleAuthError) as error:
        raise ValueError(
            f"pseudonym key reference {reference!r}: cannot read the secret "
            f"({type(error).__name__})"
        ) from error
    return response.payload.data


def load_key(reference: str) -> bytes:
    """Resolves a key reference to key bytes.

    Accepted references: ``env:NAME`` (the environment variable NAME), ``file:PATH`` (the
    file's content), ``secret:projects/P/secrets/S/versions/V`` (a Secret Manager secret version,
    read with the ambient credentials). The material may be ``base64:...``; otherwise its UTF-8
    bytes are the key (a secret payload that is not UTF-8 is used as it is).
    Raises ValueError with the reference (never the key) when it cannot be resolved or the key
    is shorter than ``MIN_KEY_BYTES``.
    """
    scheme, _, target = reference.partition(":")
    if scheme == "env":
        material = os.environ.get(target)
        if material is None:
            raise ValueError(f"pseudonym key reference {reference!r}: variable {target} is not set")
        key = _decode(material)
    elif scheme == "file":
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"pseudonym key reference {reference!r}: no such file")
        key = _decode(path.read_text("utf-8"))
    elif scheme == "secret":
        payload = _read_secret(reference, target)
        try:
            key = _decode(payload.decode("utf-8"))
        except UnicodeDecodeError:
            key = payload
    else:
        raise ValueError(
            f"pseudonym key reference {reference!r}: expected env:NAME or file:PATH "
            "or secret:projects/P/secrets/S/versions/V"
        )
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"pseudonym key reference {reference!r}: key is {len(key)} bytes, "
            f"at least {MIN_KEY_BYTES} are required"
        )
    return key
