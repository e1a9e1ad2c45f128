"""The Pub/Sub dead-letter topic (``DeadLetterTopicSink``), and the process's publisher client."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from functools import cache

from pipelines.io.sinks.batches import BatchSink, record_json
from pipelines.io.sources.pubsub import is_topic_path
from transforms.deadletter import storable_dead_letter
from transforms.elements import DeadLetter

__all__ = ["PUBLISH_TIMEOUT_S", "DeadLetterTopicSink", "publisher_client"]

PUBLISH_TIMEOUT_S = 60.0


@cache
def publisher_client():
    """One publisher per process (thread-safe; honours PUBSUB_EMULATOR_HOST), batching up to
    500 messages or 50 ms."""
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_latency=0.05)
    )


# --- the dead-letter topic -----------------------------------------------------------------


class DeadLetterTopicSink(BatchSink):
    """Publishes ``DeadLetter`` records to a topic (JSON body; attributes ``dead_letter_id``,
    ``reason``, ``step``, so subscribers can filter and dedupe). Exhausted retries fail the
    bundle (there is nowhere further to send a dead letter); a redelivered copy has the same
    ``dead_letter_id``."""

    name = "pubsub"
    step = "publish_dead_letters"
    id_field = "dead_letter_id"
    dead_letter_failures = False

    def __init__(self, topic: str):
        if not is_topic_path(topic):
            raise ValueError(f"not a topic path: {topic!r}")
        self._topic = topic

    def setup(self) -> None:
        self._publisher = publisher_client()

    def write(self, batch: Sequence[DeadLetter]) -> None:
        # The storable form (valid Unicode attributes): a dead letter has nowhere further to
        # go, so one that cannot be published as it is goes as the files store it.
        letters = [storable_dead_letter(letter) for letter in batch]
        futures = [
            self._publisher.publish(
                self._topic,
                record_json(letter).encode("utf-8"),
                dead_letter_id=letter.dead_letter_id,
                reason=letter.reason,
                step=letter.step,
            )
            for letter in letters
        ]
        for future in futures:
            future.result(timeout=PUBLISH_TIMEOUT_S)

    def is_transient(self, error: Exception) -> bool:
        from google.api_core import exceptions as api_exceptions

        return isinstance(
            error,
            api_exceptions.GoogleAPICallError
            | api_exceptions.RetryError
            | concurrent.futures.TimeoutError
            | TimeoutError
            | ConnectionError,
        )
