"""Appends to BigQuery through the Storage Write API (``BigQueryWriteClient.append_rows``).

What the audit log and the dead-letter table use instead of legacy streaming inserts
(``insertAll``): cheaper per GB, higher throughput, and row-level errors. (Beam's
``WriteToBigQuery(method=STORAGE_WRITE_API)`` is a Java cross-language transform that needs an
expansion service; the client's append is plain Python and runs on every runner.)

Rows go to the table's default stream as protocol buffers whose descriptor is derived from the
table's BigQuery schema, itself derived from the Avro contract (``proto_descriptor``):
STRING, INT64, FLOAT64, BOOL, BYTES as themselves, TIMESTAMP as int64 µs since the epoch, DATE
as int32 days, RECORD as a nested message, REPEATED as a repeated field; every field proto2
``optional`` (REQUIRED columns are checked by BigQuery).

Guarantee: at least once. The default stream has no offsets, so a request retried after a lost
response can append its rows twice; readers dedupe by the row's id (``audit_log_unique``,
``dead_letter_id``). Errors: a request the service fails as a whole raises (``AppendFailed``,
transient or not by its status code); rows it refuses one by one (``row_errors``: a value the
column cannot take) are left out, the rest of the request is appended again at once, and
``append_rows`` returns the refused rows' positions for the caller to dead-letter.

Client: one per process. Application Default Credentials; with ``BIGQUERY_EMULATOR_GRPC_HOST``
set (the local stack's bqemulator), an insecure channel to it instead, and the process's
BigQuery writes take turns (``emulator_serialized``): bqemulator 1.4.0 deadlocks when an append
meets a DML statement (the metrics MERGE) or a DDL one. Against BigQuery nothing is serialised.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Sequence
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2

__all__ = [
    "EMULATOR_VARIABLE",
    "AppendFailed",
    "RowEncoder",
    "append_rows",
    "default_stream",
    "emulator_serialized",
    "proto_descriptor",
    "write_client",
]

EMULATOR_VARIABLE = "BIGQUERY_EMULATOR_GRPC_HOST"
# AppendRows takes requests of up to 10 MB; stay well below with the schema and framing.
MAX_REQUEST_BYTES = 8 * 1024 * 1024
REQUEST_TIMEOUT_S = 30.0
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE = dt.date(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)
# google.rpc.Code values a later attempt may not meet.
_UNAVAILABLE = 14
_TRANSIENT_CODES = frozenset({4, 8, 10, 13, _UNAVAILABLE})  # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
# ABORTED, INTERNAL, UNAVAILABLE
_F = descriptor_pb2.FieldDescriptorProto
_PROTO_TYPES = {
    "STRING": _F.TYPE_STRING,
    "INT64": _F.TYPE_INT64,
    "FLOAT64": _F.TYPE_DOUBLE,
    "BOOL": _F.TYPE_BOOL,
    "BYTES": _F.TYPE_BYTES,
    "TIMESTAMP": _F.TYPE_INT64,
    "DATE": _F.TYPE_INT32,
}


class AppendFailed(Exception):
    """The service failed an append request as a whole (``code``: its google.rpc.Code).
    The message is the code's only: the service's own message may quote row values."""

    def __init__(self, code: int):
        super().__init__(f"append failed with status code {code}")
        self.code = code

    @property
    def transient(self) -> bool:
        return self.code in _TRANSIENT_CODES


def _message(
    name: str, fields: Sequence[dict[str, Any]], path: str
) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    for number, field in enumerate(fields, start=1):
        proto = message.field.add(name=field["name"], number=number)
        proto.label = _F.LABEL_REPEATED if field["mode"] == "REPEATED" else _F.LABEL_OPTIONAL
        if field["type"] == "RECORD":
            nested_name = f"{field['name'].title().replace('_', '')}Entry{number}"
            message.nested_type.append(
                _message(nested_name, field["fields"], f"{path}.{nested_name}")
            )
            proto.type = _F.TYPE_MESSAGE
            proto.type_name = f"{path}.{nested_name}"
        else:
            proto.type = _PROTO_TYPES[field["type"]]
    return message


def proto_descriptor(
    fields: Sequence[dict[str, Any]], name: str = "Row"
) -> descriptor_pb2.DescriptorProto:
    """The self-contained proto2 descriptor of rows of a table with BigQuery schema ``fields``
    (nested records as nested types, referenced by full name: what the Write API takes)."""
    return _message(name, fields, f".{name}")


class RowEncoder:
    """Serialises row dicts (``to_record`` shape: datetimes, dates, maps as key/value lists)
    into the messages of ``proto_descriptor(fields)``. Built once per schema and process."""

    def __init__(self, fields: Sequence[dict[str, Any]], name: str = "Row"):
        from google.protobuf import descriptor_pool, message_factory

        self.fields = tuple(fields)
        self.descriptor = proto_descriptor(fields, name)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(
            descriptor_pb2.FileDescriptorProto(
                name=f"{name}.proto", syntax="proto2", message_type=[self.descriptor]
            )
        )
        self._class = message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    def encode(self, row: dict[str, Any]) -> bytes:
        message = self._class()
        _fill(message, self.fields, row)
        return message.SerializeToString()


def _value(field: dict[str, Any], value: Any) -> Any:
    kind = field["type"]
    if kind == "TIMESTAMP":
        return (value - _EPOCH) // _MICROSECOND
    if kind == "DATE":
        return (value - _EPOCH_DATE).days
    if kind == "FLOAT64":
        return float(value)
    return value


def _fill(message: Any, fields: Sequence[dict[str, Any]], row: dict[str, Any]) -> None:
    for field in fields:
        value = row.get(field["name"])
        if value is None:
            continue
        name = field["name"]
        if field["type"] == "RECORD":
            items = value if field["mode"] == "REPEATED" else [value]
            if field["mode"] == "REPEATED" and isinstance(value, dict):  # an Avro map
                items = [{"key": k, "value": v} for k, v in sorted(value.items())]
            for item in items:
                child = (
                    getattr(message, name).add()
                    if field["mode"] == "REPEATED"
                    else getattr(message, name)
                )
                _fill(child, field["fields"], item)
        elif field["mode"] == "REPEATED":
            getattr(message, name).extend(_value(field, v) for v in value)
        else:
            setattr(message, name, _value(field, value))


_EMULATOR_LOCK = threading.Lock()


@contextlib.contextmanager
def _across_processes(emulator: str):
    """An exclusive lock shared by every process on this machine that talks to ``emulator``
    (a lock file in the temporary directory, ``flock``: released when the holder exits)."""
    import fcntl
    import re
    import tempfile

    name = re.sub(r"[^A-Za-z0-9]+", "-", emulator)
    with open(os.path.join(tempfile.gettempdir(), f"genai-bqemulator-{name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def emulator_serialized():
    """Against bqemulator (``BIGQUERY_EMULATOR_GRPC_HOST`` set): one BigQuery call at a time,
    across the threads and processes of this machine (the pipeline's writes, and the tests'
    queries, which take it too). bqemulator 1.4.0 flushes an append into its database from a
    gRPC thread while its REST side runs queries, DML and DDL on the same database from its
    event loop, and the two deadlock (seen with an append beside the metrics MERGE, and beside
    a test's SELECT: both sides stop answering). Against BigQuery: nothing, calls run in
    parallel."""
    emulator = os.environ.get(EMULATOR_VARIABLE)
    if not emulator:
        yield
        return
    with _EMULATOR_LOCK, _across_processes(emulator):
        yield


@cache
def write_client():
    """The process's ``BigQueryWriteClient`` (thread-safe)."""
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

    emulator = os.environ.get(EMULATOR_VARIABLE)
    if not emulator:
        return BigQueryWriteClient()
    import grpc
    from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
        BigQueryWriteGrpcTransport,
    )

    return BigQueryWriteClient(
        transport=BigQueryWriteGrpcTransport(channel=grpc.insecure_channel(emulator))
    )


def default_stream(table: str) -> str:
    """The default stream of ``PROJECT.DATASET.TABLE``."""
    project, dataset, name = table.split(".")
    return f"projects/{project}/datasets/{dataset}/tables/{name}/streams/_default"


def _chunks(rows: Sequence[bytes]):
    """``rows`` in consecutive chunks of at most ``MAX_REQUEST_BYTES``."""
    chunk: list[bytes] = []
    size = 0
    for row in rows:
        if chunk and size + len(row) > MAX_REQUEST_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += len(row) + 4
    if chunk:
        yield chunk


def _append(client, stream: str, encoder: RowEncoder, rows: list[bytes]) -> list[int]:
    """One request (per size chunk): the positions of refused rows, or raises."""
    from google.cloud.bigquery_storage_v1 import types

    # write_stream and the schema go on every request: the emulator needs the stream on each
    # (BigQuery itself only on the first), and each request here is one stream call.
    request = types.AppendRowsRequest(
        write_stream=stream,
        proto_rows=types.AppendRowsRequest.ProtoData(
            writer_schema=types.ProtoSchema(proto_descriptor=encoder.descriptor),
            rows=types.ProtoRows(serialized_rows=rows),
        ),
    )
    # retry=None: the client's default retries an unavailable service for up to a day, which
    # held a writer through a whole BigQuery outage; the sink's bounded retries decide.
    responses = list(client.append_rows(iter([request]), retry=None, timeout=REQUEST_TIMEOUT_S))
    if len(responses) != 1:
        raise AppendFailed(_UNAVAILABLE)  # the stream ended without its answer: try again
    (response,) = responses
    if response.row_errors:
        return sorted({error.index for error in response.row_errors})
    if response.error.code:
        raise AppendFailed(response.error.code)
    return []


def append_rows(
    table: str, encoder: RowEncoder, rows: Sequence[dict[str, Any]], client=None
) -> list[int]:
    """Appends ``rows`` to ``PROJECT.DATASET.TABLE``; returns the positions (in ``rows``) of
    the rows the service refused, none of which is stored. Raises ``AppendFailed`` or the
    client's exception when a request fails as a whole."""
    client = client or write_client()
    stream = default_stream(table)
    encoded = [encoder.encode(row) for row in rows]
    refused: list[int] = []
    start = 0
    for chunk in _chunks(encoded):
        positions = list(range(start, start + len(chunk)))
        start += len(chunk)
        bad = _append(client, stream, encoder, chunk)
        if bad:
            # BigQuery stored none of the request: append the others again, once.
            refused += [positions[i] for i in bad]
            kept = [row for i, row in enumerate(chunk) if i not in set(bad)]
            if kept and _append(client, stream, encoder, kept):
                raise AppendFailed(3)  # INVALID_ARGUMENT: rows refused on the second try
    return refused
