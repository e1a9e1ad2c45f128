"""The pipeline commands' plain functions: partition selection, the run summary's quantiles,
option defaults and the dedupe strategy per runner, unknown flags, logging, progress. The
commands themselves run in ``tests/e2e/test_pipelines.py``."""

import datetime as dt
import logging
import pickle
from types import SimpleNamespace

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import backfill, streaming
from pipelines.launch import WORKER_LOGGER, configure_logging, parse_options, unknown_flags
from pipelines.local.summary import _quantiles as summary_quantiles
from pipelines.options import core_config
from pipelines.progress import _ProgressFn


def test_partition_selection_is_by_path():
    patterns = backfill.partition_patterns(
        "/archive", dt.date(2026, 1, 30), dt.date(2026, 2, 1), ["us", "eu"]
    )
    assert patterns == [
        f"/archive/raw/event_date={d}/region={r}/*.avro"
        for d in ("2026-01-30", "2026-01-31", "2026-02-01")
        for r in ("us", "eu")
    ]
    assert backfill.partition_patterns("/a", None, None, None) == [
        "/a/raw/event_date=*/region=*/*.avro"
    ]


@pytest.mark.parametrize(
    ("histogram", "expected"),
    [({0: 50, 1: 49, 10: 1}, [0.0, 1.0]), ({5: 1}, [5.0, 5.0]), ({}, [None, None])],
)
def test_summary_quantiles_are_nearest_rank(histogram, expected):
    assert summary_quantiles(histogram, (0.5, 0.99)) == expected


def test_dedupe_strategy_follows_the_runner():
    def strategy(args):
        options = PipelineOptions(args)
        return core_config(options.view_as(streaming.StreamingOptions)).dedupe_strategy

    assert strategy([]) == "sharded"
    assert strategy(["--runner", "DataflowRunner"]) == "per_key"
    assert strategy(["--runner", "DataflowRunner", "--dedupe_strategy", "sharded"]) == "sharded"
    assert strategy(["--dedupe_strategy", "per_key"]) == "per_key"


def test_the_backfills_first_pass_combines_on_disk_locally_and_through_the_shuffle_on_dataflow():
    import apache_beam as beam

    from pipelines.local.spill import CombinePerKeyOnDisk

    local = beam.Pipeline(options=PipelineOptions([]))
    assert backfill._combine_copies(local) is CombinePerKeyOnDisk
    # Only the options are read (a Dataflow pipeline object would want a project and buckets).
    dataflow = SimpleNamespace(options=PipelineOptions(["--runner", "DataflowRunner"]))
    assert backfill._combine_copies(dataflow) is None  # beam.CombinePerKey


def test_default_dedupe_ttl_covers_the_allowed_lateness_and_a_window():
    defaults = PipelineOptions([]).view_as(streaming.StreamingOptions)
    assert defaults.dedupe_ttl_s >= defaults.allowed_lateness_s + defaults.window_size_s


def test_beams_own_flags_are_not_unknown():
    beams = ["--runner", "DataflowRunner", "--project", "p", "--region", "r", "--streaming"]
    beams += ["--temp_location=gs://b/t", "--experiments", "a", "--direct_num_workers=2"]
    ours = ["--subscription", "s", "--input", "x"]  # the pipelines' own, from both classes
    options = PipelineOptions(beams + ours)
    assert unknown_flags(options) == []


def test_on_dataflow_an_unknown_flag_is_a_warning_naming_it_without_its_value(caplog):
    # The Flex Template launcher's flags are not ours to fix; its service checks the template's.
    args = ["--runner", "DataflowRunner", "--launcher_only_flag", "some-value", "--source", "x"]
    with caplog.at_level(logging.WARNING, logger="pipelines.launch"):
        options = parse_options(args, streaming.StreamingOptions, "streaming", "doc")
    assert options.view_as(streaming.StreamingOptions).source == "x"
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "pipelines.launch"]
    assert "--launcher_only_flag" in warning and "some-value" not in warning


def test_logging_drops_the_worker_start_up_warnings_and_keeps_the_rest(caplog):
    configure_logging()
    configure_logging()  # idempotent: one filter
    worker = logging.getLogger(WORKER_LOGGER)
    assert len(worker.filters) == 1
    with caplog.at_level(logging.WARNING, logger=WORKER_LOGGER):
        worker.warning("Worker: %s", "message: \"Discarding unparseable args: ['--rate=5']\"")
        worker.warning("Worker: %s", 'message: "No semi_persistent_directory found: ..."')
        worker.warning("Worker: %s", 'message: "a failed bundle"')
    assert [r.getMessage() for r in caplog.records] == ['Worker: message: "a failed bundle"']


def test_progress_counts_across_bundles_and_dofn_instances(caplog):
    # The DirectRunner in streaming sets up a new DoFn instance (unpickled) for every bundle:
    # the count must carry on, or a long streaming run never logs its progress.
    step = _ProgressFn("events read", every_s=0.0, weight=len)
    other = _ProgressFn("events read", every_s=0.0, weight=len)  # counts on its own
    with caplog.at_level(logging.INFO, logger="pipelines.progress"):
        for fn in (step, step, other, step):
            assert list(pickle.loads(pickle.dumps(fn)).process("ab")) == ["ab"]
    counts = [r.args[0] for r in caplog.records if r.getMessage().startswith("progress:")]
    assert counts == [2, 4, 2, 6]  # each element counts for its weight (a chunk's lines)
