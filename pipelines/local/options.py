"""Flags of local runs only: the synthetic source's (``--source synthetic``) and the local
Pub/Sub source's (``--source pubsub`` on a local run, ``pipelines.local.pubsub``).

``pipelines.launch.parse_options`` makes them known to the flag parser on local runs only, so
no Dataflow job and no Flex Template metadata has them; ``python -m pipelines.streaming --help``
lists them under "local runs only".
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.local.loadgen import LoadProfile
from pipelines.local.publish import BurstProfile

__all__ = [
    "LOCAL_OPTIONS",
    "LocalPubsubOptions",
    "SyntheticSourceOptions",
    "burst_profile",
    "load_profile",
    "validate_local_pubsub",
    "validate_synthetic",
]

_PROFILE_DEFAULTS = LoadProfile._field_defaults
_SHARES = (
    ("duplicate_share", "exact redeliveries"),
    ("late_share", "events 2-15 minutes late"),
    ("malformed_share", "malformed events"),
    ("pii_share", "texts carrying PII"),
)


class SyntheticSourceOptions(PipelineOptions):
    """Flags of the synthetic source (``--source synthetic``, local runs only)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument("--rate", type=float, default=1000.0, help="Synthetic events/s.")
        parser.add_argument(
            "--duration_s", type=float, default=60.0, help="The synthetic source runs this long."
        )
        parser.add_argument("--seed", type=int, default=7, help="Seed of the synthetic events.")
        parser.add_argument(
            "--tick_s", type=float, default=1.0, help="Seconds between batches of events."
        )
        parser.add_argument(
            "--burst_factor",
            type=float,
            default=1.0,
            help="Rate multiplier in bursts (1: no bursts), as the load generator's.",
        )
        parser.add_argument(
            "--burst_every_s", type=float, default=300.0, help="A burst starts this often."
        )
        parser.add_argument("--burst_s", type=float, default=30.0, help="Burst length.")
        for name, text in _SHARES:
            parser.add_argument(
                f"--{name}", type=float, default=_PROFILE_DEFAULTS[name], help=f"Share of {text}."
            )


class LocalPubsubOptions(PipelineOptions):
    """Flags of the local Pub/Sub source (``--source pubsub`` on a local run with the embedded
    sinks): its flow control and leases."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--pubsub_max_outstanding",
            type=int,
            default=100_000,
            help="Most messages read and not yet acknowledged (a message is acknowledged once "
            "its outputs are committed, about --file_flush_s after it is read).",
        )
        parser.add_argument(
            "--pubsub_max_outstanding_mb",
            type=int,
            default=1024,
            help="Most MiB of messages read and not yet acknowledged.",
        )
        parser.add_argument(
            "--pubsub_max_lease_s",
            type=float,
            default=3600.0,
            help="How long a message's lease is extended while its outputs are not committed; "
            "after that Pub/Sub delivers it again.",
        )


# The local-only options classes of each command (``parse_options``'s ``command``).
LOCAL_OPTIONS: dict[str, list[type[PipelineOptions]]] = {
    "python -m pipelines.streaming": [SyntheticSourceOptions, LocalPubsubOptions],
}


def load_profile(options: SyntheticSourceOptions) -> LoadProfile:
    return LoadProfile(**{name: getattr(options, name) for name, _ in _SHARES})


def burst_profile(options: SyntheticSourceOptions) -> BurstProfile:
    return BurstProfile(options.rate, options.burst_factor, options.burst_every_s, options.burst_s)


def validate_synthetic(options: SyntheticSourceOptions) -> list[str]:
    """Problems with the synthetic source's flags (empty when fine)."""
    problems = []
    if options.rate <= 0 or options.duration_s <= 0 or options.tick_s <= 0:
        problems.append("--rate, --duration_s and --tick_s must be > 0")
    else:
        problems += burst_profile(options).problems()
    for name, _ in _SHARES:
        if not 0 <= getattr(options, name) <= 1:
            problems.append(f"--{name} must be between 0 and 1")
    return problems


def validate_local_pubsub(options: LocalPubsubOptions) -> list[str]:
    """Problems with the local Pub/Sub source's flags (empty when fine)."""
    problems = []
    if options.pubsub_max_outstanding < 1 or options.pubsub_max_outstanding_mb < 1:
        problems.append("--pubsub_max_outstanding and --pubsub_max_outstanding_mb must be >= 1")
    if options.pubsub_max_lease_s <= 0:
        problems.append("--pubsub_max_lease_s must be > 0")
    return problems
