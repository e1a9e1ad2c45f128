"""Streaming pipeline: gateway events in, redacted archive, metrics, audit and dead letters out.

Unbounded. Runs on Dataflow in production (the Flex Template ``templates/streaming``) and on the
local runner here. Source (``--source``): ``pubsub`` (default), a subscription
(``--subscription``; see ``pipelines.io.sources.pubsub`` for which time is event time), or, on
local runners only, ``synthetic``, generated traffic that ends after ``--duration_s`` (what
``make run`` uses; its flags are listed under "local runs only" in ``--help``). Sinks
(``--sink``): the embedded ones under ``--output_root`` (default, local runs only) or Google
Cloud (``pipelines.io.sinks.gcp``).

    python -m pipelines.streaming --source synthetic --rate 1000 --duration_s 60 \\
        --output_root ./out
    python -m pipelines.streaming --subscription projects/P/subscriptions/S --sink gcp \\
        --raw_root gs://B/archive --bigquery_dataset P.genai \\
        --audit_db_url env:GENAI_AUDIT_DB_URL

A Pub/Sub run never ends by itself: on Dataflow ``run`` returns once the job is submitted; on a
local runner it runs until interrupted. With the embedded sinks a local run reads through the
local Pub/Sub source (streaming pull; a message is acknowledged once its outputs are committed)
and Ctrl-C drains it: reading stops, everything flushes and is acknowledged, and the run summary
is printed (a second Ctrl-C cancels).
"""

from __future__ import annotations

import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.io.sources.pubsub import ReadGatewayEvents, id_label_for, is_subscription_path
from pipelines.launch import configure_logging, launch, parse_options
from pipelines.options import add_core_options, core_config, validate_core
from pipelines.progress import LogProgress, line_count
from pipelines.sinks import (
    PipelineOutputs,
    add_sink_options,
    describe_sinks,
    validate_sinks,
    write_outputs,
)
from transforms.analyze import AnalyzeEvents
from transforms.batching import BatchPerBundle
from transforms.elements import LineChunk, stream_chunk

__all__ = ["SOURCES", "StreamingOptions", "build", "run", "validate"]

SOURCES = ("pubsub", "synthetic")


class StreamingOptions(PipelineOptions):
    """Flags of the streaming pipeline (core flags come from ``add_core_options``)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        add_core_options(parser)
        add_sink_options(parser)
        parser.add_argument(
            "--source",
            default="pubsub",
            help=f"One of {SOURCES}; synthetic: generated traffic, local runs only.",
        )
        parser.add_argument(
            "--subscription",
            default="",
            help="pubsub: the subscription to read, projects/P/subscriptions/S.",
        )


def validate(options: StreamingOptions) -> list[str]:
    problems = validate_core(options) + validate_sinks(options)
    if options.source not in SOURCES:
        problems.append(f"--source must be one of {SOURCES}, got {options.source!r}")
    if options.source == "pubsub" and not is_subscription_path(options.subscription):
        problems.append("--source pubsub needs --subscription projects/P/subscriptions/S")
    return problems


def build(
    pipeline: beam.Pipeline, options: StreamingOptions, events: beam.PCollection | None = None
) -> PipelineOutputs:
    """Wires the graph: the Pub/Sub source (or ``events``, the raw event bytes of another
    source, such as the local runs' synthetic one), the core and the sinks."""
    if events is None:
        # id_label makes Dataflow drop redelivered copies; other runners reject it.
        runner = options.view_as(StandardOptions).runner
        events = pipeline | "ReadGatewayEvents" >> ReadGatewayEvents(
            options.subscription, id_label=id_label_for(runner)
        )
    raw = (
        events
        # The core works a chunk of events at a time: gather each bundle's messages first,
        # so the steps after this one (here and in the core) run once per chunk.
        | "ChunkPerBundle" >> BatchPerBundle(stream_chunk, LineChunk)
        | "LogProgress" >> LogProgress("events read", weight=line_count)
    )
    core = raw | "AnalyzeEvents" >> AnalyzeEvents(core_config(options), input_format="json_lines")
    return PipelineOutputs(raw, core, write_outputs(core, options))


def run(argv: list[str] | None = None) -> int:
    options = parse_options(argv, StreamingOptions, "python -m pipelines.streaming", __doc__)
    options.view_as(StandardOptions).streaming = True
    streaming = options.view_as(StreamingOptions)
    source = f"subscription={streaming.subscription}" if streaming.source == "pubsub" else ""
    described = (
        f"streaming: source={streaming.source} {source} {describe_sinks(streaming)} "
        f"engine={streaming.redaction_engine} dedupe={core_config(streaming).dedupe_strategy}"
    )
    return launch(options, streaming, validate, build, described)


if __name__ == "__main__":
    configure_logging()
    sys.exit(run())
