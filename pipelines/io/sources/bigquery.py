"""Read the BigQuery dead-letter table: ``ReadDeadLetterTable`` (the dead-letter replay's other
source, beside the Avro files).

One query, run once when the pipeline runs: the records of the failure dates
``start``..``end`` (inclusive, UTC) whose reason starts with ``reason``. The date range is a
constant range of ``failed_at``, so BigQuery scans only those day partitions. Records stored
twice (appends are at least once) come back twice; the replay dedupes by ``dead_letter_id``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from pipelines.io.sinks.gcp.dead_letter_table import split_table
from schemas.contract import load_schema
from transforms.elements import DeadLetter

__all__ = ["ReadDeadLetterTable", "dead_letter_query", "query_dead_letters"]

QUERY_TIMEOUT_S = 300.0


def dead_letter_query(table: str) -> str:
    """The query of ``table``'s records of a date range and reason prefix (parameters
    ``@start``, ``@end`` as TIMESTAMPs: start of the first day, start of the day after the
    last; ``@reason``)."""
    split_table(table)
    columns = ", ".join(f"`{f['name']}`" for f in load_schema("dead_letter")["fields"])
    return (
        f"SELECT {columns} FROM `{table}`\n"
        "WHERE failed_at >= @start AND failed_at < @end AND STARTS_WITH(reason, @reason)"
    )


def query_dead_letters(
    client, table: str, start: dt.date, end: dt.date, reason: str
) -> Iterator[DeadLetter]:
    """The ``DeadLetter`` records of ``table`` that failed from ``start`` to ``end``
    (inclusive) with a reason starting with ``reason``."""
    from google.cloud import bigquery

    def midnight(day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)

    job = client.query(
        dead_letter_query(table),
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("start", "TIMESTAMP", midnight(start)),
                bigquery.ScalarQueryParameter(
                    "end", "TIMESTAMP", midnight(end + dt.timedelta(days=1))
                ),
                bigquery.ScalarQueryParameter("reason", "STRING", reason),
            ]
        ),
    )
    for row in job.result(timeout=QUERY_TIMEOUT_S):
        record: dict[str, Any] = dict(row)
        yield DeadLetter(**record)


class _QueryFn(beam.DoFn):
    def __init__(self, table: str, start: dt.date, end: dt.date, reason: str):
        self._query = (table, start, end, reason)

    def process(self, _) -> Iterator[DeadLetter]:
        from pipelines.io.sinks.gcp.bigquery import bigquery_client

        table = self._query[0]
        yield from query_dead_letters(bigquery_client(split_table(table)[0]), *self._query)


class ReadDeadLetterTable(beam.PTransform):
    """Reads the dead letters of a date range and reason prefix from the BigQuery table.

    Args:
      table: ``PROJECT.DATASET.TABLE`` (``--dead_letter_table``).
      start, end: failure dates, inclusive (UTC).
      reason: a reason or a prefix of reasons.

    Output: PCollection[DeadLetter], bounded (one query when the pipeline runs).
    """

    def __init__(self, table: str, start: dt.date, end: dt.date, reason: str):
        super().__init__()
        split_table(table)
        if end < start:
            raise ValueError("end is before start")
        self._args = (table, start, end, reason)

    def expand(self, pipeline):
        return (
            pipeline
            | "Once" >> beam.Create([None])
            | "Query" >> beam.ParDo(_QueryFn(*self._args)).with_output_types(DeadLetter)
        )
