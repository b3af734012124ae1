"""Reading one partition from an offset to its end, with ``assign()`` (no group membership).

The end is where the broker says it is (``_PARTITION_EOF``, which a ``read_committed`` consumer gets at the
last stable offset), never a snapshot of the high watermark taken beforehand: on a live topic that snapshot can
fall inside a transaction that commits an instant later. The consumer must be created with
``enable.partition.eof`` set.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.errors import AuditSealError

READ_TIMEOUT_S = 60.0


class PartitionReadError(AuditSealError):
    """A partition could not be read to its end within the timeout (broker down, no right to read it)."""


def read_partition(consumer: Consumer, topic: str, partition: int, start: int, *, stop: int | None = None,
                   timeout: float = READ_TIMEOUT_S) -> list[tuple[int, bytes | None, int]]:
    """(offset, value, timestamp ms) of every record of ``topic[partition]`` from ``start`` to its end (or up to
    and including ``stop``). Raises :class:`PartitionReadError` naming the partition if no record or end of
    partition arrives for ``timeout`` seconds, or the broker reports an error."""
    consumer.assign([TopicPartition(topic, partition, start)])
    records: list[tuple[int, bytes | None, int]] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            message = consumer.poll(0.5)
            if message is None:
                if time.monotonic() > deadline:
                    raise PartitionReadError(f"{topic}[{partition}]: not read to its end within {timeout:.0f}s")
                continue
            error = message.error()
            if error:
                if error.code() == KafkaError._PARTITION_EOF:
                    return records
                raise PartitionReadError(f"{topic}[{partition}]: {error.str()}")
            records.append((message.offset(), message.value(), message.timestamp()[1]))
            if stop is not None and message.offset() >= stop:
                return records
    finally:
        consumer.unassign()
