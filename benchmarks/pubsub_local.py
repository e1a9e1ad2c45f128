"""Pub/Sub path benchmark: events/s from the Pub/Sub emulator into the embedded sinks.

    python benchmarks/pubsub_local.py                       # 30,000 events of ~1.4 kB
    python benchmarks/pubsub_local.py --events 60000 --text_chars 1000

Needs the local stack's Pub/Sub emulator (``make stack-up``, then export what it prints). It
creates a topic and a subscription of its own, publishes ``--events`` gateway events
(``pipelines.local.loadgen``'s generator; ``--text_chars`` per prompt and response) before the
pipeline starts, so the pipeline works off a backlog, then runs ``python -m
pipelines.streaming --source pubsub`` on the embedded default as a subprocess (the local
Pub/Sub source: streaming pull, acknowledged once committed) and watches ``audit.sqlite``
until every message has its audit record. Then it sends Ctrl-C (the run drains) and reads the
run summary.

Figures: end-to-end events/s from the first audit commit to the last (start-up excluded; the
audit log commits every 5 s, the archive every ``--file_flush_s``), the same over the wall
time from launch, peak RSS, and the summary's counts and acknowledgements. The default profile
publishes no duplicate copies (``--duplicate_share 0``), so that every message has an audit
record of its own to wait for; other shares as the load generator's. Flags this script does
not know are passed on to the pipeline.

Before the run it prints the machine check of ``benchmarks/pipeline.py``: this is a shared
machine whose speed moves with its host's load, so run it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.pipeline import _machine_check, _redaction_build, _tree_rss_kb  # noqa: E402

TARGET_EVENTS_PER_S = 1_000
_POLL_S = 0.5


def _publish(topic: str, events: int, text_chars: int, duplicate_share: float) -> float:
    """Publishes ``events`` generated events to ``topic``; returns the seconds it took."""
    from pipelines.local.loadgen import EventGenerator, LoadProfile
    from pipelines.local.publish import publish_messages, publisher_client

    generator = EventGenerator(
        7, LoadProfile(duplicate_share=duplicate_share, text_chars=text_chars)
    )
    publisher = publisher_client()
    started = time.monotonic()
    for start in range(0, events, 5_000):
        batch = generator.batch(min(5_000, events - start), dt.datetime.now(dt.UTC))
        for future in publish_messages(publisher, topic, [g.payload for g in batch]):
            future.result(timeout=60)
    return time.monotonic() - started


def _audited(db_path: Path) -> int:
    """Inputs with an audit record (0 before the table exists)."""
    if not db_path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as con:
            return con.execute("SELECT count(DISTINCT input_id) FROM audit_log").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--text_chars", type=int, default=440)
    parser.add_argument("--duplicate_share", type=float, default=0.0)
    parser.add_argument("--file_flush_s", type=int, default=5)
    parser.add_argument("--timeout_s", type=float, default=600.0)
    args, extra = parser.parse_known_args()
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        raise SystemExit("PUBSUB_EMULATOR_HOST is not set: `make stack-up` and export its output")
    from google.cloud import pubsub_v1

    env = dict(os.environ)
    env.setdefault("GENAI_PSEUDONYM_KEY", "benchmark-only-pseudonym-key-0123456789")
    project = env.get("GOOGLE_CLOUD_PROJECT", "local-project")
    suffix = uuid.uuid4().hex[:8]
    topic = f"projects/{project}/topics/bench-{suffix}"
    subscription = f"projects/{project}/subscriptions/bench-{suffix}"
    subscriber = pubsub_v1.SubscriberClient()
    pubsub_v1.PublisherClient().create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(_redaction_build())
    _, check = _machine_check()
    print(check)
    seconds = _publish(topic, args.events, args.text_chars, args.duplicate_share)
    print(f"published {args.events:,} messages in {seconds:.1f} s (before the pipeline starts)")

    with tempfile.TemporaryDirectory(prefix="genai-bench-pubsub-") as tmp:
        root = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "pipelines.streaming",
            "--source",
            "pubsub",
            "--subscription",
            subscription,
            "--output_root",
            str(root),
            "--file_flush_s",
            str(args.file_flush_s),
            *extra,
        ]
        print(f"command: {' '.join(cmd[1:])}")
        launched = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
        reader.start()
        first = last = None
        first_count = 0
        peak_kb = 0
        while time.monotonic() - launched < args.timeout_s and proc.poll() is None:
            time.sleep(_POLL_S)
            peak_kb = max(peak_kb, _tree_rss_kb(proc.pid))
            count = _audited(root / "audit.sqlite")
            if count and first is None:
                first, first_count = time.monotonic(), count
            if count >= args.events:
                last = time.monotonic()
                break
        audited = _audited(root / "audit.sqlite")
        proc.send_signal(signal.SIGINT)  # drain: flush and acknowledge, print the summary
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.join(timeout=10)
    summary = "".join(output)
    subscriber.delete_subscription(subscription=subscription)
    pubsub_v1.PublisherClient().delete_topic(topic=topic)

    if first is None or last is None:
        print(f"NOT DONE: {audited:,} of {args.events:,} inputs audited")
        print(summary[-3000:])
        return 1
    steady = (args.events - first_count) / max(last - first, 1e-9)
    overall = args.events / (last - launched)
    acked = re.search(r"pubsub: ([\d,]+) messages read, ([\d,]+) acknowledged", summary)
    balanced = "yes" if "dead-lettered: OK" in summary else "NO"
    print(
        f"end to end  {steady:,.0f} events/s from the first audit commit to the last "
        f"({args.events - first_count:,} events in {last - first:.1f} s; target "
        f">= {TARGET_EVENTS_PER_S:,}: {'met' if steady >= TARGET_EVENTS_PER_S else 'NOT met'})"
    )
    print(
        f"with start  {overall:,.0f} events/s over {last - launched:.1f} s from launch to the "
        f"last audit commit"
    )
    print(f"peak RSS    {peak_kb / 1024:,.0f} MB")
    if acked:
        read, acknowledged = acked.groups()
        print(f"pubsub      {read} read, {acknowledged} acknowledged; counts balanced {balanced}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
