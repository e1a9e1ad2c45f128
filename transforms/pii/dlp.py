"""Cloud DLP redaction engines: ``dlp`` (every text) and ``hybrid`` (only pre-screened texts).

Both run the offline engine first on every text, then send texts to DLP's
``content.deidentify`` many at a time: one table item per request, one row per text, packed
under DLP's per-request limits (``transforms.pii.dlp_batching``), with the inspect and
de-identify templates given by resource name. What DLP receives is the offline engine's
output, so DLP never sees a value the offline engine already found, and a text's result is
the union of both: offline placeholders plus DLP's, counted per info type. The de-identify
template must replace findings with their info type (``[EMAIL_ADDRESS]``), which is also
what the offline engine writes, so classification and metrics do not depend on the engine.

* ``dlp`` sends every non-empty text with the inspect template.
* ``hybrid`` sends a text with the inspect template when the offline engine found something
  in it, or when the caller escalates it (an event whose gateway policy flags are high risk).
  Every other non-empty text is still sent, for the info types only DLP finds
  (``DLP_ONLY_INFO_TYPES``: names and street addresses), with an inspect configuration
  limited to them (``NAMES_INSPECT_CONFIG``) and the same de-identify template. So no text
  skips those types; DLP bills content methods by the bytes inspected, so ``hybrid`` now sends
  as many bytes as ``dlp``, in up to twice as many requests (the two kinds are not mixed).

Quota and failures (``transforms.pii.dlp_client``): every request waits for a rate limiter
shared by the worker process; RESOURCE_EXHAUSTED, UNAVAILABLE and DEADLINE_EXCEEDED are
retried with exponential backoff; a request DLP rejects as over a limit is split in two and
each half sent again. Texts that still cannot be de-identified fail closed: one
``RedactionError`` per text, whose ``reason`` names the cause
(``redaction_failed:dlp_resource_exhausted``), so the caller dead-letters those events only.
Errors retrying cannot fix raise ``DlpServiceError``: the bundle fails and the runner retries
it, rather than every event being dead-lettered without its text.

No text is ever logged or put in an exception message. Engines pickle as their options and
connect on first use, so they can be built at launch to validate options without
credentials.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from google.cloud import dlp_v2

from transforms.pii.dlp_batching import (
    PackLimits,
    UnmappedOutput,
    cell_bytes,
    estimate_findings,
    map_texts,
    pack,
    request_bytes,
)
from transforms.pii.dlp_client import (
    DEFAULT_ENDPOINT,
    DlpCaller,
    DlpStats,
    OverLimit,
    RetriesExhausted,
)
from transforms.pii.engine import DLP_ONLY_INFO_TYPES, Redaction, RedactionError
from transforms.pii.offline import OfflineEngine
from transforms.pii.ratelimit import RateLimiter, shared_limiter
from transforms.pii.settings import DlpOptions

__all__ = ["NAMES_INSPECT_CONFIG", "DlpEngine", "HybridEngine"]

_COLUMN = "text"
_SUCCESS = dlp_v2.TransformationSummary.TransformationResultCode.SUCCESS
# The inspection of the texts ``hybrid`` sends only for what the offline engine cannot find:
# DLP's default likelihood (the Terraform inspect template's default too), no quotes.
NAMES_INSPECT_CONFIG = dlp_v2.InspectConfig(
    info_types=[dlp_v2.InfoType(name=name) for name in DLP_ONLY_INFO_TYPES],
    min_likelihood=dlp_v2.Likelihood.POSSIBLE,
    include_quote=False,
)
# Request kinds: with the inspect template, or with NAMES_INSPECT_CONFIG.
_FULL, _NAMES = "full", "names"

_Outcome = Redaction | RedactionError


class _Pending(NamedTuple):
    index: int  # position in the engine's input
    screened: Redaction  # the offline result, sent to DLP as is
    text_bytes: int  # UTF-8 bytes of the text sent
    estimate: int  # estimated findings
    kind: str  # _FULL or _NAMES


def _failure(item: _Pending, cause: str, code: str) -> RedactionError:
    return RedactionError(
        f"element {item.index}: {cause}; text not redacted",
        reason=f"redaction_failed:dlp_{code}",
    )


class DlpEngine:
    """Redacts with Cloud DLP ``content.deidentify`` (see the module docstring).

    Args:
      project, location, inspect_template, deidentify_template, endpoint,
        requests_per_minute: as ``transforms.pii.settings.DlpOptions``.
      limits: per-request limits to pack under (defaults: DLP's documented ones).
      bytes_per_finding: the per-byte term of the findings estimate.
      max_attempts: attempts per request before its texts fail (7: waits of 1 to 32 s).
      timeout_s: deadline of one request.
      sleep, limiter, rng: for tests (defaults: ``time.sleep``, the process's shared limiter
        for this endpoint and location, a fresh ``random.Random``).

    Raises:
      ValueError: invalid options (every problem, named by its flag).
    """

    name = "dlp"

    def __init__(
        self,
        *,
        project: str = "",
        location: str = "global",
        inspect_template: str = "",
        deidentify_template: str = "",
        endpoint: str = "",
        requests_per_minute: int = 60,
        limits: PackLimits = PackLimits(),  # noqa: B008 - immutable NamedTuple
        bytes_per_finding: int = 200,
        max_attempts: int = 7,
        timeout_s: float = 60.0,
        sleep: Callable[[float], None] | None = None,
        limiter: RateLimiter | None = None,
        rng: random.Random | None = None,
    ) -> None:
        options = DlpOptions(
            project, location, inspect_template, deidentify_template, endpoint, requests_per_minute
        )
        problems = options.problems()
        if max_attempts < 1 or bytes_per_finding < 1 or timeout_s <= 0:
            problems.append("max_attempts, bytes_per_finding and timeout_s must be positive")
        if problems:
            raise ValueError("; ".join(problems))
        self._options: dict[str, Any] = {
            **options.engine_options(),
            "limits": limits,
            "bytes_per_finding": bytes_per_finding,
            "max_attempts": max_attempts,
            "timeout_s": timeout_s,
        }
        self._limits = limits
        self._bytes_per_finding = bytes_per_finding
        self._screen = OfflineEngine()
        self.stats = DlpStats()
        endpoint = endpoint or DEFAULT_ENDPOINT
        self.caller = DlpCaller(
            endpoint,
            limiter=limiter or shared_limiter((endpoint, location), requests_per_minute),
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            stats=self.stats,
            sleep=sleep or time.sleep,
            rng=rng or random.Random(),
        )
        parent = f"projects/{project}/locations/{location}"
        self._names = {
            _FULL: {
                "parent": parent,
                "inspect_template_name": inspect_template,
                "deidentify_template_name": deidentify_template,
            },
            _NAMES: {
                "parent": parent,
                "inspect_config": NAMES_INSPECT_CONFIG,
                "deidentify_template_name": deidentify_template,
            },
        }
        self._fixed_bytes = {
            kind: dlp_v2.DeidentifyContentRequest.pb(
                dlp_v2.DeidentifyContentRequest(**names)
            ).ByteSize()
            for kind, names in self._names.items()
        }
        header = dlp_v2.FieldId.pb(dlp_v2.FieldId(name=_COLUMN)).ByteSize()
        self._header_bytes = 2 + header  # tag and length of Table.headers (header < 128 B)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._options)  # the client, limiter and pre-screen are rebuilt

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def _needs_service(self, screened: Redaction, escalate: bool) -> str | None:
        """How the text is sent: ``_FULL``, ``_NAMES``, or None (not at all)."""
        return _FULL if screened.text else None

    def redact(self, texts: Sequence[str]) -> list[Redaction]:
        """All-or-nothing form of ``redact_partial``: raises the first failed text's error.

        Raises:
          RedactionError: a text could not be redacted.
          DlpServiceError: DLP refused for a reason retries cannot fix.
        """
        outcomes = self.redact_partial(texts)
        for outcome in outcomes:
            if isinstance(outcome, RedactionError):
                raise outcome
        return outcomes  # type: ignore[return-value]

    def redact_partial(
        self, texts: Sequence[str], *, escalate: Sequence[bool] | None = None
    ) -> list[_Outcome]:
        """One ``Redaction`` or ``RedactionError`` per text, same order.

        ``escalate[i]`` sends text ``i`` to DLP whatever the pre-screen found (``hybrid``;
        ``dlp`` sends every non-empty text anyway).

        Raises:
          DlpServiceError: DLP refused for a reason retries cannot fix.
        """
        if escalate is not None and len(escalate) != len(texts):
            raise ValueError("escalate must have one flag per text")
        outcomes: list[_Outcome | None] = [None] * len(texts)
        pending: list[_Pending] = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                outcomes[index] = RedactionError(
                    f"element {index}: expected str, got {type(text).__name__}"
                )
                continue
            try:
                text_bytes = len(text.encode("utf-8"))
                screened = self._screen.redact_text(text)
                sent_bytes = len(screened.text.encode("utf-8"))
            except Exception as error:  # a validator, or lone surrogates UTF-8 cannot encode
                outcomes[index] = RedactionError(
                    f"element {index}: {type(error).__name__} before the DLP request",
                    reason="redaction_failed:unencodable_text",
                )
                continue
            self.stats.texts += 1
            self.stats.bytes += text_bytes
            kind = self._needs_service(screened, bool(escalate and escalate[index]))
            if kind is None:
                outcomes[index] = screened
                continue
            found = sum(screened.counts.values())
            estimate = estimate_findings(sent_bytes, found, self._bytes_per_finding)
            pending.append(_Pending(index, screened, sent_bytes, estimate, kind))
        for kind in (_FULL, _NAMES):
            self._send([p for p in pending if p.kind == kind], kind, outcomes)
        return outcomes  # type: ignore[return-value]

    def _send(self, pending: list[_Pending], kind: str, outcomes: list) -> None:
        """Packs the texts of one request kind into requests and sends them."""
        requests, oversize = pack(
            [(cell_bytes(p.text_bytes), p.estimate) for p in pending],
            self._limits,
            fixed_bytes=self._fixed_bytes[kind],
            header_bytes=self._header_bytes,
        )
        for position in oversize:
            outcomes[pending[position].index] = _failure(
                pending[position], "over a DLP request limit on its own, not sent", "too_large"
            )
        for request in requests:
            batch = [pending[position] for position in request]
            self.stats.count("texts_sent", len(batch))
            self.stats.count("bytes_sent", sum(p.text_bytes for p in batch))
            if kind == _NAMES:
                self.stats.count("names_texts_sent", len(batch))
            for item, outcome in zip(batch, self._deidentify(batch), strict=True):
                outcomes[item.index] = outcome

    def request(
        self, texts: Sequence[str], *, names_only: bool = False
    ) -> dlp_v2.DeidentifyContentRequest:
        """The request de-identifying ``texts``: one table row each, templates by name (and,
        ``names_only``, ``NAMES_INSPECT_CONFIG`` instead of the inspect template)."""
        table = dlp_v2.Table(
            headers=[dlp_v2.FieldId(name=_COLUMN)],
            rows=[dlp_v2.Table.Row(values=[dlp_v2.Value(string_value=t)]) for t in texts],
        )
        names = self._names[_NAMES if names_only else _FULL]
        return dlp_v2.DeidentifyContentRequest(**names, item=dlp_v2.ContentItem(table=table))

    def request_bytes(self, texts: Sequence[str], *, names_only: bool = False) -> int:
        """The size the packer computes for ``request(texts)`` (equal to its serialised size)."""
        rows = sum(cell_bytes(len(t.encode("utf-8"))) for t in texts)
        fixed = self._fixed_bytes[_NAMES if names_only else _FULL]
        return request_bytes(fixed, self._header_bytes, rows)

    def _deidentify(self, batch: list[_Pending]) -> list[_Outcome]:
        """De-identifies one packed request; halves it while DLP says it is over a limit."""
        request = self.request([p.screened.text for p in batch], names_only=batch[0].kind == _NAMES)
        try:
            response = self.caller.deidentify(request)
        except OverLimit:
            if len(batch) == 1:
                return [_failure(batch[0], "DLP rejected it as over a limit", "too_large")]
            self.stats.count("splits")
            half = len(batch) // 2
            return self._deidentify(batch[:half]) + self._deidentify(batch[half:])
        except RetriesExhausted as error:
            return [_failure(p, str(error), error.code) for p in batch]
        return self._outcomes(batch, response)

    @staticmethod
    def _outcomes(
        batch: list[_Pending], response: dlp_v2.DeidentifyContentResponse
    ) -> list[_Outcome]:
        """Maps DLP's answer back to the texts of ``batch`` (fail closed when it cannot)."""
        overview: Counter[str] = Counter()
        for summary in response.overview.transformation_summaries:
            for result in summary.results:
                if result.code != _SUCCESS:
                    cause = "DLP could not transform a finding"
                    return [_failure(p, cause, "transformation_error") for p in batch]
                overview[summary.info_type.name] += result.count
        try:
            rows = response.item.table.rows
            if any(len(row.values) != 1 for row in rows):
                raise UnmappedOutput("a row does not have exactly one value")
            returned = [row.values[0].string_value for row in rows]
            mapped = map_texts([p.screened.text for p in batch], returned, overview)
        except UnmappedOutput:
            cause = "DLP output does not map back to the texts"
            return [_failure(p, cause, "unmapped_output") for p in batch]
        outcomes: list[_Outcome] = []
        for item, (text, added) in zip(batch, mapped, strict=True):
            counts = dict(item.screened.counts)
            for info_type, n in added.items():
                counts[info_type] = counts.get(info_type, 0) + n
            outcomes.append(Redaction(text, counts))
        return outcomes


class HybridEngine(DlpEngine):
    """``DlpEngine`` that inspects with the template only the texts the offline engine found
    something in, or that the caller escalates; every other text is inspected for
    ``DLP_ONLY_INFO_TYPES`` only (``NAMES_INSPECT_CONFIG``)."""

    name = "hybrid"

    def _needs_service(self, screened: Redaction, escalate: bool) -> str | None:
        if not screened.text:
            return None
        return _FULL if escalate or screened.counts else _NAMES
