"""Reading a source topic and its sealed topic side by side, chain by chain (:mod:`pipeline.reconciler.matching`).

The reconciler role may READ both topics and write neither (``config/roles.yaml``); it reads the sealed
topic ``read_committed`` (what consumers see) and, for each new run of entries, the raw records at the
offsets they name. :class:`Reconciler` is used twice: by ``auditseal reconcile``, which keeps going and
publishes a signed attestation per round and an event per mismatch (:func:`run_reconciler`), and by
``auditseal verify --reconcile``, which reconciles a window once and reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError
from pipeline.kafka_io.partition import READ_TIMEOUT_S, PartitionReadError, read_partition
from pipeline.reconciler.matching import ChainReconciliation, Mismatch, RawRecord, SealedEntry
from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND, chain_id_for, sealed_codecs

log = logging.getLogger(__name__)
GROUP_PREFIX = "auditseal-reconciler"


class ReconcileReadError(PartitionReadError):
    """A topic could not be read (no such topic, no right to describe it); a partition not read to its end
    raises the :class:`PartitionReadError` it derives from."""


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
    # where the round started reading (the previous round's end): rounds cover their partition without a gap,
    # transaction markers between them included
    sealed_from: int | None = None


class Reconciler:
    """Every chain of ``source_topic`` (one per partition) checked against ``sealed_topic``, from ``start``
    offsets of the sealed partitions (default: their low watermarks) onwards, round after round. With
    ``resume``, a partition whose position ``group_id`` committed (:meth:`commit`) starts there instead."""

    def __init__(self, settings: KafkaSettings, *, source_topic: str, sealed_topic: str,
                 start: dict[int, int] | None = None, group_id: str = GROUP_PREFIX, resume: bool = False) -> None:
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
        self.lost: dict[int, int] = {}  # sealed records deleted before a round read them, per partition
        if resume:
            self._resume()

    def _resume(self) -> None:
        # The committed offset of a sealed partition is where the last attested round ended (commit() runs only
        # after the round's attestations were delivered); the chain's next source offset is read back from the
        # sealed entries before it, never taken from anything a commit could carry.
        committed = self.sealed.committed([TopicPartition(self.sealed_topic, p) for p in self.positions],
                                          timeout=READ_TIMEOUT_S)
        for tp in committed:
            if tp.error is not None:
                raise ReconcileReadError(f"{self.sealed_topic}[{tp.partition}]: committed offset: {tp.error.str()}")
            if tp.offset < 0:
                continue  # never committed: from the partition's first record
            self.positions[tp.partition] = tp.offset
            self.chains[tp.partition].next_source_offset = self._next_source_offset(tp.partition, tp.offset)
            log.info("reconcile: %s[%d] resumes at sealed offset %d (next source offset %s)", self.sealed_topic,
                     tp.partition, tp.offset, self.chains[tp.partition].next_source_offset)

    def _next_source_offset(self, partition: int, position: int) -> int | None:
        """One after the source offset of the chain's last event or rejection before sealed ``position``."""
        low, _ = self.sealed.get_watermark_offsets(TopicPartition(self.sealed_topic, partition), timeout=READ_TIMEOUT_S)
        end, window = position, 256
        while end > low:
            start = max(low, end - window)
            entries = [e for e in map(_sealed_entry, read_partition(self.sealed, self.sealed_topic, partition, start,
                                                                    stop=end - 1))
                       if e is not None and e.sealed_offset < end and e.chain_id == self.chains[partition].chain_id]
            if entries:
                return entries[-1].source_offset + 1
            end, window = start, window * 4
        return None

    def commit(self) -> None:
        """Persist every partition's position as the committed offset of this reconciler's group: call it only
        once the rounds read so far are attested (their events delivered), so a restart resumes after them and
        never before an unattested range."""
        offsets = [TopicPartition(self.sealed_topic, p, position) for p, position in self.positions.items()
                   if position is not None]
        if offsets:
            for tp in self.sealed.commit(offsets=offsets, asynchronous=False) or []:
                if tp.error is not None:
                    raise ReconcileReadError(f"{self.sealed_topic}[{tp.partition}]: commit: {tp.error.str()}")

    def step(self) -> list[Round]:
        """One round: every sealed partition's records since the last round, compared with the raw records."""
        rounds = []
        for partition, position in self.positions.items():
            low, _ = self.sealed.get_watermark_offsets(TopicPartition(self.sealed_topic, partition),
                                                       timeout=READ_TIMEOUT_S)
            if position is None:
                position = low
            elif position < low:
                # deleted by the sealed topic's retention before any round read them: never compared
                self.lost[partition] = self.lost.get(partition, 0) + low - position
                log.error("reconcile: %s[%d] sealed offsets %d..%d were deleted before they were reconciled",
                          self.sealed_topic, partition, position, low - 1)
                position = low
            records = read_partition(self.sealed, self.sealed_topic, partition, position)
            if not records:
                self.positions[partition] = position
                continue
            self.positions[partition] = records[-1][0] + 1
            round_ = self._compare(partition, records)
            round_.sealed_from = position
            round_.unverifiable += self.lost.pop(partition, 0)
            rounds.append(round_)
        return rounds

    def _compare(self, partition: int, records: list[tuple[int, bytes | None, int]]) -> Round:
        entries = [e for e in map(_sealed_entry, records) if e is not None]
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


def _sealed_entry(record: tuple[int, bytes | None, int]) -> SealedEntry | None:
    """The event or rejection a sealed record holds (None for anything else)."""
    offset, value, _ = record
    try:
        kind, fields = sealed_codecs().decode_fields(value or b"")
    except (AuditSealError, ValueError, TypeError, IndexError, EOFError):
        return None  # not a sealed record: the verifier reports strays, there is nothing here to compare
    if kind == EVENT_KIND:
        return SealedEntry(offset, fields[0], kind, fields[5], fields[6], event=fields[7])
    if kind == REJECTION_KIND:
        return SealedEntry(offset, fields[0], kind, fields[5], fields[6], raw_sha256=fields[7], raw_size=fields[8])
    # checkpoints and tree heads hold no raw record; a gap entry names raw offsets that hold none (lost below the
    # low watermark, or skipped by the broker): the verifier judges its claim
    return None


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
