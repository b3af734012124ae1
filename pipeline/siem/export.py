"""``auditseal export``: sealed records as JSON lines (OCSF or the records' own fields), streamed.

Sources, each read partition by partition in offset order (one :class:`PartitionMapper` each):

- ``dir``: a local copy of the archive bucket (``auditseal verify --dir``'s layout);
- ``s3``: the bucket itself, read with the ``AWS_*`` variables (the newest version of each object);
- ``kafka``: ``audit.sealed`` from its oldest retained record to the end it had when the export started,
  ``read_committed``, as the role in the ``AUDITSEAL_*`` variables (``siem``: group ``auditseal-siem-export``,
  nothing committed).

Archive objects are read whole, one at a time (a sink object is a few MB); a record at an offset already
exported from an earlier object of the partition (a sink retry that overlapped) is not exported twice.
``--since`` / ``--until`` keep the documents whose OCSF ``time`` (ms: the event's ``occurred_at``, a
rejection's raw timestamp, a checkpoint's ``issued_at``) is in ``[since, until)``; every record is
still read, since an entry's evidence needs its whole batch.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from pipeline.errors import AuditSealError
from pipeline.siem import ocsf
from pipeline.siem.batches import Document, Lines, mappers

Record = tuple[str, int, int, int | None, bytes]  # topic, partition, offset, timestamp ms, value


class ExportSourceError(AuditSealError):
    """The source of an export cannot be read (a damaged object, a refused read); the message names it."""


@dataclass
class ExportSummary:
    """Counts of one export."""

    read: int = 0
    written: int = 0
    unmapped: int = 0
    unsigned: int = 0
    duplicates_skipped: int = 0
    by_class: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def line(self) -> str:
        """One line for stderr."""
        rate = self.read / self.seconds if self.seconds else 0.0
        return (f"auditseal export: read {self.read} sealed records, wrote {self.written} documents "
                f"({self.unmapped} unmapped, {self.unsigned} without a covering signature, "
                f"{self.duplicates_skipped} overlapping copies skipped) in {self.seconds:.1f} s ({rate:,.0f} records/s)")


def archive_records(source, master_keys=None, on_object: Callable[[str], None] | None = None) -> Iterator[Record]:
    """(topic, partition, offset, None, value) of every archived record of a DirectorySource/BucketSource."""
    from pipeline.archive.encryption import decrypt_object
    from pipeline.archive.layout import Manifest
    from pipeline.verifier.archive import archived_values

    for entry in source.entries():
        if not entry.versions:
            continue
        if on_object is not None:
            on_object(entry.name)
        try:
            data = entry.versions[-1].read()
            if entry.manifest_versions:
                manifest = Manifest.from_bytes(entry.manifest_versions[-1].read(), f"{entry.name}.manifest.json")
                if manifest.encryption is not None:
                    data = decrypt_object(data, entry.name, manifest.encryption, master_keys or {})
            for offset, value in archived_values(data):
                yield entry.key.topic, entry.key.partition, offset, None, value
        except AuditSealError:
            raise
        except Exception as exc:  # fastavro and botocore signal damage and refusals with many types
            raise ExportSourceError(f"{entry.name}: cannot be read ({type(exc).__name__}: {exc}); "
                                    "run auditseal verify on the archive") from exc


def kafka_records(topic: str, settings, group_id: str = "auditseal-siem-export",
                  on_total: Callable[[int], None] | None = None, timeout: float = 30.0) -> Iterator[Record]:
    """Every committed record of ``topic`` from the oldest retained to the end it had at the start."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(settings.client_config(**{
        "group.id": group_id, "enable.auto.commit": False, "isolation.level": "read_committed",
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
    }))
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ExportSourceError(f"topic {topic}: {metadata.error if metadata else 'not found'}")
        ends, starts = {}, []
        for partition in sorted(metadata.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        if on_total is not None:
            on_total(sum(ends[tp.partition] - tp.offset for tp in starts))
        if not starts:
            return
        consumer.assign(starts)
        open_partitions = set(ends)
        while open_partitions:
            for message in consumer.consume(10000, 1.0):
                error = message.error()
                partition = message.partition()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(partition)
                        continue
                    raise ExportSourceError(f"{topic}[{partition}]: {error.str()}")
                if message.offset() >= ends.get(partition, 0):
                    open_partitions.discard(partition)
                    continue
                yield topic, partition, message.offset(), message.timestamp()[1], message.value()
                if message.offset() + 1 >= ends[partition]:
                    open_partitions.discard(partition)
    finally:
        consumer.close()


def export_documents(records: Iterator[Record], out: BinaryIO, *, format: str = "ocsf", since_ms: int | None = None,
                     until_ms: int | None = None, progress: Callable[[int], None] | None = None,
                     product_version: str | None = None) -> ExportSummary:
    """Write one JSON line per sealed record of ``records`` to ``out``; the counts."""
    summary = ExportSummary()
    started = time.perf_counter()
    write, by_class, base_event = out.write, summary.by_class, ocsf.BASE_EVENT
    bounded = since_ms is not None or until_ms is not None
    low = since_ms if since_ms is not None else -(2**63)
    high = until_ms if until_ms is not None else 2**63 - 1
    # whole batches of OCSF events come as one buffer of lines, already filtered and counted by the writer
    new_mapper = mappers(format=format, product_version=product_version,
                         lines=(low, high) if format == "ocsf" else None)
    partitions: dict[tuple[str, int], object] = {}
    last_offset: dict[tuple[str, int], int] = {}

    def emit(documents: list[Document | Lines]) -> None:
        if not documents:
            return
        if format == "ocsf":
            kept = []
            for document in documents:
                if type(document) is Lines:
                    for class_uid, count in document.by_class.items():
                        by_class[class_uid] = by_class.get(class_uid, 0) + count
                    if document.written:
                        write_lines(kept)
                        kept = []
                        write(document.data)
                        summary.written += document.written
                    continue
                class_uid = document.class_uid
                by_class[class_uid] = by_class.get(class_uid, 0) + 1
                if class_uid == base_event:
                    summary.unmapped += 1
                elif document.unsigned:
                    summary.unsigned += 1
                if not bounded or low <= document.time < high:
                    kept.append(document.json)
        else:
            kept = [document.json for document in documents]
        write_lines(kept)

    def write_lines(kept: list[bytes]) -> None:
        if kept:
            kept.append(b"")  # the last line's newline, without copying the joined lines again
            write(b"\n".join(kept))
            summary.written += len(kept) - 1

    pending = read = 0
    # the mapper and last offset of the partition being read, looked up again only when the partition changes
    # (archives are read partition by partition; Kafka hands over runs of one partition)
    current: tuple[str, int] | None = None
    add, last = None, -1
    for topic, partition, offset, timestamp_ms, value in records:
        if current is None or partition != current[1] or topic != current[0]:
            if current is not None:
                last_offset[current] = last
            current = (topic, partition)
            mapper = partitions.get(current)
            if mapper is None:
                mapper = partitions[current] = new_mapper(topic, partition)
            add, last = mapper.add, last_offset.get(current, -1)
        if offset <= last:
            summary.duplicates_skipped += 1
            continue
        last = offset
        read += 1
        released = add(offset, value, timestamp_ms)
        if released:
            emit(released)
        if progress is not None:
            pending += 1
            if pending >= 1000:
                progress(pending)
                pending = 0
    summary.read = read
    for mapper in partitions.values():
        emit(mapper.flush())
    if progress is not None and pending:
        progress(pending)
    summary.seconds = time.perf_counter() - started
    return summary


def open_output(path: str | None) -> BinaryIO:
    """The binary stream to write to: a file (created with mode 0640), or stdout for None or ``-``."""
    if path in (None, "-"):
        return sys.stdout.buffer
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    return os.fdopen(descriptor, "wb", buffering=1 << 20)
