"""Measuring the offline engine: recall on the held-out and adversarial corpora, hard negatives.

One implementation for the recall tests (``tests/functions/test_pii_recall.py``) and the
command that prints the table in ``docs/privacy.md`` (``benchmarks/recall.py``).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pipelines.local.texts import EMPTY_SCORE, Score, make_text
from pipelines.local.texts import new_faker as texts_faker
from pipelines.local.texts import score as texts_score
from tests.support import adversarial, recall_corpus
from transforms.pii.detectors import Finding

__all__ = [
    "HARD_NEGATIVE_SEED",
    "HELD_OUT_SEED",
    "Coverage",
    "adversarial_coverage",
    "covered",
    "hard_negative_score",
    "held_out_coverage",
]

HELD_OUT_SEED = 20261207
HARD_NEGATIVE_SEED = 20261127  # the seed the texts.py corpus has always been measured with


class Coverage(NamedTuple):
    """Values found, per group (an info type, an adversarial family), and the misses."""

    found: dict[str, int]
    total: dict[str, int]
    misses: dict[str, list[str]]  # group -> the texts around the first misses (for a report)
    outside_truth: int = 0  # findings overlapping no planted value (held-out corpus only)

    def rate(self, group: str) -> float:
        return self.found.get(group, 0) / self.total[group] if self.total.get(group) else 1.0


def covered(findings: Sequence[Finding], start: int, end: int, info_type: str | None) -> bool:
    """Whether ``[start, end)`` is covered by findings: one of ``info_type`` covering it all,
    or (``info_type`` None) any findings covering every character of it."""
    if info_type is not None:
        return any(f.info_type == info_type and f.start <= start and f.end >= end for f in findings)
    position = start
    for f in sorted(findings):
        if f.start <= position < f.end:
            position = f.end
        if position >= end:
            return True
    return position >= end


def held_out_coverage(engine, samples: Iterable[recall_corpus.Sample]) -> Coverage:
    """Recall per info type on the held-out corpus: a value counts as found only when one
    finding of its info type covers all of it (a partly redacted value leaks)."""
    found, total = collections.Counter(), collections.Counter()
    misses: dict[str, list[str]] = collections.defaultdict(list)
    outside = 0
    for sample in samples:
        findings = engine.find(sample.text)
        for truth in sample.truths:
            total[truth.info_type] += 1
            if covered(findings, truth.start, truth.end, truth.info_type):
                found[truth.info_type] += 1
            elif len(misses[truth.info_type]) < 5:
                misses[truth.info_type].append(f"[{sample.template}/{sample.locale}] {sample.text}")
        outside += sum(
            not any(f.start < t.end and t.start < f.end for t in sample.truths) for f in findings
        )
    return Coverage(dict(found), dict(total), dict(misses), outside)


def adversarial_coverage(engine) -> Coverage:
    """Cases passed per family of the adversarial corpus (every planted value covered)."""
    found, total = collections.Counter(), collections.Counter()
    misses: dict[str, list[str]] = collections.defaultdict(list)
    for case in adversarial.cases():
        findings = engine.find(case.text)
        total[case.family] += 1
        ok = True
        for value in case.values:
            start = case.text.index(value)
            ok = ok and covered(findings, start, start + len(value), None)
        if ok:
            found[case.family] += 1
        else:
            misses[case.family].append(case.text)
    return Coverage(dict(found), dict(total), dict(misses))


def hard_negative_score(engine, texts: int = 3000) -> tuple[Score, int]:
    """The texts.py corpus the engine has always been measured on (5/6 with PII, 1/6
    without): its hard negatives (order ids, versions, dates, amounts ...) must stay. Returns
    the score and the number of hard negatives."""
    rng, fake = random.Random(HARD_NEGATIVE_SEED), texts_faker()
    with_pii = [
        make_text(rng, fake, pii_share=1.0, target_chars=400) for _ in range(texts * 5 // 6)
    ]
    without = [make_text(rng, fake, pii_share=0.0) for _ in range(texts // 6)]
    total, negatives = EMPTY_SCORE, 0
    for sample in with_pii + without:
        found = [(f.start, f.end, f.info_type) for f in engine.find(sample.text)]
        total = total + texts_score(sample, found)
        negatives += len(sample.negatives)
    return total, negatives
