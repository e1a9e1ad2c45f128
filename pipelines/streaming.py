"""Streaming pipeline: gateway events in, redacted archive, metrics, audit and dead letters out.

Unbounded. Runs on Dataflow in production and on the DirectRunner here. Source (``--source``):
``synthetic``, a built-in rate-limited generator that ends after ``--duration_s`` (the
embedded default, no server needed), or ``pubsub``, a subscription (``--subscription``; see
``pipelines.io.sources.pubsub`` for which time is event time). Sinks (``--sink``): the embedded ones
under ``--output_root`` (default) or Google Cloud (``pipelines.io.sinks.gcp``).

    python -m pipelines.streaming --rate 1000 --duration_s 60 --output_root ./out
    python -m pipelines.streaming --source pubsub \\
        --subscription projects/P/subscriptions/S --sink gcp --raw_root gs://B/archive \\
        --bigquery_dataset P.genai --audit_db_url env:GENAI_AUDIT_DB_URL

A Pub/Sub run never ends by itself: on Dataflow ``run`` returns once the job is submitted; on a
local runner it runs until interrupted (Ctrl-C cancels it and prints the run summary).
"""

from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.io.sources.pubsub import ReadGatewayEvents, id_label_for, is_subscription_path
from pipelines.launch import configure_logging, launch, parse_options
from pipelines.local.loadgen import GenerateEvents, LoadProfile
from pipelines.local.tally import TallyOutcomes, tally_inputs
from pipelines.options import (
    LogProgress,
    add_core_options,
    core_config,
    line_count,
    validate_core,
)
from pipelines.sinks import (
    add_sink_options,
    describe_sinks,
    output_lines,
    validate_sinks,
    write_outputs,
)
from transforms.analyze import AnalyzeEvents
from transforms.batching import BatchPerBundle
from transforms.elements import LineChunk, stream_chunk

__all__ = ["StreamingOptions", "build", "run"]

SOURCES = ("synthetic", "pubsub")
_PROFILE_DEFAULTS = LoadProfile._field_defaults


class StreamingOptions(PipelineOptions):
    """Flags of the streaming pipeline (core flags come from ``add_core_options``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_core_options(parser)
        add_sink_options(parser)
        parser.add_argument("--source", default="synthetic", help=f"One of {SOURCES}.")
        parser.add_argument(
            "--subscription",
            default="",
            help="pubsub: the subscription to read, projects/P/subscriptions/S.",
        )
        parser.add_argument("--rate", type=float, default=1000.0, help="Synthetic events/s.")
        parser.add_argument(
            "--duration_s", type=float, default=60.0, help="Synthetic source runs this long."
        )
        parser.add_argument("--seed", type=int, default=7, help="Synthetic source seed.")
        parser.add_argument(
            "--tick_s", type=float, default=1.0, help="Synthetic: seconds between batches."
        )
        for name, default, text in (
            ("duplicate_share", _PROFILE_DEFAULTS["duplicate_share"], "exact redeliveries"),
            ("late_share", _PROFILE_DEFAULTS["late_share"], "events 2-15 minutes late"),
            ("malformed_share", _PROFILE_DEFAULTS["malformed_share"], "malformed events"),
            ("pii_share", _PROFILE_DEFAULTS["pii_share"], "texts carrying PII"),
        ):
            parser.add_argument(
                f"--{name}", type=float, default=default, help=f"Synthetic: share of {text}."
            )


def validate(options: StreamingOptions) -> list[str]:
    problems = validate_core(options) + validate_sinks(options)
    if options.source not in SOURCES:
        problems.append(f"--source must be one of {SOURCES}, got {options.source!r}")
    if options.source == "pubsub" and not is_subscription_path(options.subscription):
        problems.append("--source pubsub needs --subscription projects/P/subscriptions/S")
    if options.rate <= 0 or options.duration_s <= 0 or options.tick_s <= 0:
        problems.append("--rate, --duration_s and --tick_s must be > 0")
    for name in ("duplicate_share", "late_share", "malformed_share", "pii_share"):
        if not 0 <= getattr(options, name) <= 1:
            problems.append(f"--{name} must be between 0 and 1")
    return problems


def _read(pipeline: beam.Pipeline, options: StreamingOptions):
    if options.source == "pubsub":
        # id_label makes Dataflow drop redelivered copies; other runners reject it.
        runner = options.view_as(StandardOptions).runner
        return pipeline | "ReadGatewayEvents" >> ReadGatewayEvents(
            options.subscription, id_label=id_label_for(runner)
        )
    profile = LoadProfile(
        duplicate_share=options.duplicate_share,
        late_share=options.late_share,
        malformed_share=options.malformed_share,
        pii_share=options.pii_share,
    )
    return pipeline | "GenerateEvents" >> GenerateEvents(
        options.rate,
        options.duration_s,
        seed=options.seed,
        profile=profile,
        tick_s=options.tick_s,
    )


def build(pipeline: beam.Pipeline, options: StreamingOptions) -> dict:
    """Wires the graph and returns the core outputs plus the sinks' results."""
    raw = (
        _read(pipeline, options)
        # The core works a chunk of events at a time: gather each bundle's messages first,
        # so the steps after this one (here and in the core) run once per chunk.
        | "ChunkPerBundle" >> BatchPerBundle(stream_chunk, LineChunk)
        | "LogProgress" >> LogProgress("events read", weight=line_count)
    )
    outputs = raw | "AnalyzeEvents" >> AnalyzeEvents(
        core_config(options), input_format="json_lines"
    )
    outputs["written"] = write_outputs(outputs, options)
    outputs["tally"] = tally_inputs(raw, outputs) | "TallyOutcomes" >> TallyOutcomes(
        options.output_root, options.run_id or "latest"
    )
    return outputs


def run(argv: list[str] | None = None) -> int:
    options = parse_options(argv, StreamingOptions, "python -m pipelines.streaming", __doc__)
    options.view_as(StandardOptions).streaming = True
    streaming = options.view_as(StreamingOptions)
    source = (
        f"subscription={streaming.subscription}"
        if streaming.source == "pubsub"
        else f"rate={streaming.rate}/s duration={streaming.duration_s}s"
    )
    described = (
        f"streaming: source={streaming.source} {source} {describe_sinks(streaming)} "
        f"engine={streaming.redaction_engine}"
    )
    return launch(
        options, streaming, validate(streaming), build, described, outputs=output_lines(streaming)
    )


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
