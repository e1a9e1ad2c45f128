"""The BigQuery dead-letter table: every ``DeadLetter`` appended through the Storage Write API,
so why inputs were rejected can be queried (by reason, step, day) and replayed from there.

Table ``PROJECT.DATASET.dead_letters`` (``--dead_letter_table``; Terraform puts it in a dataset
of its own that only the worker writes and only the dead-letter readers read): the columns of
``dead_letter.avsc`` (the payload redacted or omitted, the reason, step, error type and message,
failure time, SHA-256 and size of the original bytes, ``replay_of``, ``input_id``), day
partitions of ``failed_at`` that expire after ``PARTITION_EXPIRATION_DAYS`` (30, as the
dead-letter bucket's objects), clustered by ``reason``, ``step``. Created here if missing,
with the same definition as Terraform's (a test compares them).

At least once, like every append (``write_api``): a record may be stored twice; it has the same
``dead_letter_id``, by which readers and the replay dedupe. The Avro files under
``--dead_letter_root`` stay the record of truth: a row BigQuery refuses is counted
(``rows_refused``) and left there, and exhausted retries fail the bundle (there is nowhere
further to send a dead letter), so the runner retries it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from functools import cache

from apache_beam.metrics import Metrics

from pipelines.io.sinks.gcp.bigquery import REQUEST_TIMEOUT_S, BigQuerySink
from pipelines.io.sinks.gcp.write_api import RowEncoder, append_rows, emulator_serialized
from schemas.contract import bigquery_schema, load_schema
from transforms.elements import DeadLetter, to_record

__all__ = [
    "DEAD_LETTER_TABLE",
    "PARTITION_EXPIRATION_DAYS",
    "DeadLetterTableSink",
    "append_dead_letters",
    "create_dead_letter_table",
    "dead_letter_table",
    "split_table",
]

_LOGGER = logging.getLogger(__name__)

DEAD_LETTER_TABLE = "dead_letters"
PARTITION_EXPIRATION_DAYS = 30
CLUSTERING = ("reason", "step")
_MS_PER_DAY = 86_400_000
# PROJECT (optionally domain-scoped) . DATASET . TABLE
_TABLE_REF = re.compile(
    r"(?:[a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]\.[A-Za-z0-9_]{1,1024}\.[A-Za-z0-9_]{1,1024}\Z"
)
_READY: set[str] = set()
_READY_LOCK = threading.Lock()


def split_table(table: str) -> tuple[str, str, str]:
    """``PROJECT.DATASET.TABLE`` -> its parts; raises ValueError otherwise."""
    if not _TABLE_REF.match(table or ""):
        raise ValueError(f"a BigQuery table must be PROJECT.DATASET.TABLE, got {table!r}")
    project, dataset, name = table.rsplit(".", 2)
    return project, dataset, name


def dead_letter_table(table: str):
    """The dead-letter table definition (not created)."""
    from google.cloud import bigquery

    split_table(table)
    definition = bigquery.Table(
        table,
        schema=[bigquery.SchemaField.from_api_repr(f) for f in bigquery_schema("dead_letter")],
    )
    definition.description = load_schema("dead_letter")["doc"]
    definition.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY,
        field="failed_at",
        expiration_ms=PARTITION_EXPIRATION_DAYS * _MS_PER_DAY,
    )
    definition.clustering_fields = list(CLUSTERING)
    return definition


def create_dead_letter_table(client, table: str) -> None:
    """Creates the table (and its dataset) if missing. Idempotent."""
    from google.cloud import bigquery

    project, dataset, _ = split_table(table)
    client.create_dataset(
        bigquery.Dataset(f"{project}.{dataset}"),
        exists_ok=True,
        retry=None,
        timeout=REQUEST_TIMEOUT_S,
    )
    client.create_table(
        dead_letter_table(table), exists_ok=True, retry=None, timeout=REQUEST_TIMEOUT_S
    )


@cache
def _encoder() -> RowEncoder:
    return RowEncoder(bigquery_schema("dead_letter"), "DeadLetter")


def append_dead_letters(client, table: str, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
    """Appends ``letters`` (each ``dead_letter_id`` once per call; the table created if
    missing); returns the ones BigQuery refused."""
    letters = list({d.dead_letter_id: d for d in reversed(letters)}.values())[::-1]
    if not letters:
        return []
    with _READY_LOCK:
        if table not in _READY:
            create_dead_letter_table(client, table)
            _READY.add(table)
    refused = append_rows(table, _encoder(), [to_record(d) for d in letters])
    return [letters[i] for i in refused]


class DeadLetterTableSink(BigQuerySink):
    """Appends ``DeadLetter`` records to the dead-letter table (see the module docstring)."""

    step = "write_dead_letters_bigquery"
    id_field = "dead_letter_id"
    num_shards = 2
    dead_letter_failures = False

    def __init__(self, table: str):
        project, dataset, _ = split_table(table)
        super().__init__(f"{project}.{dataset}")
        self._table = table

    def setup(self) -> None:
        super().setup()
        self._refused = Metrics.counter(f"{__name__}.{self.step}", "rows_refused")

    def write(self, batch: Sequence[DeadLetter]) -> None:
        from google.api_core.exceptions import NotFound

        try:
            with emulator_serialized():
                refused = append_dead_letters(self._client, self._table, batch)
        except NotFound:
            with _READY_LOCK:
                _READY.discard(self._table)  # dropped: the next attempt creates it again
            raise
        if refused:
            # Still in the Avro files (the record of truth); a refusal would repeat forever.
            self._refused.inc(len(refused))
            _LOGGER.error("%s: BigQuery refused %d dead-letter rows", self.step, len(refused))
