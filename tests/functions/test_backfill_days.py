"""Which days a backfill writes its own rows for, and which it recomputes from the archive."""

from __future__ import annotations

from pathlib import Path

from apache_beam.pvalue import TaggedOutput

from pipelines.backfill import _RECOMPUTE, _file_in_day, _SortDaysFn


def _archive(root: Path, *files: str) -> None:
    for name in files:
        path = root / "raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def _sorted(root: Path, day: str, ours: list[str], unarchived: int = 0) -> str:
    (out,) = list(_SortDaysFn(str(root)).process((day, ours), unarchived))
    return "recompute" if isinstance(out, TaggedOutput) and out.tag == _RECOMPUTE else "own"


def test_a_day_holding_only_this_runs_files_keeps_the_runs_rows(tmp_path):
    _archive(
        tmp_path,
        "event_date=2026-11-01/region=us/a.avro",
        "event_date=2026-11-01/region=eu/b.avro",
        "event_date=2026-11-02/region=us/other-day.avro",
    )
    ours = ["region=us/a.avro", "region=eu/b.avro"]
    assert _sorted(tmp_path, "2026-11-01", ours) == "own"


def test_a_day_with_files_of_another_run_in_any_region_is_recomputed(tmp_path):
    _archive(
        tmp_path,
        "event_date=2026-11-01/region=us/a.avro",
        "event_date=2026-11-01/region=ap/earlier.avro",
    )
    assert _sorted(tmp_path, "2026-11-01", ["region=us/a.avro"]) == "recompute"


def test_every_day_is_recomputed_when_the_archive_writer_left_events_out(tmp_path):
    _archive(tmp_path, "event_date=2026-11-01/region=us/a.avro")
    assert _sorted(tmp_path, "2026-11-01", ["region=us/a.avro"], unarchived=1) == "recompute"


def test_files_are_named_within_their_day_whatever_the_root():
    for root in ("out", "./out", "/abs/out", "gs://bucket/prefix"):
        path = f"{root}/raw/event_date=2026-11-01/region=eu%2Dwest/part-1.avro"
        assert _file_in_day(path) == ("2026-11-01", "region=eu%2Dwest/part-1.avro")
