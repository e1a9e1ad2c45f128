"""Avro file sinks for the raw archive (``WriteRawEvents``) and dead letters (``WriteDeadLetters``),
(the reader of both is ``pipelines.io.sources.avro.ReadAvroRecords``).

Both are the same private writer, ``_WriteAvroPartitions``, with a different partition function:

  ``{output_root}/raw/event_date=YYYY-MM-DD/region=<region>/part-<hash>.avro`` (``RedactedEvent``)
  ``{output_root}/dead_letter/dt=YYYY-MM-DD/part-<hash>.avro`` (``DeadLetter``, dt = failed_at)

Format: Avro object container files, snappy codec, written with fastavro against the contract
schema (``schemas/avro``), so a file either matches the contract or is not written. Partition
values are URL-quoted (Hive style), so input data cannot add path segments.

Writes go through ``FileSystems.create``, so the same code writes to a local directory or to
``gs://``. A file name is the hash of the sorted record ids it holds and its Avro sync marker is
derived from the same hash, so a retried bundle rewrites the same bytes to the same object instead
of adding a duplicate file. Locally a file is written under a hidden temporary name and renamed
into place (readers never see half a file); on GCS an object only appears when its upload closes.

Delivery: every input element is written (at least once, idempotent per group). Nothing is
dropped for lateness: see ``pipelines.io.sinks.batches.batch_windowing``. A failed write fails
the bundle, or, on the Google Cloud path, is retried with backoff and then dead-lettered
(``WriteRawEvents``).

Encoding is done in memory before anything is written, so a record fastavro cannot encode never
leaves half a file. Such a record (a value outside its Avro type: a long beyond int64, a text
UTF-8 cannot encode) is isolated: the group is encoded record by record, only the culprits are
taken out and the rest is written. An archived event taken out becomes a dead letter
``internal_error:write_redacted_event`` (``WriteRawEvents``' ``dead_letters``); a dead letter taken
out is stored in its storable form (``transforms.deadletter.storable_dead_letter``), since dead
letters have nowhere further to go.

Length (over 600 lines): the two archive writers share their encoder, file naming and retry
handling; one module keeps the archive's file layout defined in one place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import fastavro
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.io.sinks.batches import SinkRetry, batch_windowing, sink_dead_letters
from pipelines.io.sinks.commits import notify_committed
from pipelines.io.sinks.retry import retry_conflicts
from schemas.contract import parsed_schema
from transforms.deadletter import (
    DEAD_LETTER_TAG,
    count_dead_letter,
    internal_error_of,
    is_element_error,
    storable_dead_letter,
)
from transforms.elements import DeadLetter, EventBatch, RedactedEvent, to_record
from transforms.windowing import in_global_window

__all__ = [
    "ArchiveOutputs",
    "EncodedFile",
    "WriteDeadLetters",
    "WriteRawEvents",
    "avro_record",
    "encode_avro_files",
    "partition_value",
    "write_avro_files",
]

_LOGGER = logging.getLogger(__name__)

# snappy (through cramjam, a dependency): Avro's usual codec, read by BigQuery, Spark and Beam.
# Measured here on redacted events: ~30 µs per record to write against ~70 for deflate, for
# files ~1.5x larger; at the design's peak rate the codec is a visible share of the CPU.
AVRO_CODEC = "snappy"
_NAME_HASH_HEX_CHARS = 32  # 128 bits: collisions between different groups are not a concern.
_SYNC_MARKER_BYTES = 16  # Avro's sync marker size.

DEFAULT_MAX_RECORDS = 10_000
DEFAULT_FLUSH_S = 60
DEFAULT_NUM_SHARDS = 4
_DEAD_LETTER_SCHEMA = "dead_letter"

FileWritten = tuple[str, int]
"""What the writers output per file: (path, record_count)."""


# --- plain functions -----------------------------------------------------------------------


def partition_value(value: str) -> str:
    # Hive-style escaping: "/" becomes %2F, so a region can never add or climb a directory.
    # A lone surrogate is escaped as its bytes rather than failing here: the record itself
    # cannot be encoded, and the writer takes it out (see the module docstring).
    return urllib.parse.quote(value, safe="", errors="surrogatepass")


def raw_event_directory(event: RedactedEvent) -> str:
    """Returns the archive partition of ``event``, relative to the output root."""
    return f"raw/event_date={event.event_date.isoformat()}/region={partition_value(event.region)}"


def dead_letter_directory(dead_letter: DeadLetter) -> str:
    """Returns the dead-letter partition of ``dead_letter`` (UTC date of failed_at)."""
    failed_on = dead_letter.failed_at.astimezone(dt.UTC).date()
    return f"dead_letter/dt={failed_on.isoformat()}"


def shard_of(record_id: str, num_shards: int) -> int:
    """Returns a shard in ``[0, num_shards)`` that is the same in every process (unlike hash())."""
    return zlib.crc32(record_id.encode("utf-8", "surrogatepass")) % num_shards


def _ids_digest(record_ids: Sequence[str]) -> bytes:
    return hashlib.sha256("\n".join(sorted(record_ids)).encode("utf-8", "surrogatepass")).digest()


def _part_file_name(digest: bytes) -> str:
    return f"part-{digest.hex()[:_NAME_HASH_HEX_CHARS]}.avro"


def avro_record(element: NamedTuple) -> dict[str, Any]:
    """``element`` as the dict fastavro writes: ``to_record``, without copying each tuple into a
    list. fastavro writes any sequence as an Avro array, byte for byte the same (a test checks
    it), so a flat record (the archive's and the dead letters') is its ``_asdict()``: about a
    third of ``to_record``'s cost on a redacted event. A record with nested records, or tuples
    of them, goes through ``to_record``."""
    for value in element:
        if (
            isinstance(value, tuple)
            and value
            and (hasattr(value, "_fields") or hasattr(value[0], "_fields"))
        ):
            return to_record(element)
    return element._asdict()


def _is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) in (None, "file")


class EncodedFile(NamedTuple):
    """One Avro file, encoded: its name (``part-<hash>.avro``), bytes and record count."""

    name: str
    data: bytes
    count: int


def _encode_file(records: Sequence[dict[str, Any]], schema: Any, sync: bytes) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, schema, records, codec=AVRO_CODEC, sync_marker=sync, strict=True)
    return out.getvalue()


def _unencodable(records: Sequence[dict[str, Any]], schema: Any) -> dict[int, Exception]:
    """The records of ``records`` fastavro cannot encode, by position, with the error."""
    bad: dict[int, Exception] = {}
    for position, record in enumerate(records):
        try:
            fastavro.schemaless_writer(io.BytesIO(), schema, record, strict=True)
        except Exception as error:
            if not is_element_error(error):
                raise
            bad[position] = error
    return bad


def encode_avro_files(
    records: Sequence[dict[str, Any]],
    *,
    schema_name: str,
    id_field: str,
    max_records: int,
) -> tuple[list[EncodedFile], dict[int, Exception]]:
    """Encodes ``records`` (Avro-ready dicts) as files of at most ``max_records``, in memory.

    Records are sorted by ``id_field`` (stable, so equal ids keep their order) and cut into
    chunks, so the same records always give the same files and names. Returns the files, in
    id order of the chunks, and the records that could not be encoded (position in
    ``records`` -> error): a chunk that fails is encoded record by record, and only the
    records that fail alone are left out of it (the file then holds the others, under the
    name of their ids). An error no single record causes is raised.
    """
    order = sorted(range(len(records)), key=lambda i: records[i][id_field])
    schema = parsed_schema(schema_name)
    files: list[EncodedFile] = []
    rejected: dict[int, Exception] = {}
    for start in range(0, len(order), max_records):
        positions = order[start : start + max_records]
        chunk = [records[i] for i in positions]
        try:
            files.append(_encoded(chunk, schema, id_field))
        except Exception as error:
            if not is_element_error(error):
                raise
            bad = _unencodable(chunk, schema)
            if not bad:
                raise
            rejected.update({positions[i]: e for i, e in bad.items()})
            kept = [record for i, record in enumerate(chunk) if i not in bad]
            if kept:
                files.append(_encoded(kept, schema, id_field))
    return files, rejected


def _encoded(chunk: Sequence[dict[str, Any]], schema: Any, id_field: str) -> EncodedFile:
    digest = _ids_digest([r[id_field] for r in chunk])
    data = _encode_file(chunk, schema, digest[:_SYNC_MARKER_BYTES])
    return EncodedFile(_part_file_name(digest), data, len(chunk))


def _write_file(path: str, data: bytes) -> None:
    directory, name = FileSystems.split(path)
    # Locally, write under a hidden unique name and rename (atomic) so a concurrent reader or a
    # crashed attempt never leaves half a file under the final name. On GCS the upload is only
    # visible once closed, and a rename would be a copy plus a delete, so write in place.
    target = (
        FileSystems.join(directory, f".{name}.tmp-{uuid.uuid4().hex}") if _is_local(path) else path
    )
    try:
        with FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            out.write(data)
        if target != path:
            FileSystems.rename([target], [path])
    except BaseException:
        if target != path and FileSystems.exists(target):
            FileSystems.delete([target])  # no stray temporary file after a failed attempt
        raise


def write_encoded_files(directory: str, files: Sequence[EncodedFile]) -> list[FileWritten]:
    """Writes encoded files into ``directory``; returns (path, count) per file."""
    written: list[FileWritten] = []
    for file in files:
        path = FileSystems.join(directory, file.name)
        _write_file(path, file.data)
        written.append((path, file.count))
    return written


def write_avro_files(
    directory: str,
    records: Iterable[dict[str, Any]],
    *,
    schema_name: str,
    id_field: str,
    max_records: int,
) -> list[FileWritten]:
    """Writes ``records`` (Avro-ready dicts) as files of at most ``max_records`` in ``directory``
    (``encode_avro_files``); returns (path, count) per file, in id order of the chunks.

    Raises:
        ValueError: a record cannot be encoded (nothing is written then).
    """
    files, rejected = encode_avro_files(
        list(records), schema_name=schema_name, id_field=id_field, max_records=max_records
    )
    if rejected:
        raise ValueError(f"{len(rejected)} record(s) do not match the schema {schema_name}")
    return write_encoded_files(directory, files)


# --- Beam adapters -------------------------------------------------------------------------


def _key_by_destination(
    element: Any, directory_fn: Callable[[Any], str], id_field: str, num_shards: int
) -> tuple[tuple[str, int], Any]:
    return (directory_fn(element), shard_of(getattr(element, id_field), num_shards)), element


def _is_storage_error(error: Exception) -> bool:
    """Errors a later write attempt may not meet: I/O, connection and service errors."""
    from google.api_core import exceptions as api_exceptions

    return isinstance(error, OSError | api_exceptions.GoogleAPICallError)


class _WriteAvroFilesFn(beam.DoFn):
    """Writes one group (a destination and shard) as one or more Avro files.

    Records that cannot be encoded are taken out first (see the module docstring): archived
    events become ``internal_error:write_<schema>`` dead letters on the ``DEAD_LETTER_TAG``
    output, dead letters are stored in their storable form. Without ``retry`` a failed write
    fails the bundle. With it, storage errors are retried with backoff; a group that still
    fails fails the bundle, or with ``dead_letter_failures`` becomes dead letters
    (``sink_failed:gcs``) on the ``DEAD_LETTER_TAG`` output.
    """

    def __init__(
        self,
        output_root: str,
        schema_name: str,
        id_field: str,
        max_records: int,
        retry: SinkRetry | None = None,
        dead_letter_failures: bool = False,
    ):
        self._output_root = output_root
        self._schema_name = schema_name
        self._id_field = id_field
        self._max_records = max_records
        self._retry = retry
        self._dead_letter_failures = dead_letter_failures
        self._files = beam.metrics.Metrics.counter(__name__, f"{schema_name}_files_written")
        self._records = beam.metrics.Metrics.counter(__name__, f"{schema_name}_records_written")
        self._failed_attempts = beam.metrics.Metrics.counter(
            __name__, f"{schema_name}_failed_write_attempts"
        )
        self._taken_out = beam.metrics.Metrics.counter(
            __name__, f"{schema_name}_records_not_encodable"
        )

    def setup(self) -> None:
        parsed_schema(self._schema_name)  # Fail on a broken contract before the first write.

    def _encode(self, elements: Sequence[Any]) -> tuple[list[EncodedFile], dict[int, Exception]]:
        return encode_avro_files(
            [avro_record(e) for e in elements],
            schema_name=self._schema_name,
            id_field=self._id_field,
            max_records=self._max_records,
        )

    def _note_failure(self) -> None:
        self._failed_attempts.inc()
        _LOGGER.warning("%s: write attempt failed; retrying", self._schema_name)

    def process(self, element: tuple[tuple[str, int], Iterable[Any] | EventBatch]):
        (directory, _shard), grouped = element
        elements = list(grouped.events if isinstance(grouped, EventBatch) else grouped)
        files, rejected = self._encode(elements)
        if rejected:
            self._taken_out.inc(len(rejected))
            if self._schema_name == _DEAD_LETTER_SCHEMA:
                # Dead letters have nowhere further to go: store what can be stored of them.
                elements = [
                    storable_dead_letter(e) if i in rejected else e for i, e in enumerate(elements)
                ]
                files, still = self._encode(elements)
                if still:  # even the storable form: a bug in the record, not in its values
                    raise next(iter(still.values()))
            else:
                for i, error in rejected.items():
                    letter = internal_error_of(f"write_{self._schema_name}", elements[i], error)
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
                elements = [e for i, e in enumerate(elements) if i not in rejected]
        target = FileSystems.join(self._output_root, directory)
        if self._retry is None:
            written = write_encoded_files(target, files)
        else:
            try:
                written = retry_conflicts(
                    lambda: write_encoded_files(target, files),
                    is_conflict=_is_storage_error,
                    max_attempts=self._retry.max_attempts,
                    first_backoff_s=self._retry.first_backoff_s,
                    max_backoff_s=self._retry.max_backoff_s,
                    on_retry=self._note_failure,
                )
            except Exception as error:
                if not (self._dead_letter_failures and _is_storage_error(error)):
                    raise
                _LOGGER.error("%s: %d records dead-lettered", self._schema_name, len(elements))
                for letter in sink_dead_letters(
                    elements,
                    sink_name="gcs",
                    step=f"write_{self._schema_name}",
                    error=error,
                    attempts=self._retry.max_attempts,
                    failed_at=dt.datetime.now(dt.UTC),
                ):
                    count_dead_letter(letter.reason)
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER_TAG, letter)
                return
        notify_committed(self._schema_name, elements)
        for path, count in written:
            self._files.inc()
            self._records.inc(count)
            yield path, count


class _WriteAvroPartitions(beam.PTransform):
    """The one generic writer: partition, group, write one object per group (and pane).
    ``batched``: the input elements are batches (``.events``) of records, not records."""

    def __init__(
        self,
        output_root: str,
        *,
        element_type: type,
        schema_name: str,
        id_field: str,
        directory_fn: Callable[[Any], str],
        max_records: int,
        flush_s: int,
        num_shards: int,
        retry: SinkRetry | None = None,
        dead_letter_failures: bool = False,
        batched: bool = False,
    ):
        super().__init__()
        if dead_letter_failures and retry is None:
            raise ValueError("dead_letter_failures needs a retry policy")
        if not output_root:
            raise ValueError("output_root must be a directory or a gs:// prefix")
        if max_records < 1 or flush_s < 1 or num_shards < 1:
            raise ValueError(
                f"need max_records >= 1, flush_s >= 1 and num_shards >= 1; got {max_records}, "
                f"{flush_s}, {num_shards}"
            )
        parsed_schema(schema_name)  # Validate the schema name at construction.
        self._output_root = output_root.rstrip("/")
        self._element_type = element_type
        self._schema_name = schema_name
        self._id_field = id_field
        self._directory_fn = directory_fn
        self._max_records = max_records
        self._flush_s = flush_s
        self._num_shards = num_shards
        self._retry = retry
        self._dead_letter_failures = dead_letter_failures
        self._batched = batched

    def expand(self, pcoll):
        write = beam.ParDo(
            _WriteAvroFilesFn(
                self._output_root,
                self._schema_name,
                self._id_field,
                self._max_records,
                self._retry,
                self._dead_letter_failures,
            )
        ).with_outputs(DEAD_LETTER_TAG, main="files")
        # Batched groups travel as EventBatch (a msgpack coder that estimates its size cheaply);
        # a tuple of records would fall back to pickling each record.
        group_type = tuple[tuple[str, int], EventBatch]
        if self._batched and pcoll.is_bounded:
            # Batch input of batches: each batch's records of one partition become files of
            # their own, with no shuffle. A batch is deterministic (one input chunk or dedupe
            # shard in a backfill), so a re-run writes the same files under the same names.
            return (
                pcoll
                | "SplitByDestination"
                >> beam.FlatMap(_split_batch, self._directory_fn).with_output_types(group_type)
                | "WriteAvroFiles" >> write
            )
        if self._batched:
            keyed = pcoll | "KeyByDestination" >> beam.FlatMap(
                _split_batch_by_shard, self._directory_fn, self._id_field, self._num_shards
            ).with_output_types(group_type)
        else:
            keyed = pcoll | "KeyByDestination" >> beam.Map(
                _key_by_destination, self._directory_fn, self._id_field, self._num_shards
            ).with_output_types(tuple[tuple[str, int], self._element_type])
        # Batch: one pane per key at the end (no re-window step when the input is already in
        # the global window); the writer cuts each group into files of max_records, sorted by
        # id, so a re-run writes the same files. Streaming: a pane per key flush_s of processing
        # time after its first record, cut into files of max_records; nothing is ever dropped
        # for lateness (the trigger is explained in batch_windowing). Keys are (partition,
        # shard): few, so the per-key trigger state stays small.
        if pcoll.is_bounded:
            rewindowed = in_global_window(keyed, "Rewindow")
        else:
            rewindowed = keyed | "Rewindow" >> batch_windowing(True, self._flush_s)
        grouped = rewindowed | "GroupByDestination" >> beam.GroupByKey()
        if self._batched:
            grouped = grouped | "JoinParts" >> beam.MapTuple(_join_parts).with_output_types(
                group_type
            )
        return grouped | "WriteAvroFiles" >> write


def _split_batch(batch: EventBatch, directory_fn: Callable[[Any], str]):
    """((directory, 0), EventBatch) for each partition the records of ``batch`` fall in."""
    parts: dict[str, list[Any]] = {}
    for record in batch.events:
        parts.setdefault(directory_fn(record), []).append(record)
    return [
        ((directory, 0), EventBatch(batch.source, tuple(records)))
        for directory, records in parts.items()
    ]


def _split_batch_by_shard(batch, directory_fn, id_field: str, num_shards: int):
    """((directory, shard), EventBatch) for each partition and shard in ``batch``."""
    parts: dict[tuple[str, int], list[Any]] = {}
    for record in batch.events:
        key = (directory_fn(record), shard_of(getattr(record, id_field), num_shards))
        parts.setdefault(key, []).append(record)
    return [(key, EventBatch(batch.source, tuple(records))) for key, records in parts.items()]


def _join_parts(key, parts: Iterable[EventBatch]) -> tuple[tuple[str, int], EventBatch]:
    # A pane can be empty (see batch_windowing): its batch is empty and writes no file.
    parts = list(parts)
    events = tuple(record for part in parts for record in part.events)
    return key, EventBatch(parts[0].source if parts else "", events)


class ArchiveOutputs(NamedTuple):
    """What ``WriteRawEvents`` returns: ``files``, ``(path, record_count)`` per file written;
    ``dead_letters``, ``DeadLetter`` of the events it could not write (taken out as not
    encodable, or with ``dead_letter_failures`` still failing after the retries)."""

    files: beam.PCollection
    dead_letters: beam.PCollection


class WriteRawEvents(beam.PTransform):
    """Archives redacted events as Avro, partitioned by event date and region.

    Input: PCollection[EventBatch] (the core's ``events``), bounded or unbounded, any windowing
    and timestamps. Output: ``ArchiveOutputs``: ``files``, PCollection[(path, record_count)],
    one element per file written, and ``dead_letters``, PCollection[DeadLetter] of the events
    not written: an event fastavro cannot encode against the contract is taken out of its file
    (``internal_error:write_redacted_event``, the event as payload) and the rest is written.

    Layout: ``{output_root}/raw/event_date=YYYY-MM-DD/region=<region>/part-<hash>.avro``,
    schema ``redacted_event.avsc``, snappy. Unbounded input is flushed per partition and shard
    ``flush_s`` seconds of processing time after its first buffered record, in files of at most
    ``max_records``. Bounded input is written a batch at a time, with no shuffle: each batch's
    records of a partition become files of their own (in a backfill a batch is one chunk of
    the input, or one dedupe shard, so a re-run writes the same files). Late events are never
    dropped. Files are named by the hash of their sorted event ids, so retries overwrite instead
    of duplicating.

    Failures: by default a failed write fails the bundle (the runner retries it). With
    ``retry`` (the Google Cloud path) storage errors are retried with backoff first, and with
    ``dead_letter_failures`` too the records of a group that still fails become dead letters
    (reason ``sink_failed:gcs``, the redacted event as payload) on ``dead_letters``.

    Args:
        output_root: a local directory or a ``gs://bucket/prefix``.
        max_records: most records per file.
        flush_s: processing-time delay after a partition's first buffered record before it is
            written (unbounded input only).
        num_shards: groups per partition, for parallel writes of a busy partition.
        retry: bounded retries of a group's write (None: no retries here).
        dead_letter_failures: dead-letter what still fails instead of failing the bundle.
    """

    def __init__(
        self,
        output_root: str,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        flush_s: int = DEFAULT_FLUSH_S,
        num_shards: int = DEFAULT_NUM_SHARDS,
        retry: SinkRetry | None = None,
        dead_letter_failures: bool = False,
    ):
        super().__init__()
        self._writer = _WriteAvroPartitions(
            output_root,
            element_type=RedactedEvent,
            schema_name="redacted_event",
            id_field="event_id",
            directory_fn=raw_event_directory,
            max_records=max_records,
            flush_s=flush_s,
            num_shards=num_shards,
            retry=retry,
            dead_letter_failures=dead_letter_failures,
            batched=True,
        )

    def expand(self, pcoll) -> ArchiveOutputs:
        outputs = pcoll | "WriteAvroPartitions" >> self._writer
        return ArchiveOutputs(outputs.files, outputs[DEAD_LETTER_TAG])


class WriteDeadLetters(beam.PTransform):
    """Stores ``DeadLetter`` elements as Avro, partitioned by the UTC date of ``failed_at``.

    Input: PCollection[DeadLetter], bounded or unbounded. Output: PCollection[(path,
    record_count)], one element per file. Layout:
    ``{output_root}/dead_letter/dt=YYYY-MM-DD/part-<hash>.avro``, schema ``dead_letter.avsc``.
    The records hold restricted (redacted) payloads: point ``output_root`` at an
    access-restricted location. Same flushing, naming and guarantees as ``WriteRawEvents``
    (files named by the hash of their sorted ``dead_letter_id``; a replayed input has the same id
    and lands in a file of the same name only if the whole group is the same). A record that
    cannot be encoded is stored in its storable form (``storable_dead_letter``: texts made
    valid Unicode, payload omitted), with the same id.

    Args:
        output_root: a local directory or a ``gs://bucket/prefix``.
        max_records: most records per file.
        flush_s: processing-time delay before a partition's buffered records are written.
        num_shards: groups per partition.
        retry: bounded retries of a group's write before the bundle fails (None: none here).
            Dead letters that cannot be stored have nowhere further to go, so the bundle fails
            and the runner retries it.
    """

    def __init__(
        self,
        output_root: str,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        flush_s: int = DEFAULT_FLUSH_S,
        num_shards: int = 1,
        retry: SinkRetry | None = None,
    ):
        super().__init__()
        self._writer = _WriteAvroPartitions(
            output_root,
            element_type=DeadLetter,
            schema_name="dead_letter",
            id_field="dead_letter_id",
            directory_fn=dead_letter_directory,
            max_records=max_records,
            flush_s=flush_s,
            num_shards=num_shards,
            retry=retry,
        )

    def expand(self, pcoll):
        return (pcoll | "WriteAvroPartitions" >> self._writer).files
