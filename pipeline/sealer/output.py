"""Fenced, transactional writes of one chain to its partition of ``audit.sealed``, and recovery.

Exactly once without trusting any consumer offset: each chain has its own transactional producer
(``transactional.id`` = prefix + raw topic + partition). Opening a chain calls
``init_transactions``, which fences every older producer with that id (a worker presumed dead, or
the previous owner before a rebalance) and aborts its open transaction. Only then is the chain's
committed tail read back (``read_committed``); it ends in a checkpoint, because every batch and its
checkpoint are written in one transaction, and that checkpoint says where sealing resumes
(``last_source_offset + 1``). ``audit.sealed`` is therefore the only state: no changelog, no
offset commit can disagree with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError
from pipeline.integrity.keyring import KeySchedule
from pipeline.sealer.chain_sealer import ChainSealer, SealedRecord, SealerStateError
from pipeline.integrity.chain_state import ChainState, Violation, ViolationKind
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    KIND_HEADER,
    SealedCodecs,
    chain_id_for,
    checkpoint_from_record,
    entry_payload_of_fields,
    sealed_codecs,
)

log = logging.getLogger(__name__)
TRANSACTIONAL_PREFIX = "auditseal-sealer"
_RECOVERY_WINDOW = 64


class ChainFencedError(AuditSealError):
    """Another sealer took this chain over (or its transaction failed); this worker must let it go."""


def producer_config(settings: KafkaSettings, transactional_id: str) -> dict[str, object]:
    """The transactional producer of one chain."""
    return settings.client_config(**{
        "transactional.id": transactional_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "transaction.timeout.ms": 60000,
        "batch.size": 1048576,
    })


def tail_consumer(settings: KafkaSettings, group_id: str) -> Consumer:
    """A read_committed consumer for :func:`last_checkpoint` (it never commits offsets)."""
    return Consumer(settings.client_config(**{
        "group.id": group_id, "enable.auto.commit": False, "isolation.level": "read_committed",
        "enable.partition.eof": True,
    }))


def last_checkpoint(consumer: Consumer, topic: str, partition: int, timeout: float = 60.0) -> dict | None:
    """The last committed checkpoint record of a sealed partition (None if it has none).

    Scans back from the end in growing windows. The committed tail after that checkpoint goes
    through the integrity core's state machine (:class:`~pipeline.integrity.chain_state.ChainState`,
    from :meth:`~pipeline.integrity.chain_state.ChainState.after_checkpoint`; from genesis if the
    partition has no checkpoint): SealerStateError naming the first violation if it finds any,
    ``unsigned_tail`` included. This sealer always ends a transaction with a checkpoint, so
    entries after the last one mean another writer touched the chain.
    """
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    window = _RECOVERY_WINDOW
    while high > low:
        start = max(low, high - window)
        found = _scan(consumer, topic, partition, start, timeout, from_genesis=start == low)
        if found is not None or start == low:
            return found
        window *= 4
    return None


def _scan(consumer: Consumer, topic: str, partition: int, start: int, timeout: float, *,
          from_genesis: bool) -> dict | None:
    """The last checkpoint from ``start`` to the end, refusing a tail after it that does not verify."""
    codecs = sealed_codecs()
    where = f"{topic}[{partition}]"
    consumer.assign([TopicPartition(topic, partition, start)])
    found, tail = None, []
    deadline = time.monotonic() + timeout
    while True:
        message = consumer.poll(0.5)
        if message is None:
            if time.monotonic() > deadline:
                raise SealerStateError(f"{where}: timed out reading the tail")
            continue
        if message.error():
            if message.error().code() == KafkaError._PARTITION_EOF:
                break
            raise SealerStateError(f"{where}: reading the tail failed: {message.error().str()}")
        value = message.value()
        if _is_checkpoint(codecs, value):
            found, tail = codecs.checkpoint.decode(value), []
        else:  # classified once the last checkpoint is known: normally nothing follows it
            tail.append((message.offset(), value))
    # read to the end (EOF comes at the last stable offset), never to a snapshot of the high watermark:
    # on a live topic that snapshot can fall inside a transaction that commits an instant later
    if found is None and not from_genesis:
        return None
    violations = _tail_violations(found, tail, where)
    if violations:
        raise SealerStateError(
            f"{where}: {len(tail)} committed entries follow the last checkpoint, and the state machine finds "
            f"{len(violations)} violation(s), the first: {violations[0]}; this sealer always ends a transaction "
            "with a checkpoint, so another writer touched the chain. Refusing to extend it.")
    return found


def _is_checkpoint(codecs: SealedCodecs, value: bytes | None) -> bool:
    try:
        return codecs.kind_of(value) == CHECKPOINT_KIND
    except (TypeError, ValueError):  # not a sealed record at all: the tail's classification names it
        return False


def _tail_violations(checkpoint: dict | None, tail: list[tuple[int, bytes | None]], where: str) -> list[Violation]:
    # the tail's entries through the state after the checkpoint (None: the chain's genesis)
    if not tail:
        return []
    codecs = sealed_codecs()
    state = None if checkpoint is None else ChainState.after_checkpoint(checkpoint_from_record(checkpoint))
    found: list[Violation] = []
    for offset, value in tail:
        location = f"{where} offset {offset}"
        try:
            kind, fields = codecs.decode_fields(value or b"")
        except (AuditSealError, ValueError) as exc:
            found.append(Violation(ViolationKind.MALFORMED, None if state is None else state.chain_id, None,
                                   location, str(exc)))
            continue
        chain_id, seq, prev_hash, claimed = fields[:4]
        if state is None:
            state = ChainState(chain_id)
        found.extend(state.entry(chain_id, seq, prev_hash, claimed, entry_payload_of_fields(kind, fields), location))
    if state is not None:
        found.extend(state.finish(f"{where} end"))
    return found


class ChainWriter:
    """Owns one chain: fences older writers, recovers the state, writes batch + checkpoint atomically."""

    def __init__(self, settings: KafkaSettings, *, raw_topic: str, sealed_topic: str, partition: int,
                 signing_key: KeySchedule, group_prefix: str = TRANSACTIONAL_PREFIX) -> None:
        self.settings = settings
        self.raw_topic = raw_topic
        self.sealed_topic = sealed_topic
        self.partition = partition
        self.signing_key = signing_key
        self.chain_id = chain_id_for(raw_topic, partition)
        self.transactional_id = f"{TRANSACTIONAL_PREFIX}-{raw_topic}-{partition}"
        self.group_id = f"{group_prefix}-recovery"
        self._producer: Producer | None = None
        self.raw_low_watermark = 0

    def open(self, timeout: float = 60.0) -> ChainSealer:
        """Fence older writers of this chain, then rebuild its state from the committed tail."""
        producer = Producer(producer_config(self.settings, self.transactional_id))
        try:
            producer.init_transactions(timeout)
        except KafkaException as exc:
            raise ChainFencedError(f"{self.chain_id}: init_transactions failed: {exc.args[0].str()}") from exc
        self._producer = producer
        tail, self.raw_low_watermark = self._read_tail(timeout)
        return ChainSealer.resume(self.chain_id, self.partition, self.signing_key, tail)

    def _read_tail(self, timeout: float) -> tuple[dict | None, int]:
        consumer = tail_consumer(self.settings, self.group_id)
        try:
            raw_low, _ = consumer.get_watermark_offsets(TopicPartition(self.raw_topic, self.partition), timeout=timeout)
            return last_checkpoint(consumer, self.sealed_topic, self.partition, timeout), raw_low
        finally:
            consumer.close()

    def write(self, records: Sequence[SealedRecord], timeout: float = 30.0) -> None:
        """Write one batch (entries then their checkpoint) in one transaction; ChainFencedError if it fails."""
        producer = self._producer
        if producer is None:
            raise ChainFencedError(f"{self.chain_id}: not open")
        headers_for = {kind: [(KIND_HEADER, kind)] for kind in {r.kind for r in records}}
        key = self.chain_id.encode()
        try:
            producer.begin_transaction()
            for record in records:
                while True:
                    try:
                        producer.produce(self.sealed_topic, record.value, key, partition=self.partition,
                                         headers=headers_for[record.kind])
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.commit_transaction(timeout)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                try:
                    producer.abort_transaction(timeout)
                except KafkaException as abort_exc:
                    # the chain is dropped below; reopening it aborts the transaction for certain
                    log.warning("%s: abort after a failed transaction failed too: %s", self.chain_id, abort_exc)
            self.close()
            raise ChainFencedError(f"{self.chain_id}: transaction failed: {error.str()}") from exc

    def close(self) -> None:
        """Release the producer (an open transaction is aborted by the broker or the next owner)."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(5)
        except KafkaException as exc:
            # a fenced producer is in a fatal state and refuses even to flush; it holds nothing committed
            log.info("%s: producer closed in state %s", self.chain_id, exc.args[0].str())
