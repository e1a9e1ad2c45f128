"""The Storage Write API appends (pipelines/io/sinks/gcp/write_api.py) and the sinks on them,
without a service: descriptors from the contract, rows that decode back to what was sent,
request sizes, and rows refused one by one becoming dead letters while the rest is stored.
Against bqemulator: tests/integration/test_gcp_sinks.py."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from google.protobuf import descriptor_pb2

from pipelines.io.sinks import batches
from pipelines.io.sinks.batches import SinkRetry, WriteInBatches, _WriteBatchesFn
from pipelines.io.sinks.gcp import bigquery, dead_letter_table, write_api
from pipelines.io.sinks.gcp.write_api import AppendFailed, RowEncoder, append_rows
from schemas.contract import bigquery_schema
from tests.support.sink_factories import audit_record, dead_letter
from transforms.elements import to_record

F = descriptor_pb2.FieldDescriptorProto


def test_descriptor_follows_the_bigquery_schema():
    descriptor = write_api.proto_descriptor(bigquery_schema("audit_record"), "AuditRecord")
    fields = {f.name: f for f in descriptor.field}
    assert list(fields) == [f["name"] for f in bigquery_schema("audit_record")]
    assert fields["recorded_at"].type == F.TYPE_INT64  # TIMESTAMP: µs since the epoch
    assert fields["audit_id"].type == F.TYPE_STRING
    counts = fields["redaction_counts"]
    assert (counts.label, counts.type) == (F.LABEL_REPEATED, F.TYPE_MESSAGE)
    (entry,) = descriptor.nested_type
    assert counts.type_name == f".AuditRecord.{entry.name}"
    assert [f.name for f in entry.field] == ["key", "value"]


def _decoded(encoder: RowEncoder, data: bytes):
    message = encoder._class()
    message.ParseFromString(data)
    return message


def test_rows_decode_back_to_what_was_sent():
    record = audit_record(redaction_counts={"PHONE_NUMBER": 1, "EMAIL_ADDRESS": 2}, reason=None)
    encoder = RowEncoder(bigquery_schema("audit_record"), "AuditRecord")
    message = _decoded(encoder, encoder.encode(to_record(record)))
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert message.recorded_at == (record.recorded_at - epoch) // dt.timedelta(microseconds=1)
    assert [(e.key, e.value) for e in message.redaction_counts] == [
        ("EMAIL_ADDRESS", 2),
        ("PHONE_NUMBER", 1),
    ]
    assert not message.HasField("reason")  # NULL, not an empty string
    assert message.audit_id == record.audit_id
    letter = dead_letter(payload=None, payload_state="omitted")
    encoder = RowEncoder(bigquery_schema("dead_letter"), "DeadLetter")
    decoded = _decoded(encoder, encoder.encode(to_record(letter)))
    assert not decoded.HasField("payload") and decoded.payload_bytes == letter.payload_bytes


class _FakeWriteClient:
    """Answers append_rows like the service: the rows at ``refuse`` (by their audit_id) make
    the whole request fail with row errors; otherwise the rows are stored. ``retry`` has no
    default, so a call that leaves the client's own retries on fails here."""

    def __init__(self, encoder: RowEncoder, refuse=(), error_code=0):
        self.encoder, self.refuse, self.error_code = encoder, set(refuse), error_code
        self.requests, self.stored, self.retries = [], [], []

    def append_rows(self, requests, *, retry, timeout):
        self.retries.append(retry)
        (request,) = list(requests)
        rows = [_decoded(self.encoder, r) for r in request.proto_rows.rows.serialized_rows]
        self.requests.append((request.write_stream, len(rows)))
        bad = [i for i, row in enumerate(rows) if row.audit_id in self.refuse]
        if bad:
            return iter([SimpleNamespace(row_errors=[SimpleNamespace(index=i) for i in bad])])
        if self.error_code:
            return iter(
                [SimpleNamespace(row_errors=[], error=SimpleNamespace(code=self.error_code))]
            )
        self.stored += [row.audit_id for row in rows]
        return iter([SimpleNamespace(row_errors=[], error=SimpleNamespace(code=0))])


def test_refused_rows_are_returned_and_the_rest_stored():
    encoder = RowEncoder(bigquery_schema("audit_record"), "AuditRecord")
    records = [audit_record(event_id=f"e{i}") for i in range(5)]
    client = _FakeWriteClient(encoder, refuse={records[1].audit_id, records[3].audit_id})
    refused = append_rows("p.d.audit_log", encoder, [to_record(r) for r in records], client)
    assert refused == [1, 3]
    assert client.stored == [records[i].audit_id for i in (0, 2, 4)]
    stream = "projects/p/datasets/d/tables/audit_log/streams/_default"
    assert client.requests == [(stream, 5), (stream, 3)]  # then the rows not refused, again


def test_a_request_failed_as_a_whole_raises_with_its_code_only():
    encoder = RowEncoder(bigquery_schema("audit_record"), "AuditRecord")
    client = _FakeWriteClient(encoder, error_code=14)
    with pytest.raises(AppendFailed) as caught:
        append_rows("p.d.t", encoder, [to_record(audit_record())], client)
    assert caught.value.transient and str(caught.value) == "append failed with status code 14"
    # UNAVAILABLE reaches the sink at once: the client's own retries (which wait out an outage
    # for up to a day by default) are off, so the sink's bounded backoff decides.
    assert client.retries == [None]


def test_a_stream_that_ends_without_an_answer_is_a_transient_failure():
    class _Silent:
        def append_rows(self, requests, *, retry, timeout):
            list(requests)
            return iter([])

    encoder = RowEncoder(bigquery_schema("audit_record"), "AuditRecord")
    with pytest.raises(AppendFailed) as caught:
        append_rows("p.d.t", encoder, [to_record(audit_record())], _Silent())
    assert caught.value.transient  # retried by the sink, not a failed bundle


def test_large_batches_are_split_below_the_request_limit(monkeypatch):
    encoder = RowEncoder(bigquery_schema("audit_record"), "AuditRecord")
    client = _FakeWriteClient(encoder)
    monkeypatch.setattr(write_api, "MAX_REQUEST_BYTES", 1000)
    records = [audit_record(event_id=f"e{i}") for i in range(20)]
    assert append_rows("p.d.t", encoder, [to_record(r) for r in records], client) == []
    assert len(client.requests) > 1 and sum(n for _, n in client.requests) == 20
    assert client.stored == [r.audit_id for r in records]


def test_emulator_channel_only_with_the_variable(monkeypatch):
    write_api.write_client.cache_clear()
    monkeypatch.setenv(write_api.EMULATOR_VARIABLE, "127.0.0.1:1")
    try:
        client = write_api.write_client()
        assert "127.0.0.1:1" in repr(client._transport._grpc_channel._channel.target())
    finally:
        write_api.write_client.cache_clear()


def test_audit_sink_dead_letters_only_the_refused_rows(monkeypatch):
    records = [audit_record(event_id=f"e{i}") for i in range(4)]
    encoder = bigquery._audit_encoder()
    client = _FakeWriteClient(encoder, refuse={records[2].audit_id})
    monkeypatch.setattr(write_api, "write_client", lambda: client)
    monkeypatch.setattr(bigquery, "_ensure_objects", lambda client, dataset: None)
    monkeypatch.setattr(bigquery, "bigquery_client", lambda project: None)
    fn = _WriteBatchesFn(bigquery.AuditAppendSink("p.d"), SinkRetry(1, 0, 0), 500, True)
    fn.setup()
    letters = list(fn.process((0, records)))
    assert [letter.reason for letter in letters] == ["sink_failed:bigquery"]
    assert letters[0].error_type == "RowsRefused"
    assert records[2].audit_id in letters[0].payload
    assert client.stored == [records[i].audit_id for i in (0, 1, 3)]


def test_dead_letter_table_definition_matches_the_contract():
    table = dead_letter_table.dead_letter_table("my-project.restricted.dead_letters")
    assert [f.name for f in table.schema] == [f["name"] for f in bigquery_schema("dead_letter")]
    assert table.time_partitioning.field == "failed_at"
    assert table.time_partitioning.expiration_ms == 30 * 86_400_000
    assert table.clustering_fields == ["reason", "step"]
    for bad in ("my-project.d", "my-project.d.t.x", "My-Project.d.t", "p.d.t", ""):
        with pytest.raises(ValueError):
            dead_letter_table.split_table(bad)
    sink = dead_letter_table.DeadLetterTableSink("my-project.genai_restricted.dead_letters")
    assert not sink.dead_letter_failures  # nowhere further to send them: fail the bundle


def test_write_in_batches_takes_the_dead_letter_table_sink():
    sink = dead_letter_table.DeadLetterTableSink("my-project.d.dead_letters")
    assert WriteInBatches(sink)._dead_letter_failures is False
    assert issubclass(batches.RowsRefused, Exception)
