"""Instructions per event of the redaction engine, counted by valgrind (load-independent).

On a shared machine the timings of ``benchmarks/redaction.py`` move with the host's load; the
number of instructions the engine executes does not. This script counts them with
``valgrind --tool=callgrind`` (not a project dependency: ``apt-get install valgrind``): it
redacts the same corpus as ``benchmarks/redaction.py`` (its first ``--events`` events) in a child
process once with ``--passes 0`` and once with ``--passes 2``, and reports the difference per
event, so start-up, corpus loading and warm-up cancel out. Compare two builds (or commits) with
it; it does not check a target.

    python benchmarks/redaction_instructions.py [--events 1000] [--seed 1]
"""

from __future__ import annotations

import argparse
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import transforms.pii.detectors


def _count(corpus: Path, passes: int) -> int:
    """Instructions callgrind counts for one child run over ``corpus``."""
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/callgrind.out",
                sys.executable,
                __file__,
                "--child",
                str(corpus),
                str(passes),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    collected = re.search(r"Collected : (\d+)", run.stderr)
    if collected is None:
        raise RuntimeError("valgrind printed no instruction count")
    return int(collected.group(1))


def _child(corpus: Path, passes: int) -> None:
    from transforms.pii.offline import OfflineEngine

    batches = pickle.loads(corpus.read_bytes())
    engine = OfflineEngine()
    for batch in batches:  # warm-up: lazily built metadata and caches
        engine.redact(batch)
    for _ in range(passes):
        for batch in batches:
            engine.redact(batch)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pii-share", type=float, default=0.2)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    from pipelines.local.texts import make_event, new_faker

    rng, fake = random.Random(args.seed), new_faker()
    events = [make_event(rng, fake, pii_share=args.pii_share) for _ in range(args.events)]
    compiled = not transforms.pii.detectors.__file__.endswith(".py")
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.pickle"
        corpus.write_bytes(pickle.dumps([[e.prompt.text, e.response.text] for e in events]))
        base, measured = _count(corpus, 0), _count(corpus, 2)
    print(f"engine build: {'compiled (Cython)' if compiled else 'plain Python'}")
    print(f"corpus: {args.events} events of benchmarks/redaction.py, seed {args.seed}")
    print(f"instructions per event: {(measured - base) / (2 * args.events):,.0f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
