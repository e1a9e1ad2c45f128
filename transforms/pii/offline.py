"""The offline redaction engine: a hyperscan locator pass, then exact patterns and validators.

Each text is scanned once by a hyperscan database holding every detector's *locator*
patterns, compiled with ``HS_FLAG_SOM_LEFTMOST`` so that each match reports where a
candidate starts. The exact Python ``re`` pattern of that detector is then tried only at
those positions (``pattern.match(text, pos)``) and its validator run on the match, so a text
without PII or look-alikes costs one scan and Python's regex engine never walks a whole
text. What each detector redacts, and what it deliberately leaves, is documented in
``transforms.pii.detectors``.

Every text is also searched on its normalised view (``transforms.pii.normalise``: NFKC,
zero-width characters dropped, ``%40`` and ``&#64;`` decoded ...) when it has one, and the
findings of both are mapped to the original text and resolved together. The same locator pass
reports the ASCII shapes that need a view (``normalise.TRIGGERS``); only a non-ASCII text costs
one more regex search to tell, and only a text with a view a second pass.

The locators cover every position where a pattern can match, so they change speed, never
output: ``prefilter="re"`` (automatic when hyperscan cannot be imported) searches the same
locators with Python ``re`` to skip detectors, then scans with ``finditer``; and
``prefilter="none"`` runs every pattern over every text. All three give identical
redactions, which the tests check.

Hyperscan scans ``b"\\n" + text.encode("latin-1", "replace")``: one byte per character, so
its offsets are ``str`` indices shifted by one (Latin-1 text is copied as it is; other
characters become ``?``). Every pattern is ASCII, so a byte above 127 or a ``?`` only ever
stands where a pattern requires a boundary (a test checks every such byte). The
leading newline gives every candidate a boundary character before it, so a bounded
locator's match start is exactly the candidate's index.

Not thread-safe: the hyperscan scratch space belongs to the engine, so use one engine per
thread (Beam builds one per DoFn instance in ``setup()``, and a DoFn instance processes one
bundle at a time). Pickling keeps only the options; the database is rebuilt on unpickling
(about 0.1 s).
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from transforms.pii.detectors import DEFAULT_PHONE_REGIONS, Detector, Finding, build_detectors
from transforms.pii.engine import INFO_TYPES, Redaction, RedactionError
from transforms.pii.normalise import TRIGGERS, ViewCheck, needs_view, view_of

try:  # hyperscan ships manylinux wheels for x86-64 only; fall back to re elsewhere.
    import hyperscan as _hyperscan
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    _hyperscan = None

__all__ = ["PREFILTERS", "OfflineEngine", "resolve_overlaps"]

PREFILTERS: tuple[str, ...] = ("auto", "hyperscan", "re", "none")

# Builds a Redaction with the tuple constructor: the same object as Redaction(text, counts),
# without the Python-level __new__ that NamedTuple generates (one call per text).
_redaction = functools.partial(tuple.__new__, Redaction)

# text -> (detector index, candidate starts in any order, or None to scan the whole text)
_Locate = Callable[[str], "Iterable[tuple[int, list[int] | None]]"]


def resolve_overlaps(findings: Iterable[Finding]) -> list[Finding]:
    """Keeps non-overlapping findings, sorted by start.

    Secrets (priority < 10) win over PII; within a tier the longer span wins, then the lower
    priority (more specific type), then the earlier start. Deterministic whatever the input
    order. So ``https://ghp_…@github.com`` is a token, not a longer "email", while
    ``+81 568-76-9840`` is one phone number, not a country code and an SSN.
    """
    ordered = sorted(
        findings, key=lambda f: (f.priority // 10, f.start - f.end, f.priority, f.start)
    )
    # Kept findings never overlap, so sorted by start they are sorted by end too: a new one
    # only needs checking against its two neighbours (O(n log n) for texts with many).
    kept: list[Finding] = []
    starts: list[int] = []
    for finding in ordered:
        i = bisect.bisect_right(starts, finding.start)
        if (i and kept[i - 1].end > finding.start) or (i < len(kept) and starts[i] < finding.end):
            continue
        starts.insert(i, finding.start)
        kept.insert(i, finding)
    return kept


def _on_match(
    pattern_id: int, start: int, end: int, flags: int, hits: dict[int, list[int]]
) -> None:
    starts = hits.get(pattern_id)
    if starts is None:
        hits[pattern_id] = [start]
    else:
        starts.append(start)


class _HyperscanLocator:
    """One block-mode database of every locator; ids are detector indices, and
    ``len(detectors)`` for the view triggers. The triggers and the locators of ``whole_text``
    detectors report their first match only (``HS_FLAG_SINGLEMATCH``): presence is all that
    is asked of them."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        expressions, ids = [], []
        for index, detector in enumerate(detectors):
            for locator in detector.locators:
                expressions.append(locator.encode("ascii"))
                ids.append(index)
        for trigger in TRIGGERS:
            expressions.append(trigger.encode("ascii"))
            ids.append(len(detectors))
        presence = {i for i, d in enumerate(detectors) if d.whole_text} | {len(detectors)}
        self._presence = frozenset(presence)
        self._db = _hyperscan.Database(mode=_hyperscan.HS_MODE_BLOCK)
        flags = [
            _hyperscan.HS_FLAG_SINGLEMATCH if i in presence else _hyperscan.HS_FLAG_SOM_LEFTMOST
            for i in ids
        ]
        self._db.compile(expressions=expressions, ids=ids, elements=len(expressions), flags=flags)
        # Locators starting with "(?:^|[^...])" match one boundary character early; the
        # others ("unbounded") start at the candidate itself.
        unbounded = set()
        for index, detector in enumerate(detectors):
            if detector.whole_text:
                continue
            bounded = {p.removeprefix("(?i)").startswith("(?:^|") for p in detector.locators}
            if len(bounded) > 1:
                raise ValueError(f"detector {detector.name}: mixed bounded/unbounded locators")
            if bounded == {False}:
                unbounded.add(index)
        self._adjusted = frozenset(unbounded) | self._presence  # starts to shift, or drop

    def __call__(self, text: str) -> Iterable[tuple[int, list[int] | None]]:
        hits: dict[int, list[int]] = {}
        # The scanned bytes start with a boundary character ("\n", outside every
        # locator's boundary class), so a bounded locator match always starts at the
        # boundary character just before its candidate, never at "^": the start it
        # reports in the shifted bytes is the candidate's index in ``text``. An
        # unbounded match starts at its candidate: one less in ``text``.
        self._db.scan(
            b"\n" + text.encode("latin-1", "replace"), match_event_handler=_on_match, context=hits
        )
        for index in hits.keys() & self._adjusted:  # usually none
            if index in self._presence:
                hits[index] = None  # type: ignore[assignment]
            else:
                hits[index] = [start - 1 for start in hits[index]]
        return hits.items()  # Detector.find sorts the starts


class _ReLocator:
    """The same locators searched with Python ``re`` to pick the detectors to run (and the
    view triggers, as index ``len(detectors)``)."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._checks = [
            (index, tuple(re.compile(p, re.ASCII) for p in d.locators))
            for index, d in enumerate(detectors)
        ]
        self._checks.append((len(detectors), tuple(re.compile(t) for t in TRIGGERS)))

    def __call__(self, text: str) -> list[tuple[int, list[int] | None]]:
        return [
            (index, None)
            for index, patterns in self._checks
            if any(pattern.search(text) for pattern in patterns)
        ]


class OfflineEngine:
    """Redacts the info types of ``transforms.pii.engine.INFO_TYPES`` without any service.

    Args:
        prefilter: how candidates are located: ``"auto"`` (hyperscan if importable, else
            ``"re"``), ``"hyperscan"``, ``"re"``, or ``"none"`` (every pattern over every
            text: the slow reference the others must match).
        phone_regions: regions national-format phone numbers are validated against.
        info_types: the info types to redact; default all.

    Raises:
        ValueError: an unknown prefilter, region or info type; ``"hyperscan"`` when it
            cannot be imported.
    """

    name = "offline"

    def __init__(
        self,
        *,
        prefilter: str = "auto",
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
        info_types: Iterable[str] | None = None,
    ) -> None:
        if prefilter not in PREFILTERS:
            raise ValueError(f"prefilter must be one of {PREFILTERS}, got {prefilter!r}")
        selected = tuple(INFO_TYPES if info_types is None else info_types)
        unknown = sorted(set(selected) - set(INFO_TYPES))
        if unknown or not selected:
            raise ValueError(f"unknown or empty info types {unknown}; valid: {INFO_TYPES}")
        if prefilter == "auto":
            prefilter = "hyperscan" if _hyperscan is not None else "re"
        if prefilter == "hyperscan" and _hyperscan is None:
            raise ValueError("prefilter 'hyperscan' requested but hyperscan is not importable")
        self._options: dict[str, Any] = {
            "prefilter": prefilter,
            "phone_regions": tuple(phone_regions),
            "info_types": selected,
        }
        self.prefilter = prefilter
        self._detectors = tuple(
            d for d in build_detectors(phone_regions) if d.info_type in selected
        )
        self._finders = tuple(d.find for d in self._detectors)  # bound once, not per text
        self._trigger = len(self._detectors)  # the index the view triggers report under
        self._placeholders = {info_type: f"[{info_type}]" for info_type in INFO_TYPES}
        self._locate: _Locate
        self._needs_view: Callable[[str], bool] = needs_view
        if prefilter == "hyperscan":
            self._locate = _HyperscanLocator(self._detectors)
            self._needs_view = ViewCheck(_hyperscan)
        elif prefilter == "re":
            self._locate = _ReLocator(self._detectors)
        else:
            every: list[tuple[int, list[int] | None]] = [
                (index, None) for index in range(len(self._detectors))
            ]
            triggers = [re.compile(t) for t in TRIGGERS]
            trigger = [(len(self._detectors), None)]
            self._locate = lambda text: (
                every + trigger if any(t.search(text) for t in triggers) else every
            )

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._options)  # the hyperscan database cannot be pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def redact(self, texts: Sequence[str]) -> list[Redaction]:
        """Returns one ``Redaction`` per text, same order and length as ``texts``.

        Fails closed: any error, expected or not, becomes a ``RedactionError`` for the whole
        batch, so that no text leaves unredacted and the caller can dead-letter the event.

        Raises:
            RedactionError: an element is not a ``str`` or a detector failed; the message
                names the element index and the exception type only, never the text.
        """
        results = []
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise RedactionError(f"element {index}: expected str, got {type(text).__name__}")
            try:
                results.append(self.redact_text(text))
            except Exception as exc:
                # Exceptions from validators may quote the candidate (ipaddress does):
                # keep only the type, and drop the chained cause with `from None`.
                raise RedactionError(
                    f"element {index}: {type(exc).__name__} in offline engine"
                ) from None
        return results

    def find(self, text: str) -> list[Finding]:
        """The resolved findings in ``text`` and its normalised view, sorted by start (for
        scoring and tests).

        Exceptions propagate unwrapped; ``redact`` is the fail-closed entry point.
        """
        if not text:
            return []
        findings, triggered = self._find(text)
        if triggered or self._needs_view(text):
            view = view_of(text, encoded=triggered)
            if view is not None:
                span = view.original_span
                findings += [
                    Finding(*span(f.start, f.end), f.info_type, f.priority)
                    for f in self._find(view.text)[0]
                ]
        return resolve_overlaps(findings) if len(findings) > 1 else findings

    def _find(self, text: str) -> tuple[list[Finding], bool]:
        """The findings of every detector in ``text``, unresolved, and whether a view
        trigger matched."""
        findings: list[Finding] = []
        finders = self._finders
        triggered = False
        for index, starts in self._locate(text):
            if index == self._trigger:
                triggered = True
            else:
                findings += finders[index](text, starts)
        return findings, triggered

    def redact_text(self, text: str) -> Redaction:
        """Redacts one text; exceptions propagate unwrapped (``redact`` wraps them)."""
        findings = self.find(text)
        if not findings:
            return _redaction((text, {}))
        parts: list[str] = []
        counts: dict[str, int] = {}
        position = 0
        for finding in findings:
            parts.append(text[position : finding.start])
            parts.append(self._placeholders[finding.info_type])
            counts[finding.info_type] = counts.get(finding.info_type, 0) + 1
            position = finding.end
        parts.append(text[position:])
        return _redaction(("".join(parts), counts))
