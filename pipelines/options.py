"""The flags every pipeline shares (the core transform's), their validation, and dates."""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from apache_beam.options.pipeline_options import StandardOptions

from transforms.analyze import CoreConfig
from transforms.classify import load_policy
from transforms.pii.engine import ENGINE_NAMES
from transforms.pii.pseudonym import load_key
from transforms.pii.settings import DLP_ENGINES, NO_ESCALATION, DlpOptions, RedactionSettings
from transforms.pricing.table import load_price_table

__all__ = [
    "DEDUPE_STRATEGY_CHOICES",
    "add_core_options",
    "add_date_range_options",
    "add_flag",
    "core_config",
    "date_range",
    "dedupe_strategy",
    "parse_date",
    "validate_core",
]

_LOGGER = logging.getLogger(__name__)
_DEFAULTS = CoreConfig()
# auto: per_key on Dataflow, sharded on local runners (transforms.dedupe says why).
DEDUPE_STRATEGY_CHOICES = ("auto", "per_key", "sharded")


def add_flag(parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    # Beam parses the flags of every PipelineOptions subclass with one parser; when both
    # pipelines are imported (tests, the Flex image), the shared flags must be added once.
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)


def add_core_options(parser: argparse.ArgumentParser) -> None:
    """Adds the flags of the core transform and the embedded sinks (no ``required=True``)."""
    add_flag(parser, "--output_root", default="./out", help="Root of the embedded outputs.")
    add_flag(
        parser,
        "--run_id",
        default="",
        help="Name of this run's totals file under output_root/runs/ (default: start time).",
    )
    add_flag(
        parser,
        "--redaction_engine",
        default=_DEFAULTS.redaction_engine,
        help=f"PII redaction engine, one of {', '.join(ENGINE_NAMES)} (default offline).",
    )
    add_flag(
        parser,
        "--pseudonym_key",
        default=_DEFAULTS.pseudonym_key,
        help=(
            "Reference to the user-id pseudonym key (at least 16 bytes): env:NAME, file:PATH or "
            "secret:projects/P/secrets/S/versions/V (Secret Manager)."
        ),
    )
    add_flag(
        parser,
        "--classification_policy",
        default=_DEFAULTS.policy_path,
        help="Classification policy: builtin:classification.yaml or a YAML file path.",
    )
    add_flag(
        parser,
        "--price_table",
        default=_DEFAULTS.price_table,
        help=(
            "Price table for the metrics' estimated cost: builtin:prices.yaml, a YAML file path "
            "or a gs:// object (read at launch)."
        ),
    )
    for flag, help_text in (
        ("max_event_bytes", "Events larger than this are dead-lettered as oversize."),
        ("max_clock_skew_s", "Event times further ahead of the worker clock are rejected."),
        ("redaction_batch_size", "Events per redaction-engine call."),
        ("dedupe_ttl_s", "Streaming: how long (event time) an event id is remembered."),
        ("dedupe_shards", "Number of dedupe state keys (sharded strategy)."),
        ("window_size_s", "Metrics window size."),
        ("allowed_lateness_s", "Late data within this is merged into its window's metrics."),
        ("early_firing_s", "Streaming: speculative metric panes every this many seconds."),
        ("usage_firing_s", "Streaming: speculative usage panes every this many seconds."),
    ):
        add_flag(parser, f"--{flag}", type=int, default=getattr(_DEFAULTS, flag), help=help_text)
    add_flag(
        parser,
        "--allowed_regions",
        default=_DEFAULTS.allowed_regions,
        help="Comma-separated regions an event may name (default: Google Cloud's regions and "
        "multi-regions, and us, eu, asia); any other is dead-lettered as bad_value:region.",
    )
    add_flag(
        parser,
        "--earliest_event_time",
        default=_DEFAULTS.earliest_event_time,
        help="Events older than this (RFC 3339) are dead-lettered as event_time_too_old.",
    )
    add_flag(
        parser,
        "--dedupe_strategy",
        default="auto",
        help=f"Streaming dedupe state layout, one of {', '.join(DEDUPE_STRATEGY_CHOICES)}: "
        "per_key (keyed state per event id, for Dataflow), sharded (ids held per shard, for "
        "the local runners); auto picks per_key on Dataflow and sharded elsewhere.",
    )
    _add_dlp_options(parser)


def add_date_range_options(parser: argparse.ArgumentParser) -> None:
    """``--start_date``/``--end_date``: the date partitions a batch command reads.

    One definition for the backfill (the archive's ``event_date`` partitions) and the dead-letter
    replay (the ``dt`` partitions, the UTC date of failure), because Beam parses the flags of
    every options class with one parser.
    """
    add_flag(
        parser,
        "--start_date",
        help="First date partition to read, YYYY-MM-DD: the archive's event_date (backfill, "
        "avro) or the dead letters' failure date (replay).",
    )
    add_flag(parser, "--end_date", help="Last date partition to read, inclusive, YYYY-MM-DD.")


def parse_date(value: str | None, flag: str, problems: list[str]) -> dt.date | None:
    """``value`` as a date; None (and a problem naming ``--flag``) when it is not YYYY-MM-DD."""
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        problems.append(f"--{flag} must be a date YYYY-MM-DD")
        return None


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from ``start`` to ``end``, both included."""
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _add_dlp_options(parser: argparse.ArgumentParser) -> None:
    """Flags of the dlp and hybrid engines: ``--dlp_<field>`` of ``DlpOptions``."""
    dlp = _DEFAULTS.dlp
    for field, help_text in (
        ("project", "dlp/hybrid: project billed for Cloud DLP requests (required)."),
        ("location", "dlp/hybrid: DLP processing location, global or a region."),
        ("inspect_template", "dlp/hybrid: inspect template resource name (required)."),
        ("deidentify_template", "dlp/hybrid: de-identify template resource name (required)."),
        ("endpoint", "dlp/hybrid: API host[:port] (default dlp.googleapis.com)."),
        ("escalate_class", "hybrid: policy-flag class from which every text goes to DLP."),
    ):
        add_flag(parser, f"--dlp_{field}", default=getattr(dlp, field), help=help_text)
    add_flag(
        parser,
        "--dlp_requests_per_minute",
        type=int,
        default=dlp.requests_per_minute,
        help="dlp/hybrid: client-side request limit per worker process.",
    )


def dedupe_strategy(options) -> str:
    """The dedupe strategy ``--dedupe_strategy`` names (``auto`` resolved by the runner)."""
    if options.dedupe_strategy != "auto":
        return options.dedupe_strategy
    runner = str(options.view_as(StandardOptions).runner or "").lower()
    return "per_key" if runner.removesuffix("runner") == "dataflow" else "sharded"


def core_config(options) -> CoreConfig:
    """The ``CoreConfig`` for parsed options (any view holding the core flags)."""
    return CoreConfig(
        redaction_engine=options.redaction_engine,
        pseudonym_key=options.pseudonym_key,
        policy_path=options.classification_policy,
        max_event_bytes=options.max_event_bytes,
        max_clock_skew_s=options.max_clock_skew_s,
        redaction_batch_size=options.redaction_batch_size,
        dedupe_ttl_s=options.dedupe_ttl_s,
        dedupe_shards=options.dedupe_shards,
        dedupe_strategy=dedupe_strategy(options),
        window_size_s=options.window_size_s,
        allowed_lateness_s=options.allowed_lateness_s,
        early_firing_s=options.early_firing_s,
        usage_firing_s=options.usage_firing_s,
        dlp=DlpOptions(
            project=options.dlp_project,
            location=options.dlp_location,
            inspect_template=options.dlp_inspect_template,
            deidentify_template=options.dlp_deidentify_template,
            endpoint=options.dlp_endpoint,
            requests_per_minute=options.dlp_requests_per_minute,
            escalate_class=options.dlp_escalate_class,
        ),
        price_table=options.price_table,
        allowed_regions=options.allowed_regions,
        earliest_event_time=options.earliest_event_time,
    )


def validate_core(options) -> list[str]:
    """Returns the problems with the core flags (empty when they are fine).

    Checks what would otherwise fail late on the workers: the engine exists and its options
    are complete (DLP project and templates), the key resolves here (launching without the key
    is an error), the policy loads and knows the escalation class, the price table loads,
    numbers are positive. No service is called.
    """
    problems = []
    try:
        earliest = dt.datetime.fromisoformat(options.earliest_event_time)
        if earliest.tzinfo is None:
            problems.append("--earliest_event_time needs a UTC offset (e.g. 2015-01-01T00:00Z)")
    except ValueError:
        problems.append("--earliest_event_time must be an RFC 3339 time")
    if options.dedupe_strategy not in DEDUPE_STRATEGY_CHOICES:
        problems.append(f"--dedupe_strategy must be one of {', '.join(DEDUPE_STRATEGY_CHOICES)}")
    config = core_config(options)
    for name in (
        "max_event_bytes",
        "redaction_batch_size",
        "dedupe_ttl_s",
        "dedupe_shards",
        "window_size_s",
        "early_firing_s",
        "usage_firing_s",
    ):
        if getattr(config, name) <= 0:
            problems.append(f"--{name} must be > 0")
    for name in ("max_clock_skew_s", "allowed_lateness_s"):
        if getattr(config, name) < 0:
            problems.append(f"--{name} must be >= 0")
    settings = RedactionSettings(config.redaction_engine, config.pseudonym_key, config.dlp)
    dlp_problems = config.dlp.problems() if config.redaction_engine in DLP_ENGINES else []
    problems += dlp_problems
    key_problem = _key_problem(config.pseudonym_key)
    if key_problem:
        problems.append(key_problem)
    for check in (
        lambda: dlp_problems or settings.build(),
        lambda: _check_escalation(load_policy(config.policy_path), config.dlp.escalate_class),
    ):
        try:
            check()
        except (ValueError, OSError, KeyError) as error:
            problems.append(str(error))
    try:
        load_price_table(config.price_table)
    except ValueError as error:
        problems.append(f"--price_table: {error}")
    return problems


def _key_problem(reference: str) -> str | None:
    """Why the pseudonym key ``reference`` cannot be used here, or None. Never the key: a
    file that is not UTF-8 text is reported as such, without the decoder's message (which
    quotes a byte of it)."""
    try:
        load_key(reference)
    except UnicodeDecodeError:
        return f"--pseudonym_key {reference}: the key file is not UTF-8 text"
    except OSError as error:
        cause = error.strerror or type(error).__name__
        return f"--pseudonym_key {reference}: cannot be read ({cause})"
    except (ValueError, KeyError) as error:
        return str(error)
    return None


def _check_escalation(policy, escalate_class: str) -> None:
    if escalate_class != NO_ESCALATION and escalate_class not in policy.classes:
        raise ValueError(
            f"--dlp_escalate_class must be {NO_ESCALATION!r} or one of {policy.classes}"
        )
