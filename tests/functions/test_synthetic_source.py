"""The synthetic source's pacing: its rate per tick follows the burst profile."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.local.loadgen import EventGenerator, LoadProfile
from pipelines.local.options import SyntheticSourceOptions, burst_profile, validate_synthetic
from pipelines.local.publish import BurstProfile
from pipelines.local.source import _PacedEvents


def _events_per_tick(rates: BurstProfile, duration_s: float, tick_s: float) -> list[int]:
    """How many events each tick of a paced run sends (the run sleeps between ticks)."""
    sent: list[int] = []
    done: list[bool] = []
    paced = _PacedEvents(
        EventGenerator(3, LoadProfile(duplicate_share=0, late_share=0, malformed_share=0)),
        rates,
        duration_s,
        tick_s,
        run_token="t",
        encode=lambda message: message.id.encode(),
        on_done=lambda: done.append(True),
    )
    for event in paced.read_multiple(None):
        if event.HasField("element_event"):
            sent.append(len(event.element_event.elements))
        elif event.HasField("watermark_event"):
            sent.append(-1)  # a tick ends
    assert done == [True]
    per_tick, current = [], 0
    for n in sent:
        if n < 0:
            per_tick.append(current)
            current = 0
        else:
            current += n
    return per_tick


def test_ticks_in_a_burst_send_the_burst_rate_and_the_others_the_base_rate():
    # Ticks of 10 ms, a burst of 5x for 30 ms every 100 ms (the first at 100 ms).
    rates = BurstProfile(rate=1000, burst_factor=5, burst_every_s=0.1, burst_s=0.03)
    per_tick = _events_per_tick(rates, duration_s=0.3, tick_s=0.01)
    assert len(per_tick) == 30
    bursts = {10, 11, 12, 20, 21, 22}
    assert [n for i, n in enumerate(per_tick) if i in bursts] == [50] * 6
    assert [n for i, n in enumerate(per_tick) if i not in bursts] == [10] * 24


def test_the_flags_give_the_profile_and_wrong_bursts_are_refused():
    options = PipelineOptions(
        ["--rate", "1000", "--burst_factor", "5", "--burst_every_s", "300", "--burst_s", "30"]
    ).view_as(SyntheticSourceOptions)
    assert burst_profile(options) == BurstProfile(1000, 5, 300, 30)
    assert validate_synthetic(options) == []
    options.burst_s = 400
    assert validate_synthetic(options) == [
        "need --burst_every_s > 0 and 0 < --burst_s <= --burst_every_s"
    ]
    options.burst_s, options.burst_factor = 30, 0.5
    assert validate_synthetic(options) == ["need --rate > 0 and --burst_factor >= 1"]
