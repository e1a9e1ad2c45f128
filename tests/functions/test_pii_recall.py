"""Recall and precision of the offline engine on a fixed-seed multi-locale Faker corpus.

Corpus: 2,500 texts with PII (1-3 values each) and 500 without, from 13 locales, seed
20261127. Thresholds, against what this corpus measured (Faker<41, phonenumbers 9.0.x):

* every type but PHONE_NUMBER: recall 1.000 on 108-838 values per type. The floor 0.99
  tolerates a stray odd Faker value; losing any one format of a type fails it.
* PHONE_NUMBER: recall 0.987 (741/751); per locale 0.947 (it_IT) to 1.000. The misses are
  documented decisions: bare digit runs without a phone word or trunk 0 (``6492483663`` in
  a signature) and groupings that fit no national format without a phone word (Faker's
  ``04514 75247``). The floor 0.97 fails if one locale's numbers are lost
  (1/13 = 7.7% of them), and so does the per-locale floor 0.90.
* hard negatives: none may be redacted (0 of 13,990 measured); precision >= 0.99 (1.000
  measured: no finding without a ground-truth value under it).
"""

import collections
import os
import random
import subprocess
import sys

import pytest

from pipelines.local.texts import (
    EMPTY_SCORE,
    LOCALES,
    NEGATIVE_KINDS,
    make_event,
    make_text,
    new_faker,
    score,
)
from transforms.pii.engine import INFO_TYPES, PHONE_NUMBER
from transforms.pii.offline import OfflineEngine

SEED = 20261127
RECALL_FLOOR = dict.fromkeys(INFO_TYPES, 0.99) | {PHONE_NUMBER: 0.97}
PHONE_RECALL_PER_LOCALE_FLOOR = 0.90


@pytest.fixture(scope="module")
def corpus():
    rng, fake = random.Random(SEED), new_faker()
    with_pii = [make_text(rng, fake, pii_share=1.0, target_chars=400) for _ in range(2500)]
    without = [make_text(rng, fake, pii_share=0.0) for _ in range(500)]
    return with_pii + without


@pytest.fixture(scope="module")
def scored(corpus):
    engine = OfflineEngine()
    return [
        (sample, score(sample, [(f.start, f.end, f.info_type) for f in engine.find(sample.text)]))
        for sample in corpus
    ]


@pytest.fixture(scope="module")
def total(scored):
    result = EMPTY_SCORE
    for _, sample_score in scored:
        result = result + sample_score
    return result


@pytest.mark.parametrize("info_type", INFO_TYPES)
def test_recall_per_info_type(total, info_type):
    n = total.found.get(info_type, 0) + total.missed.get(info_type, 0)
    assert n >= 100, f"too few {info_type} values in the corpus to measure recall"
    assert total.recall(info_type) >= RECALL_FLOOR[info_type]


def test_phone_recall_per_locale(scored):
    found, seen = collections.Counter(), collections.Counter()
    for sample, sample_score in scored:
        phones = sum(1 for p in sample.pii if p.label == PHONE_NUMBER)
        seen[sample.locale] += phones
        found[sample.locale] += sample_score.found.get(PHONE_NUMBER, 0)
    assert set(seen) == set(LOCALES)
    low = {loc: found[loc] / seen[loc] for loc in seen if seen[loc]}
    assert min(low.values()) >= PHONE_RECALL_PER_LOCALE_FLOOR, low


def test_no_hard_negative_is_redacted(total):
    assert total.negatives_hit == {}


def test_precision(total):
    assert total.precision() >= 0.99


def test_redacted_text_contains_no_found_value(corpus):
    # Counts and placeholders only: a value the engine found must be gone from the output.
    engine = OfflineEngine()
    samples = corpus[:500]
    for sample, redaction in zip(samples, engine.redact([s.text for s in samples]), strict=True):
        findings = engine.find(sample.text)
        assert sum(redaction.counts.values()) == len(findings)
        for value in sample.pii:
            if any(f.start <= value.start and f.end >= value.end for f in findings):
                assert value.value not in redaction.text


# ------------------------------------------------------------- the generator itself


def test_corpus_covers_every_type_kind_and_locale(corpus):
    assert {p.label for s in corpus for p in s.pii} == set(INFO_TYPES)
    assert {n.label for s in corpus for n in s.negatives} == set(NEGATIVE_KINDS)
    assert {s.locale for s in corpus} == set(LOCALES)


def test_spans_point_at_their_values(corpus):
    for sample in corpus[:500] + corpus[-100:]:
        for span in sample.pii + sample.negatives:
            assert sample.text[span.start : span.end] == span.value


def test_generator_is_deterministic():
    def texts(seed):
        rng, fake = random.Random(seed), new_faker()
        return [make_event(rng, fake, pii_share=0.5) for _ in range(20)]

    assert texts(7) == texts(7)
    assert texts(7) != texts(8)


def test_pii_share_and_length():
    rng, fake = random.Random(3), new_faker()
    assert all(not make_text(rng, fake, pii_share=0.0).pii for _ in range(50))
    assert all(make_text(rng, fake, pii_share=1.0).pii for _ in range(50))
    lengths = [len(make_text(rng, fake, pii_share=0.2).text) for _ in range(50)]
    assert min(lengths) >= 1000 and sum(lengths) / len(lengths) < 1400
    events = [make_event(rng, fake, pii_share=0.2) for _ in range(400)]
    share = sum(bool(e.prompt.pii or e.response.pii) for e in events) / len(events)
    assert 0.14 <= share <= 0.26


def test_generator_rejects_fakers_it_cannot_use():
    with pytest.raises(ValueError, match="en_US"):
        make_text(random.Random(1), new_faker(["de_DE"]), pii_share=1.0)


_DIGEST = """
import hashlib, random
from pipelines.local.texts import make_event, new_faker
rng, fake = random.Random(5), new_faker()
events = [make_event(rng, fake, pii_share=0.5) for _ in range(40)]
print(hashlib.sha256(repr(events).encode()).hexdigest())
"""


def test_generator_is_deterministic_across_processes():
    # Faker draws that depend on set order would change with PYTHONHASHSEED.
    def digest(hash_seed):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", _DIGEST], env=env, capture_output=True, text=True, check=True
        )
        return run.stdout.strip()

    assert digest("1") == digest("2")
