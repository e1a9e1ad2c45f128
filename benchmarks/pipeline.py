"""Pipeline benchmark: every performance target in one run, with the machine check beside it.

    python benchmarks/pipeline.py     # the whole run (~35 min): docs/performance.md's figures
    python benchmarks/pipeline.py --events 200000 --skip_streaming --skip_pubsub
    python benchmarks/pipeline.py --skip_backfill --skip_pubsub --stream_s 600 --burst_factor 1

Flags this script does not know are passed on to the pipeline(s) it runs (any core option).

Backfill (``--events``, default 200,000 then 1,000,000): generates the events
(``pipelines.local.loadgen``; ``--text_chars`` per prompt and response, default 440: ~1.4 kB
per event) to a JSON-lines file, runs ``python -m pipelines.backfill`` on it as a subprocess
with ``--workers`` worker processes, and prints events/s (events read over the run's wall time,
start-up included) and its ratio to the machine check's texts/s printed just before (target
>= 2.0), the CPU time per event of all its processes, and the peak RSS (every process, sampled
every second) of each size, so that memory is seen flat in the input size. Then
``benchmarks/functions.py`` times the plain functions of the backfill's steps on the first
50,000 of the same events with no runner: the floor under the CPU per event (moonshot: the
pipeline within 1.5x of it).

Bursts (``--rate`` 1,000 events/s with ``--burst_factor`` 5 for ``--burst_s`` 30 s every
``--burst_every_s`` 300 s, for ``--stream_s`` 1,200 s): ``python -m pipelines.streaming`` on the
synthetic source with that profile. It prints the events offered and read and the counts
identity (nothing lost), the freshness p50/p99 from the run totals (per event, ingestion to the
commit of the warehouse row counting it: ADR 0010; target p99 < 120 s), the p99 per minute of
event time from ``freshness_minute`` (a backlog a burst left shows as minutes whose p99 stays
high), whether the backlog drained (the minutes after the last burst are back to the p99 of the
minutes before the first), and RSS over time (flat: the second half's mean within 15% of the
first half's, after the first two minutes). The run keeps the dedupe and window state
``--stream_state_s`` (default 180 s: ``--allowed_lateness_s 120 --dedupe_ttl_s 180``) rather
than the defaults' hour, so that the state reaches its bound within the run and a leak shows;
with the defaults memory grows for an hour, to the bound ``transforms/dedupe.py`` estimates.

The Pub/Sub path: ``benchmarks/pubsub_local.py`` (events/s from the emulator into the embedded
sinks, acknowledged once committed; target >= 1,000), when ``PUBSUB_EMULATOR_HOST`` is set
(``make stack-up``); otherwise it says so.

Each part first prints the machine check of ``benchmarks/redaction.py`` (a plain ``re``
alternation's texts/s on one core; ~7,400 on the machine the targets were set on): this is a
shared virtual machine whose speed moves with the host's load, so every target is a ratio to
the check of the same run, and the benchmark must run alone on the machine. The last lines
are a summary of every target. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_CALIBRATION = 7_400  # texts/s of the machine check where the targets were set
FUNCTIONS_EVENTS = 50_000  # events benchmarks/functions.py times after the backfill


def _machine_check() -> tuple[float, str]:
    """The redaction benchmark's machine check, run in a child process on one core: this
    machine's speed as a share of the reference machine's, and a line saying so."""
    code = (
        "import random; from benchmarks.redaction import calibration_texts_per_s; "
        "from pipelines.local.texts import make_event, new_faker; "
        "rng, fake = random.Random(1), new_faker(); "
        "events = [make_event(rng, fake, pii_share=0.2) for _ in range(1000)]; "
        "print(round(calibration_texts_per_s(events, 3)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    speed = int(out)
    share = speed / REFERENCE_CALIBRATION
    return share, (
        f"machine check {speed:,} texts/s ({share:.0%} of the "
        f"{REFERENCE_CALIBRATION:,} where the targets were set)"
    )


def _redaction_build() -> str:
    """Which redaction modules the pipelines run (asked in a child process, as they run):
    the compiled build, or the sources when there is none (a clone that has not run ``make``;
    ~12% more CPU per event)."""
    code = "import transforms.pii as pii; print(pii._compiled or '')"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    if out:
        return f"redaction modules: compiled build ({out})"
    return "redaction modules: plain Python (no current compiled build; make builds it)"


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (kB): the runner's worker
    processes are grandchildren (started through a shell), so children alone miss them."""
    try:
        table = subprocess.run(
            ["ps", "-eo", "pid=,ppid=,rss="], capture_output=True, text=True
        ).stdout.split("\n")
    except OSError:
        return 0
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for line in table:
        fields = line.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            child, parent, kb = map(int, fields)
            children.setdefault(parent, []).append(child)
            rss[child] = kb
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, ()))
    return total


def _run(cmd: list[str], env: dict) -> tuple[str, float, float, list[tuple[float, int]]]:
    """Runs ``cmd``; returns (stdout, wall s, CPU s of it and its children, [(t, rss kB)]
    samples every second)."""
    samples: list[tuple[float, int]] = []
    before = os.times()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample():
        while not done.wait(1.0):
            samples.append((time.monotonic() - started, _tree_rss_kb(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    wall = time.monotonic() - started
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return out, wall, cpu, samples


def _figure(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _print_counts(out: str) -> bool:
    """The run summary's counts identity: read = written + duplicates + conflicts +
    dead-lettered."""
    figures = {
        name: _figure(label + r"\s+(\d+)", out) or "?"
        for name, label in (
            ("read", "events read"),
            ("written", "written"),
            ("duplicates", "duplicates"),
            ("conflicts", "conflicts"),
            ("dead-lettered", "dead-lettered"),
        )
    }
    parts = ", ".join(f"{name} {n}" for name, n in figures.items())
    balanced = "dead-lettered: OK" in out
    print(f"counts      {parts}; balanced {'yes' if balanced else 'NO'}")
    return balanced


BACKFILL_RATIO_TARGET = 2.0  # backfill events/s per machine-check text/s
FLOOR_RATIO_MOONSHOT = 1.5  # pipeline CPU per event over the plain functions'
FRESHNESS_TARGET_S = 120.0
PUBSUB_TARGET = 1_000


def _generate(events: int, text_chars: int, env: dict, path: Path) -> float:
    """Writes ``events`` generated events to ``path``; returns the bytes per event."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.local.loadgen",
            "--events",
            str(events),
            "--text_chars",
            str(text_chars),
            "--output",
            str(path),
        ],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return path.stat().st_size / max(events, 1)


def bench_backfill(
    events: int, workers: int, text_chars: int, env: dict, workdir: Path, extra: list[str]
) -> dict:
    """One backfill of ``events`` generated events; prints and returns its figures."""
    source = workdir / f"events-{events}.jsonl"
    event_bytes = _generate(events, text_chars, env, source)
    cmd = [
        sys.executable,
        "-m",
        "pipelines.backfill",
        "--input",
        str(source),
        "--output_root",
        str(workdir / f"backfill-{events}"),
        *extra,
    ]
    if workers > 1:
        cmd += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    share, check = _machine_check()
    speed = share * REFERENCE_CALIBRATION  # texts/s
    out, wall, cpu, samples = _run(cmd, env)
    source.unlink()
    read = int(_figure(r"events read\s+(\d+)", out) or 0)
    peak = max((rss for _, rss in samples), default=0) / 1024
    rate = read / wall
    print(
        f"\n## backfill: {events:,} generated events of {event_bytes:,.0f} bytes "
        f"(texts of ~{text_chars} characters), {workers} worker process(es)"
    )
    print(check)
    print(f"command: {' '.join(cmd[1:])}")
    print(f"events read {read:,}, wall {wall:.1f} s (start-up included)")
    print(
        f"throughput  {rate:,.0f} events/s = {rate / speed:.2f}x the machine check "
        f"(target >= {BACKFILL_RATIO_TARGET}x)"
    )
    print(f"CPU         {cpu / max(read, 1) * 1e6:,.0f} µs per event, all processes")
    print(f"peak RSS    {peak:,.0f} MB (sampled every second, all processes)")
    balanced = _print_counts(out)
    return {
        "events": read,
        "rate": rate,
        "ratio": rate / speed,
        "cpu_us": cpu / max(read, 1) * 1e6,
        "peak_mb": peak,
        "balanced": balanced,
        "source_bytes": event_bytes,
    }


def bench_floor(events: int, text_chars: int, env: dict, workdir: Path) -> float:
    """The plain functions' CPU µs per event on ``events`` generated events (no runner)."""
    source = workdir / "floor.jsonl"
    _generate(events, text_chars, env, source)
    floor = subprocess.run(
        [sys.executable, "benchmarks/functions.py", "--input", str(source)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    source.unlink()
    print(f"\n## the floor: the backfill's plain functions, {events:,} events")
    print(floor.stdout.rstrip())
    return float(_figure(r"total ([\d,.]+) µs per event", floor.stdout).replace(",", ""))


def _minute_p99(db: Path, started: float) -> dict[int, tuple[int, float]]:
    """``freshness_minute`` per event-time minute since ``started`` (epoch s; minute 0 holds
    it): {minute: (events, p99 s)}. Minutes before it (late events) are left out."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT epoch(window_start), latency_s, sum(events) FROM freshness_minute "
            "GROUP BY ALL ORDER BY 1, 2"
        ).fetchall()
    first = int(started // 60) * 60
    by_minute: dict[int, list[tuple[float, int]]] = {}
    for start, latency, n in rows:
        if start >= first:
            by_minute.setdefault(int((start - first) // 60), []).append((latency, int(n)))
    out = {}
    for minute, buckets in sorted(by_minute.items()):
        total = sum(n for _, n in buckets)
        running = 0
        for latency, n in buckets:
            running += n
            if running >= 0.99 * total:
                out[minute] = (total, float(latency))
                break
    return out


def _drained(args, minutes: dict[int, tuple[int, float]]) -> tuple[bool, float, float]:
    """Whether the backlog of the bursts drained: the p99 of the whole minutes after the last
    burst (the run's last minute, flushed as it drains, left out) is back within 10 s of the
    p99 of the whole minutes before the first burst. Returns (drained, after, before)."""
    last = int(args.stream_s // 60) - 1  # the last whole minute of the source
    if args.burst_factor == 1:
        quiet = [p for m, (_, p) in minutes.items() if 1 <= m <= last]
        return bool(quiet) and max(quiet) < FRESHNESS_TARGET_S, max(quiet, default=0), 0.0
    first_burst = int(args.burst_every_s // 60)
    last_start = ((args.stream_s - 1) // args.burst_every_s) * args.burst_every_s
    after_burst = int((last_start + args.burst_s) // 60) + 1
    before = [p for m, (_, p) in minutes.items() if 1 <= m < first_burst]
    after = [p for m, (_, p) in minutes.items() if after_burst <= m <= last]
    if not before or not after:
        return False, float("nan"), float("nan")
    return max(after) <= max(before) + 10, max(after), max(before)


def bench_bursts(args, env: dict, workdir: Path, extra: list[str]) -> dict:
    """The synthetic source with bursts; prints and returns its figures."""
    from pipelines.local.publish import BurstProfile

    profile = BurstProfile(args.rate, args.burst_factor, args.burst_every_s, args.burst_s)
    ticks = int(args.stream_s)
    offered = sum(int(profile.rate_at(t)) for t in range(ticks))
    state = [
        "--allowed_lateness_s",
        str(max(args.stream_state_s - 60, 0)),
        "--dedupe_ttl_s",
        str(args.stream_state_s),
    ]
    root = workdir / "streaming"
    cmd = [
        sys.executable,
        "-m",
        "pipelines.streaming",
        "--source",
        "synthetic",
        "--rate",
        str(args.rate),
        "--burst_factor",
        str(args.burst_factor),
        "--burst_every_s",
        str(args.burst_every_s),
        "--burst_s",
        str(args.burst_s),
        "--duration_s",
        str(args.stream_s),
        "--output_root",
        str(root),
        *(state if args.stream_state_s > 0 else []),
        *extra,
    ]
    share, check = _machine_check()
    speed = share * REFERENCE_CALIBRATION  # texts/s
    launched = time.time()
    out, wall, _, samples = _run(cmd, env)
    read = int(_figure(r"events read\s+(\d+)", out) or 0)
    p50 = _figure(r"freshness p50/p99\s+(\S+) s", out)
    p99 = _figure(r"freshness p50/p99\s+\S+(?: s)? / (\S+) s", out)
    print(
        f"\n## bursts: synthetic source at {args.rate:,.0f} events/s, x{args.burst_factor:g} "
        f"for {args.burst_s:g} s every {args.burst_every_s:g} s, for {args.stream_s:g} s"
    )
    print(check)
    print(f"command: {' '.join(cmd[1:])}")
    lost = offered - read
    print(
        f"events read {read:,} of {offered:,} offered; wall {wall:.0f} s "
        f"(the source ran {args.stream_s:g} s)"
    )
    balanced = _print_counts(out)
    events = _figure(r"committed in the warehouse, (\d+) events", out)
    print(
        f"freshness   p50 {p50} s, p99 {p99} s   (target p99 < {FRESHNESS_TARGET_S:g} s; per "
        f"event, ingestion to the commit of the warehouse row counting it, {events} events)"
    )
    slo = _figure(r"freshness SLO\s+(.+)", out)
    print(f"SLO         {slo}")
    minutes = _minute_p99(root / "warehouse.duckdb", launched)
    print(
        "p99 by min  "
        + ", ".join(f"{m}: {p:.0f}" for m, (_, p) in minutes.items())
        + "   (s, per event-time minute since the launch; late events left out)"
    )
    drained, after, before = _drained(args, minutes)
    print(
        f"drained     {'yes' if drained else 'NO'} (p99 in the minutes after the last burst "
        f"{after:.0f} s; before the first {before:.0f} s)"
    )
    flat = None
    if samples:
        rss = [kb / 1024 for t, kb in samples if t >= 120] or [kb / 1024 for _, kb in samples]
        half = len(rss) // 2 or 1
        first, second = sum(rss[:half]) / half, sum(rss[half:]) / max(len(rss) - half, 1)
        flat = second <= 1.15 * first
        print(
            f"RSS MB      after 2 min: first-half mean {first:.0f}, second-half mean {second:.0f}"
            f", max {max(rss):.0f}: {'flat' if flat else 'NOT flat'}"
        )
        step = 300 if args.stream_s > 1200 else 60
        by_time = [f"{t / 60:.0f} min {kb / 1024:.0f}" for t, kb in samples if t % step < 1]
        print(f"RSS by time {', '.join(by_time)}")
    return {
        "p50": p50,
        "p99": float(p99) if p99 else None,
        "lost": lost,
        "balanced": balanced,
        "drained": drained,
        "flat": flat,
        "check": speed,
    }


def bench_pubsub(env: dict, extra: list[str]) -> float | None:
    """``benchmarks/pubsub_local.py`` when the emulator is configured; its events/s."""
    print("\n## the Pub/Sub path (benchmarks/pubsub_local.py)")
    if not env.get("PUBSUB_EMULATOR_HOST"):
        print("skipped: PUBSUB_EMULATOR_HOST is not set (make stack-up, then export its output)")
        return None
    done = subprocess.run(
        [sys.executable, "benchmarks/pubsub_local.py", *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    print(done.stdout.rstrip())
    figure = _figure(r"end to end\s+([\d,]+) events/s", done.stdout)
    return float(figure.replace(",", "")) if figure else None


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def _summary(backfills: list[dict], floor: float | None, bursts: dict | None, pubsub) -> None:
    print("\n## summary")
    if backfills:
        big = backfills[-1]
        print(
            f"backfill    {big['rate']:,.0f} events/s over {big['events']:,} events = "
            f"{big['ratio']:.2f}x the machine check (>= {BACKFILL_RATIO_TARGET}x: "
            f"{_verdict(big['ratio'] >= BACKFILL_RATIO_TARGET)}); counts balanced "
            f"{'yes' if all(b['balanced'] for b in backfills) else 'NO'}"
        )
        sizes = ", ".join(f"{b['events']:,} events {b['peak_mb']:,.0f} MB" for b in backfills)
        flat = backfills[-1]["peak_mb"] <= 1.25 * backfills[0]["peak_mb"]
        print(f"peak RSS    {sizes} (flat in the input size: {_verdict(flat)})")
        if floor:
            ratio = big["cpu_us"] / floor
            print(
                f"CPU         {big['cpu_us']:,.0f} µs per event, {ratio:.2f}x the plain "
                f"functions' {floor:,.1f} (moonshot <= {FLOOR_RATIO_MOONSHOT}x: "
                f"{_verdict(ratio <= FLOOR_RATIO_MOONSHOT)})"
            )
    if bursts:
        p99 = bursts["p99"]
        print(
            f"bursts      freshness p50 {bursts['p50']} s, p99 {p99} s "
            f"(< {FRESHNESS_TARGET_S:g} s: {_verdict(p99 is not None and p99 < 120)}); "
            f"drained {_verdict(bursts['drained'])}; nothing lost "
            f"{_verdict(bursts['lost'] == 0 and bursts['balanced'])}; memory flat "
            f"{_verdict(bursts['flat'])}"
        )
    if pubsub is not None:
        print(
            f"pubsub      {pubsub:,.0f} events/s (>= {PUBSUB_TARGET:,}: {_verdict(pubsub >= 1000)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", default="200000,1000000", help="Backfill sizes, a list.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--text_chars", type=int, default=440)
    parser.add_argument("--floor_events", type=int, default=FUNCTIONS_EVENTS)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--burst_factor", type=float, default=5.0)
    parser.add_argument("--burst_every_s", type=float, default=300.0)
    parser.add_argument("--burst_s", type=float, default=30.0)
    parser.add_argument("--stream_s", type=float, default=1200.0)
    parser.add_argument("--stream_state_s", type=int, default=180)
    parser.add_argument("--skip_backfill", action="store_true")
    parser.add_argument("--skip_streaming", action="store_true")
    parser.add_argument("--skip_pubsub", action="store_true")
    args, extra = parser.parse_known_args()
    env = dict(os.environ)
    env.setdefault("GENAI_PSEUDONYM_KEY", "benchmark-only-pseudonym-key-0123456789")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print(_redaction_build())
    backfills, floor, bursts, pubsub = [], None, None, None
    with tempfile.TemporaryDirectory(prefix="genai-bench-") as tmp:
        if not args.skip_backfill:
            for events in (int(n) for n in args.events.split(",")):
                backfills.append(
                    bench_backfill(events, args.workers, args.text_chars, env, Path(tmp), extra)
                )
            floor = bench_floor(args.floor_events, args.text_chars, env, Path(tmp))
        if not args.skip_streaming:
            bursts = bench_bursts(args, env, Path(tmp), extra)
    if not args.skip_pubsub:
        pubsub = bench_pubsub(env, [])
    _summary(backfills, floor, bursts, pubsub)
    return 0


if __name__ == "__main__":
    sys.exit(main())
