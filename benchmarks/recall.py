"""Recall of the offline redaction engine on data it was not tuned to; the table in docs/privacy.md.

Three measures (``tests/support/recall.py``), each with its target:

* the held-out corpus (``tests/support/recall_corpus.py``: Faker values in 16 locales, not
  filtered by validity nor reformatted, and generated secrets, in 14 sentence shapes of its own):
  recall per info type >= 0.995 (a value counts only when one finding of its type covers it);
* the adversarial corpus (``tests/support/adversarial.py``, hand-written, one family per finding
  of issue 20): every case of every family (1.0);
* the hard negatives of the load generator's corpus (``pipelines/local/texts.py``: order ids,
  versions, dates, amounts, UUIDs ... next to PII): none redacted.

Prints the tables (Markdown), the first misses of each group, and PASS/FAIL; exits 1 if a target
fails. The recall tests (``make test``) run the same measures on a smaller held-out corpus.

    python benchmarks/recall.py [--samples 20000] [--seed 20261207] [--negative-texts 3000]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

# The corpora live with the tests (test tooling, not shipped code).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.support.recall import (
    HELD_OUT_SEED,
    adversarial_coverage,
    hard_negative_score,
    held_out_coverage,
)
from tests.support.recall_corpus import LOCALES, TEMPLATES, make_corpus
from transforms.pii.offline import OfflineEngine

RECALL_TARGET = 0.995


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000, help="held-out values")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--negative-texts", type=int, default=3000)
    args = parser.parse_args(argv)
    engine = OfflineEngine()
    held_out = held_out_coverage(engine, make_corpus(args.seed, args.samples))
    adversarial = adversarial_coverage(engine)
    negatives, negatives_total = hard_negative_score(engine, args.negative_texts)
    failed = False

    print(
        f"Held-out corpus: {args.samples:,} values, seed {args.seed}, {len(LOCALES)} Faker "
        f"locales, {len(TEMPLATES) + 2} sentence shapes\n"
    )
    print("| Info type | Values | Found | Recall |\n|---|---:|---:|---:|")
    for info_type in sorted(held_out.total):
        rate = held_out.rate(info_type)
        failed |= rate < RECALL_TARGET
        print(
            f"| `{info_type}` | {held_out.total[info_type]:,} | "
            f"{held_out.found.get(info_type, 0):,} | {rate:.4f} |"
        )
    print(f"\nFindings outside the planted values: {held_out.outside_truth}\n")

    print("Adversarial corpus (hand-written)\n")
    print("| Family | Cases | Passed | Rate |\n|---|---:|---:|---:|")
    for family in adversarial.total:
        rate = adversarial.rate(family)
        failed |= rate < 1.0
        print(
            f"| {family} | {adversarial.total[family]} | {adversarial.found.get(family, 0)} "
            f"| {rate:.3f} |"
        )

    hit = sum(negatives.negatives_hit.values())
    failed |= hit > 0
    print(
        f"\nHard negatives (pipelines/local/texts.py, {args.negative_texts:,} texts): "
        f"{hit} of {negatives_total:,} redacted"
        + (f" {dict(negatives.negatives_hit)}" if hit else "")
    )
    for title, coverage in (("held-out", held_out), ("adversarial", adversarial)):
        for group, texts in coverage.misses.items():
            for text in texts:
                print(f"\nmiss ({title}, {group}): {text!r}"[:400])
    print(
        f"\n{'FAIL' if failed else 'PASS'}: recall >= {RECALL_TARGET} per info type, "
        "every adversarial case, no hard negative redacted"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
