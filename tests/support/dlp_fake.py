"""A FAKE of Cloud DLP for tests, at the client boundary: DLP has no emulator.

``FakeDlp`` is an in-process gRPC server on 127.0.0.1 that implements one method of
``google.privacy.dlp.v2.DlpService``, ``DeidentifyContent``, the way the API documents it for
a table item and a de-identify template using ``replace_with_info_type_config``: every
finding in every cell is replaced by ``[INFO_TYPE]`` and the response's transformation
overview counts the findings per info type (``results[].count``, code ``SUCCESS``). It finds
values with a few plain regexes of its own (``FAKE_DETECTORS``), two of them types the
offline engine does not know (``PERSON_NAME`` after a title, ``STREET_ADDRESS`` as a number
and a street word), so tests can tell DLP's findings from the pre-screen's. A request with an
inline ``inspect_config`` instead of an inspect template is inspected for its info types only.

It enforces DLP's three per-request limits with INVALID_ARGUMENT, measured on the request as
received (serialised bytes, table values, findings), answers NOT_FOUND for a parent or
template it was not told about, and fails on demand: ``fail_next`` (the next requests, with
the given codes), ``fail_always`` and ``fail_matching`` (requests holding a marker).
``corrupt`` makes it answer like a template that masks instead of naming the info type.

Every request is recorded (``requests``), including rejected ones. Real DLP differs: its
detectors, its exact error messages, and quotas are per minute, not scripted.
"""

from __future__ import annotations

import re
import threading
from concurrent import futures
from typing import NamedTuple

import grpc
from google.cloud import dlp_v2

from transforms.pii import engine as engine_module
from transforms.pii.dlp import DlpEngine, HybridEngine

__all__ = [
    "DEIDENTIFY_TEMPLATE",
    "FAKE_DETECTORS",
    "INSPECT_TEMPLATE",
    "PROJECT",
    "FakeDlp",
    "FakeLimits",
    "Received",
    "register_fast_dlp_engines",
]

PROJECT = "fake-project"
INSPECT_TEMPLATE = f"projects/{PROJECT}/locations/global/inspectTemplates/genai-inspect"
DEIDENTIFY_TEMPLATE = f"projects/{PROJECT}/locations/global/deidentifyTemplates/genai-deid"

FAKE_DETECTORS: dict[str, re.Pattern[str]] = {
    "EMAIL_ADDRESS": re.compile(r"[\w.+-]+@[\w-]+\.[A-Za-z]{2,}"),
    "US_SOCIAL_SECURITY_NUMBER": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
    "PERSON_NAME": re.compile(r"\b(?:Dr|Mr|Mrs|Ms)\. [A-Z][a-z]+\b"),
    "STREET_ADDRESS": re.compile(r"\b\d{1,5} [A-Z][a-z]+ (?:Street|St|Avenue|Ave|Road|Rd)\b"),
}
_ERROR = dlp_v2.TransformationSummary.TransformationResultCode.ERROR
_SUCCESS = dlp_v2.TransformationSummary.TransformationResultCode.SUCCESS


class FakeLimits(NamedTuple):
    max_request_bytes: int = 524_288  # 0.5 MiB
    max_cells: int = 50_000
    max_findings: int = 3_000


class Received(NamedTuple):
    """One request as the fake saw it."""

    request_bytes: int
    parent: str
    inspect_template: str
    deidentify_template: str
    texts: tuple[str, ...]
    findings: int
    status: str  # "OK" or the status code name the fake answered with
    inline_info_types: tuple[str, ...] = ()  # an inline inspect_config's, sorted


def _findings(text: str, info_types: frozenset[str] | None) -> list[tuple[int, int, str]]:
    found = sorted(
        (m.start(), m.end(), info_type)
        for info_type, pattern in FAKE_DETECTORS.items()
        if info_types is None or info_type in info_types
        for m in pattern.finditer(text)
    )
    kept: list[tuple[int, int, str]] = []
    for finding in found:
        if not kept or finding[0] >= kept[-1][1]:
            kept.append(finding)
    return kept


class FakeDlp:
    """See the module docstring. Use as a context manager; ``endpoint`` is host:port."""

    def __init__(
        self,
        limits: FakeLimits = FakeLimits(),  # noqa: B008 - immutable NamedTuple
        *,
        parent: str = f"projects/{PROJECT}/locations/global",
        templates: tuple[str, str] = (INSPECT_TEMPLATE, DEIDENTIFY_TEMPLATE),
    ) -> None:
        self.limits = limits
        self.parent = parent
        self.templates = templates
        self.requests: list[Received] = []
        self.corrupt: str | None = None  # None, "mask" or "transformation_error"
        self._next_failures: list[grpc.StatusCode] = []
        self._always: grpc.StatusCode | None = None
        self._marker: tuple[str, grpc.StatusCode] | None = None
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.endpoint = ""

    def fail_next(self, *codes: grpc.StatusCode) -> None:
        self._next_failures.extend(codes)

    def fail_always(self, code: grpc.StatusCode | None) -> None:
        self._always = code

    def fail_matching(self, marker: str, code: grpc.StatusCode) -> None:
        self._marker = (marker, code)

    def __enter__(self) -> FakeDlp:
        handler = grpc.method_handlers_generic_handler(
            "google.privacy.dlp.v2.DlpService",
            {
                "DeidentifyContent": grpc.unary_unary_rpc_method_handler(
                    self._deidentify,
                    request_deserializer=lambda data: (
                        len(data),
                        dlp_v2.DeidentifyContentRequest.deserialize(data),
                    ),
                    response_serializer=dlp_v2.DeidentifyContentResponse.serialize,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc_info) -> None:
        if self._server is not None:
            self._server.stop(grace=None)

    @property
    def texts_received(self) -> list[str]:
        """Every text of every request answered OK, in arrival order."""
        return [t for r in self.requests if r.status == "OK" for t in r.texts]

    def _failure(self, texts: tuple[str, ...], size: int, findings: int, cells: int):
        with self._lock:
            if self._next_failures:
                return self._next_failures.pop(0), "scripted failure"
        if self._always is not None:
            return self._always, "scripted failure"
        if self._marker and any(self._marker[0] in t for t in texts):
            return self._marker[1], "scripted failure"
        if size > self.limits.max_request_bytes:
            message = f"Request payload size exceeds the limit: {self.limits.max_request_bytes}"
            return grpc.StatusCode.INVALID_ARGUMENT, message
        if cells > self.limits.max_cells:
            return grpc.StatusCode.INVALID_ARGUMENT, "Too many values in the table"
        if findings > self.limits.max_findings:
            return grpc.StatusCode.INVALID_ARGUMENT, "Too many findings in request"
        return None

    def _deidentify(self, raw: tuple[int, dlp_v2.DeidentifyContentRequest], context):
        size, request = raw
        rows = request.item.table.rows
        texts = tuple(row.values[0].string_value for row in rows)
        inline = frozenset(t.name for t in request.inspect_config.info_types) or None
        found = [_findings(text, inline) for text in texts]
        findings = sum(len(f) for f in found)
        status = self._failure(texts, size, findings, len(rows))
        inspect, deidentify = self.templates
        templates_ok = request.deidentify_template_name == deidentify and (
            request.inspect_template_name == inspect
            or (inline is not None and not request.inspect_template_name)
        )
        if status is None and (request.parent != self.parent or not templates_ok):
            status = grpc.StatusCode.NOT_FOUND, "parent or template not found"
        received = Received(
            size,
            request.parent,
            request.inspect_template_name,
            request.deidentify_template_name,
            texts,
            findings,
            "OK" if status is None else status[0].name,
            tuple(sorted(inline or ())),
        )
        with self._lock:
            self.requests.append(received)
        if status is not None:
            context.abort(*status)
        counts: dict[str, int] = {}
        out_rows = []
        for text, spans in zip(texts, found, strict=True):
            parts, position = [], 0
            for start, end, info_type in spans:
                replacement = "#" * (end - start) if self.corrupt == "mask" else f"[{info_type}]"
                parts += (text[position:start], replacement)
                counts[info_type] = counts.get(info_type, 0) + 1
                position = end
            parts.append(text[position:])
            out_rows.append(dlp_v2.Table.Row(values=[dlp_v2.Value(string_value="".join(parts))]))
        code = _ERROR if self.corrupt == "transformation_error" else _SUCCESS
        summaries = [
            dlp_v2.TransformationSummary(
                info_type=dlp_v2.InfoType(name=info_type),
                results=[dlp_v2.TransformationSummary.SummaryResult(count=n, code=code)],
            )
            for info_type, n in sorted(counts.items())
        ]
        return dlp_v2.DeidentifyContentResponse(
            item=dlp_v2.ContentItem(
                table=dlp_v2.Table(headers=request.item.table.headers, rows=out_rows)
            ),
            overview=dlp_v2.TransformationOverview(transformation_summaries=summaries),
        )


# Beam tests build engines by name on the workers; these factories give the DLP engines a
# recorded, instant sleep and three attempts, so retry paths run without waiting.
SLEEPS: list[float] = []


def fast_dlp_engine(**options) -> DlpEngine:
    return DlpEngine(**options, max_attempts=3, sleep=SLEEPS.append)


def fast_hybrid_engine(**options) -> HybridEngine:
    return HybridEngine(**options, max_attempts=3, sleep=SLEEPS.append)


def register_fast_dlp_engines(monkeypatch) -> None:
    monkeypatch.setitem(
        engine_module._ENGINE_FACTORIES, "dlp", "tests.support.dlp_fake:fast_dlp_engine"
    )
    monkeypatch.setitem(
        engine_module._ENGINE_FACTORIES, "hybrid", "tests.support.dlp_fake:fast_hybrid_engine"
    )
