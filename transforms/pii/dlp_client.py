"""Calling Cloud DLP ``content.deidentify``: connection, client-side pacing and retries.

``DlpCaller.deidentify`` sends one request and either returns DLP's response or raises one
of three errors, each without any text in its message:

* ``OverLimit``: DLP rejected the request as over a per-request limit (INVALID_ARGUMENT
  naming a size, value or findings limit, such as "Too many findings in request"); the caller
  may split it.
* ``RetriesExhausted``: RESOURCE_EXHAUSTED, UNAVAILABLE or DEADLINE_EXCEEDED on every one of
  ``max_attempts`` attempts, waiting 1, 2, 4 ... 32 s (jittered) between them.
* ``DlpServiceError``: anything retrying will not fix (permission denied, template not found,
  another INVALID_ARGUMENT); callers let it fail the bundle.

Every attempt first waits for the rate limiter, so retries count against the pace too. The
gapic client's own retries are off (``retry=None``): this module owns the policy.
"""

from __future__ import annotations

import ipaddress
import random
import urllib.parse
from collections.abc import Callable

import grpc
from apache_beam.metrics import Metrics
from google.api_core import exceptions as api_exceptions
from google.cloud import dlp_v2
from google.cloud.dlp_v2.services.dlp_service.transports import DlpServiceGrpcTransport

from transforms.deadletter import METRICS_NAMESPACE
from transforms.pii.ratelimit import RateLimiter, backoff_delay

__all__ = [
    "DEFAULT_ENDPOINT",
    "DlpCaller",
    "DlpServiceError",
    "DlpStats",
    "OverLimit",
    "RetriesExhausted",
    "is_loopback",
]

DEFAULT_ENDPOINT = "dlp.googleapis.com"
_RETRYABLE = (
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.DeadlineExceeded,
)
# Words of the INVALID_ARGUMENT messages that mean "this request is over a limit".
_LIMIT_WORDS = ("too many", "too large", "exceed", "limit", "size")


class DlpServiceError(RuntimeError):
    """DLP refused a request for a reason retrying it will not fix by itself. Not a
    ``RedactionError``: the bundle fails and the runner retries it (no text in the message)."""


class OverLimit(Exception):
    """DLP rejected the request as over a per-request limit."""


class RetriesExhausted(Exception):
    """Every attempt failed with a retryable status; ``code`` names the last one
    (``resource_exhausted``, ``unavailable`` or ``deadline_exceeded``)."""

    def __init__(self, code: str, attempts: int):
        super().__init__(f"{attempts} attempts failed, the last with {code.upper()}")
        self.code = code


class DlpStats:
    """What an engine sent, for benchmarks and tests; Beam counters carry the same numbers
    (``genai`` namespace, ``dlp.*``) in pipelines."""

    def __init__(self) -> None:
        self.texts = self.bytes = 0  # every text given to the engine, UTF-8 bytes
        self.texts_sent = self.bytes_sent = 0  # texts sent to DLP, once each
        self.names_texts_sent = 0  # of which for DLP_ONLY_INFO_TYPES only (hybrid)
        self.requests = self.retries = self.splits = 0  # attempts, backoffs, halvings

    def count(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)
        Metrics.counter(METRICS_NAMESPACE, f"dlp.{name}").inc(n)


def is_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` (host[:port]) is this machine."""
    host = urllib.parse.urlsplit(f"//{endpoint}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DlpCaller:
    """Sends ``DeidentifyContentRequest``s with pacing and retries (see the module docstring).

    Args:
      endpoint: API host[:port]. TLS with application default credentials, except a
        loopback endpoint (a local fake), which gets a plaintext channel and no credentials.
      limiter: paces every attempt.
      max_attempts: attempts per request (>= 1).
      timeout_s: deadline of each attempt.
      stats: where requests and retries are counted.
      sleep: waits between attempts (``time.sleep``; tests pass a recorder).
      rng: jitter source.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        limiter: RateLimiter,
        max_attempts: int,
        timeout_s: float,
        stats: DlpStats,
        sleep: Callable[[float], None],
        rng: random.Random,
    ) -> None:
        self.endpoint = endpoint
        self._limiter = limiter
        self._max_attempts = max_attempts
        self._timeout_s = timeout_s
        self._stats = stats
        self._sleep = sleep
        self._rng = rng
        self._client: dlp_v2.DlpServiceClient | None = None

    def client(self) -> dlp_v2.DlpServiceClient:
        """The client, created on first use (so building an engine needs no credentials)."""
        if self._client is None:
            if is_loopback(self.endpoint):
                transport = DlpServiceGrpcTransport(channel=grpc.insecure_channel(self.endpoint))
                self._client = dlp_v2.DlpServiceClient(transport=transport)
            else:
                self._client = dlp_v2.DlpServiceClient(
                    client_options={"api_endpoint": self.endpoint}
                )
        return self._client

    def deidentify(
        self, request: dlp_v2.DeidentifyContentRequest
    ) -> dlp_v2.DeidentifyContentResponse:
        """DLP's response to ``request``.

        Raises:
          OverLimit, RetriesExhausted, DlpServiceError: see the module docstring.
        """
        for attempt in range(1, self._max_attempts + 1):
            self._limiter.acquire()
            self._stats.count("requests")
            try:
                return self.client().deidentify_content(
                    request=request, retry=None, timeout=self._timeout_s
                )
            except _RETRYABLE as error:
                if attempt == self._max_attempts:
                    code = error.grpc_status_code.name.lower()  # type: ignore[union-attr]
                    raise RetriesExhausted(code, attempt) from None
                self._stats.count("retries")
                self._sleep(backoff_delay(attempt, rng=self._rng))
            except api_exceptions.InvalidArgument as error:
                if any(word in str(error.message).lower() for word in _LIMIT_WORDS):
                    raise OverLimit("DLP rejected the request as over a limit") from None
                raise DlpServiceError("DLP rejected the request: INVALID_ARGUMENT") from None
            except api_exceptions.GoogleAPICallError as error:
                raise DlpServiceError(f"DLP refused the request: {type(error).__name__}") from None
        raise AssertionError("unreachable: max_attempts >= 1")
