"""The grammar of the contract's identifier fields and the bounds of its numbers.

The texts (``prompt``, ``response``) are free text and go through the redaction engine. Every
other string of an event is an *identifier*: it is stored as given (in the archive, the audit
log, the metrics' keys, the archive's partition path), so it must have a shape that cannot carry
free text. A value outside its grammar is a dead letter ``bad_value:<field>``; the message names
the field and the rule, never the value. (The redaction step also scans the identifiers and
dead-letters any with a finding as ``pii_in_field:<field>``: a grammar cannot tell a phone number
from an id made of digits.)

* ``request_id``: 1-128 characters of ``[A-Za-z0-9._:/+=@-]``, starting with a letter or digit
  (UUIDs, ``R-123``, ``req_01H...``, trace ids); no spaces, no free text.
* ``model``, ``model_version``: a slug of 1-128 characters of ``[A-Za-z0-9._:/+@-]``, starting
  with a letter or digit (``gpt-4o-mini``, ``claude-3-5-sonnet@20240620``, ``2024-07-18``).
* ``region``: one of the configured regions (``--allowed_regions``; default ``DEFAULT_REGIONS``,
  Google Cloud's regions and multi-regions and the short names ``us``, ``eu``, ``asia``), case
  folded to lower case. It becomes a path segment of the archive.
* ``policy_flags``: at most ``MAX_POLICY_FLAGS`` flags, each a slug of 1-64 characters of
  ``[a-z0-9_.-]`` starting with a letter or digit (``pii_redacted``, ``jailbreak_suspected``).
* Numbers: ``token_count``, ``prompt_tokens`` and ``completion_tokens`` at most ``MAX_TOKENS``
  (a window's sum of a billion of them still fits an int64); ``latency_ms`` at most
  ``MAX_LATENCY_MS`` (a day), finite.
* ``event_time``: not before ``--earliest_event_time`` (default ``DEFAULT_EARLIEST``) and not
  more than ``--max_clock_skew_s`` ahead of the clock (``event_time_in_future``).
"""

from __future__ import annotations

import datetime as dt
import re

__all__ = [
    "DEFAULT_EARLIEST",
    "DEFAULT_REGIONS",
    "MAX_LATENCY_MS",
    "MAX_POLICY_FLAGS",
    "MAX_TOKENS",
    "identifier_problem",
    "is_request_id",
    "parse_regions",
]

MAX_TOKENS = 100_000_000
MAX_LATENCY_MS = 86_400_000.0
MAX_POLICY_FLAGS = 32
DEFAULT_EARLIEST = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)

# Google Cloud's regions and multi-regions (2026), and the short names gateways often use.
DEFAULT_REGIONS: frozenset[str] = frozenset(
    (
        "us",
        "eu",
        "asia",
        "global",
        "africa-south1",
        "asia-east1",
        "asia-east2",
        "asia-northeast1",
        "asia-northeast2",
        "asia-northeast3",
        "asia-south1",
        "asia-south2",
        "asia-southeast1",
        "asia-southeast2",
        "australia-southeast1",
        "australia-southeast2",
        "europe-central2",
        "europe-north1",
        "europe-north2",
        "europe-southwest1",
        "europe-west1",
        "europe-west2",
        "europe-west3",
        "europe-west4",
        "europe-west6",
        "europe-west8",
        "europe-west9",
        "europe-west10",
        "europe-west12",
        "me-central1",
        "me-central2",
        "me-west1",
        "northamerica-northeast1",
        "northamerica-northeast2",
        "northamerica-south1",
        "southamerica-east1",
        "southamerica-west1",
        "us-central1",
        "us-east1",
        "us-east4",
        "us-east5",
        "us-south1",
        "us-west1",
        "us-west2",
        "us-west3",
        "us-west4",
    )
)

# \Z, not $: "$" also matches before a final newline.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}\Z")
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+@-]{0,127}\Z")
_FLAG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}\Z")

_RULES = {
    "request_id": "1-128 of [A-Za-z0-9._:/+=@-], starting with a letter or digit",
    "model": "a slug of 1-128 of [A-Za-z0-9._:/+@-]",
    "model_version": "a slug of 1-128 of [A-Za-z0-9._:/+@-]",
    "region": "one of the allowed regions (--allowed_regions)",
    "policy_flags": f"at most {MAX_POLICY_FLAGS} slugs of 1-64 of [a-z0-9_.-]",
}


def parse_regions(value: str) -> frozenset[str]:
    """The regions of ``--allowed_regions`` (comma-separated, case folded); empty: the default."""
    regions = frozenset(r.strip().lower() for r in value.split(",") if r.strip())
    return regions or DEFAULT_REGIONS


def is_request_id(value: object) -> bool:
    """Whether ``value`` is a request id of the contract's grammar."""
    return isinstance(value, str) and _REQUEST_ID.match(value) is not None


def identifier_problem(
    request_id: str,
    model: str,
    model_version: str | None,
    region: str,
    policy_flags: tuple[str, ...],
    regions: frozenset[str],
) -> tuple[str, str] | None:
    """``(field, rule)`` of the first identifier outside its grammar, or None. ``region`` is
    compared lower-cased."""
    if not _REQUEST_ID.match(request_id):
        return "request_id", _RULES["request_id"]
    if not _SLUG.match(model):
        return "model", _RULES["model"]
    if model_version is not None and not _SLUG.match(model_version):
        return "model_version", _RULES["model_version"]
    if region.lower() not in regions:
        return "region", _RULES["region"]
    if len(policy_flags) > MAX_POLICY_FLAGS or not all(_FLAG.match(f) for f in policy_flags):
        return "policy_flags", _RULES["policy_flags"]
    return None
