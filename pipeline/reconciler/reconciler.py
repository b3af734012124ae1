"""Reading a source topic and its sealed topic side by side, chain by chain (:mod:`pipeline.reconciler.matching`).

The reconciler role may READ both topics and write neither (``config/roles.yaml``); it reads the sealed
topic ``read_committed`` (what consumers see) and, for each new run of entries, the raw records at the
offsets they name. :class:`Reconciler` is used twice: by ``auditseal reconcile``, which keeps going and
publishes a signed attestation per round and an event per mismatch (:func:`run_reconciler`), and by
``auditseal verify --reconcile``, which reconciles a window once and reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError
from pipeline.reconciler.matching import ChainReconciliation, Mismatch, RawRecord, SealedEntry
from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND, chain_id_for, sealed_codecs

log = logging.getLogger(__name__)
READ_TIMEOUT_S = 60.0
GROUP_PREFIX = "auditseal-reconciler"


class ReconcileReadError(AuditSealError):
    """A topic could not be read to its end within the timeout (broker down, no right to read it)."""


@dataclass
class Round:
    """One pass over one chain's new entries."""

    chain_id: str
    sealed_topic: str
    sealed_partition: int
    sealed_first: int
    sealed_last: int
    entries: int
    source_first: int | None
    source_last: int | None
    mismatches: list[Mismatch] = field(default_factory=list)
    unverifiable: int = 0


def read_partition(consumer: Consumer, topic: str, partition: int, start: int, stop: int | None = None,
                   timeout: float = READ_TIMEOUT_S) -> list[tuple[int, bytes | None, int]]:
    """(offset, value, timestamp ms) of every record of ``topic[partition]`` from ``start`` to its end (or up to
    and including ``stop``)."""
    consumer.assign([TopicPartition(topic, partition, start)])
    records = []
    deadline = time.monotonic() + timeout
    while True:
        message = consumer.poll(0.5)
        if message is None:
            if time.monotonic() > deadline:
                raise ReconcileReadError(f"{topic}[{partition}]: not read to its end within {timeout:.0f}s")
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                break
            raise ReconcileReadError(f"{topic}[{partition}]: {message.error().str()}")
        records.append((message.offset(), message.value(), message.timestamp()[1]))
        if stop is not None and message.offset() >= stop:
            break
    consumer.unassign()
    return records


class Reconciler:
    """Every chain of ``source_topic`` (one per partition) checked against ``sealed_topic``, from ``start``
    offsets of the sealed partitions (default: their low watermarks) onwards, round after round."""

    def __init__(self, settings: KafkaSettings, *, source_topic: str, sealed_topic: str,
                 start: dict[int, int] | None = None, group_id: str = GROUP_PREFIX) -> None:
        self.source_topic, self.sealed_topic = source_topic, sealed_topic
        # assign() only, never a group join: librdkafka's coordinator chatter on close (an error line per
        # consumer) says nothing here; a read that fails raises ReconcileReadError naming the partition
        base = {"group.id": group_id, "enable.auto.commit": False, "enable.partition.eof": True,
                "auto.offset.reset": "earliest", "log_level": 2}
        self.sealed = Consumer(settings.client_config(**base, **{"isolation.level": "read_committed"}))
        self.raw = Consumer(settings.client_config(**base))
        metadata = self.sealed.list_topics(sealed_topic, timeout=READ_TIMEOUT_S).topics.get(sealed_topic)
        if metadata is None or metadata.error is not None:
            raise ReconcileReadError(f"{sealed_topic}: {metadata.error.str() if metadata else 'no such topic'}")
        self.positions = {p: (start or {}).get(p) for p in sorted(metadata.partitions)}
        self.chains = {p: ChainReconciliation(chain_id_for(source_topic, p)) for p in self.positions}

    def step(self) -> list[Round]:
        """One round: every sealed partition's records since the last round, compared with the raw records."""
        rounds = []
        for partition, position in self.positions.items():
            if position is None:
                position, _ = self.sealed.get_watermark_offsets(TopicPartition(self.sealed_topic, partition),
                                                                timeout=READ_TIMEOUT_S)
            records = read_partition(self.sealed, self.sealed_topic, partition, position)
            if not records:
                self.positions[partition] = position
                continue
            self.positions[partition] = records[-1][0] + 1
            rounds.append(self._compare(partition, records))
        return rounds

    def _compare(self, partition: int, records: list[tuple[int, bytes | None, int]]) -> Round:
        codecs = sealed_codecs()
        entries = []
        for offset, value, _ in records:
            try:
                kind, fields = codecs.decode_fields(value or b"")
            except (AuditSealError, ValueError, TypeError, IndexError, EOFError):
                continue  # not a sealed record: the verifier reports strays, there is nothing here to compare
            if kind == EVENT_KIND:
                entries.append(SealedEntry(offset, fields[0], kind, fields[5], fields[6], event=fields[7]))
            elif kind == REJECTION_KIND:
                entries.append(SealedEntry(offset, fields[0], kind, fields[5], fields[6], raw_sha256=fields[7],
                                           raw_size=fields[8]))
            # checkpoints and tree heads hold no raw record; a gap entry names raw offsets that hold none (lost
            # below the low watermark, or skipped by the broker): the verifier judges its claim
        chain = self.chains[partition]
        round_ = Round(chain.chain_id, self.sealed_topic, partition, records[0][0], records[-1][0], len(entries),
                       min((e.source_offset for e in entries), default=None),
                       max((e.source_offset for e in entries), default=None))
        if not entries:
            return round_
        low, high = self.raw.get_watermark_offsets(TopicPartition(self.source_topic, partition),
                                                   timeout=READ_TIMEOUT_S)
        first = min([round_.source_first] + ([chain.next_source_offset] if chain.next_source_offset else []))
        first, last = max(first, low), min(round_.source_last, high - 1)
        raw = {}
        if first <= last:
            raw = {o: RawRecord(o, v, t * 1000) for o, v, t in
                   read_partition(self.raw, self.source_topic, partition, first, stop=last)}
        before = chain.unverifiable
        round_.mismatches = chain.check(entries, raw, low, high)
        round_.unverifiable = chain.unverifiable - before
        return round_

    def close(self) -> None:
        """Close both consumers."""
        self.sealed.close()
        self.raw.close()


def start_offsets(settings: KafkaSettings, sealed_topic: str, since_micros: int) -> dict[int, int]:
    """The first sealed offset of each partition written at or after ``since_micros``."""
    consumer = Consumer(settings.client_config(**{"group.id": GROUP_PREFIX, "enable.auto.commit": False,
                                                  "log_level": 2}))
    try:
        metadata = consumer.list_topics(sealed_topic, timeout=READ_TIMEOUT_S).topics[sealed_topic]
        wanted = [TopicPartition(sealed_topic, p, since_micros // 1000) for p in metadata.partitions]
        found = consumer.offsets_for_times(wanted, timeout=READ_TIMEOUT_S)
        result = {}
        for tp in found:
            if tp.offset >= 0:
                result[tp.partition] = tp.offset
            else:  # nothing written since: start at the end
                result[tp.partition] = consumer.get_watermark_offsets(tp, timeout=READ_TIMEOUT_S)[1]
        return result
    finally:
        consumer.close()


def reconcile_window(settings: KafkaSettings, *, source_topic: str, sealed_topic: str, since_micros: int | None,
                     report: Callable[[str], object] = print) -> list[Round]:
    """Reconcile everything sealed since ``since_micros`` (None: all the sealed topic holds) once."""
    start = start_offsets(settings, sealed_topic, since_micros) if since_micros is not None else None
    reconciler = Reconciler(settings, source_topic=source_topic, sealed_topic=sealed_topic, start=start)
    try:
        return reconciler.step()
    finally:
        reconciler.close()
