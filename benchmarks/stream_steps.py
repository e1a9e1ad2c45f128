"""CPU per step of a local streaming run: where the local runner's time goes.

    python benchmarks/stream_steps.py --source synthetic --rate 1000 --duration_s 60 \\
        --output_root /tmp/stream-steps --allowed_lateness_s 120 --dedupe_ttl_s 180

Runs ``pipelines.streaming`` in this process with its arguments, timing the thread CPU of every
bundle of every step (the DirectRunner's ``TransformExecutor.attempt_call``, which also
commits the bundle), and prints the process's CPU, then the 40 costliest steps with their
share and bundle count. The CPU per event is the process CPU over the events read. A profiling
aid, run alone on the machine like every benchmark; it checks no target.
"""

from __future__ import annotations

import collections
import os
import sys
import time

from apache_beam.runners.direct import executor

_CPU: collections.Counter = collections.Counter()
_BUNDLES: collections.Counter = collections.Counter()


def _timed(original):
    def attempt_call(self, *args, **kwargs):
        started = time.thread_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            label = self._applied_ptransform.full_label
            _CPU[label] += time.thread_time() - started
            _BUNDLES[label] += 1

    return attempt_call


def main(argv: list[str]) -> int:
    from pipelines import streaming

    os.environ.setdefault("GENAI_PSEUDONYM_KEY", "benchmark-only-pseudonym-key-0123456789")
    original = executor.TransformExecutor.attempt_call
    executor.TransformExecutor.attempt_call = _timed(original)
    started = time.process_time()
    try:
        code = streaming.run(argv)
    finally:
        executor.TransformExecutor.attempt_call = original
    total = time.process_time() - started
    print(f"process CPU {total:.1f} s, of which in steps {sum(_CPU.values()):.1f} s")
    for label, cpu in _CPU.most_common(40):
        print(f"{cpu:8.2f} s {100 * cpu / total:5.1f}% {_BUNDLES[label]:7d} bundles  {label}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
