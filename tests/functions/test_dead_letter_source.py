"""The dead-letter replay's BigQuery source (pipelines/io/sources/bigquery.py) without a
service: one query of the dates' partitions and the reason prefix, rows back as DeadLetter."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import sqlglot

from pipelines.io.sources.bigquery import ReadDeadLetterTable, dead_letter_query, query_dead_letters
from tests.support.sink_factories import dead_letter
from transforms.elements import DeadLetter, to_record


def test_the_query_prunes_to_the_dates_and_filters_the_reason():
    sql = dead_letter_query("my-project.r.dead_letters")
    sqlglot.parse_one(sql, read="bigquery")
    assert "FROM `my-project.r.dead_letters`" in sql
    assert "failed_at >= @start AND failed_at < @end" in sql  # a constant range: partitions
    assert "STARTS_WITH(reason, @reason)" in sql
    for name in DeadLetter._fields:
        assert f"`{name}`" in sql


def test_rows_become_dead_letters_and_the_range_is_inclusive():
    letter = dead_letter(reason="event_time_in_future")
    seen = {}

    def query(sql, job_config):
        seen.update({p.name: p.value for p in job_config.query_parameters})
        return SimpleNamespace(result=lambda timeout: [to_record(letter)])

    got = list(
        query_dead_letters(
            SimpleNamespace(query=query),
            "my-project.r.dead_letters",
            dt.date(2026, 11, 1),
            dt.date(2026, 11, 7),
            "event_time_",
        )
    )
    assert got == [letter]
    assert seen == {
        "start": dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
        "end": dt.datetime(2026, 11, 8, tzinfo=dt.UTC),  # the whole last day
        "reason": "event_time_",
    }


def test_arguments_are_checked_when_the_pipeline_is_built():
    with pytest.raises(ValueError, match=r"PROJECT\.DATASET\.TABLE"):
        ReadDeadLetterTable("d.t", dt.date(2026, 1, 1), dt.date(2026, 1, 2), "x")
    with pytest.raises(ValueError, match="end is before start"):
        ReadDeadLetterTable("my-project.d.t", dt.date(2026, 1, 2), dt.date(2026, 1, 1), "x")
