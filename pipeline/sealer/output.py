"""Fenced, transactional writes of one chain to its partition of ``audit.sealed``, and recovery.

Exactly once without trusting any consumer offset: each chain has its own transactional producer
(``transactional.id`` = prefix + raw topic + partition). Opening a chain calls
``init_transactions``, which fences every older producer with that id (a worker presumed dead, or
the previous owner before a rebalance) and aborts its open transaction. Only then is the chain's
committed tail read back (``read_committed``); it ends in a checkpoint, because every batch and its
checkpoint are written in one transaction, and that checkpoint says where sealing resumes
(``last_source_offset + 1``). ``audit.sealed`` is therefore the only state: no changelog, no
offset commit can disagree with it. A record some other writer put on the partition (garbage, a
non-transactional record) is a stray: reported and skipped, and sealing resumes from the last
checkpoint its own entries back (:func:`last_checkpoint`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError
from pipeline.integrity.chain import chain_hash
from pipeline.integrity.chain_state import ChainState, Violation
from pipeline.integrity.checkpoint import checkpoint_signed_bytes
from pipeline.integrity.keyring import KeySchedule, key_id_for
from pipeline.integrity.log_identity import chain_origin, default_log_name
from pipeline.kafka_io.partition import PartitionReadError, read_partition
from pipeline.sealer.chain_sealer import ChainSealer, SealedRecord, SealerStateError
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    COSIGNATURE_KIND,
    HEAD_KIND,
    KIND_HEADER,
    chain_id_for,
    checkpoint_from_record,
    entry_payload,
    sealed_codecs,
)
from pipeline.wire.topics import SEALED_TOPIC, TOPICS

log = logging.getLogger(__name__)
TRANSACTIONAL_PREFIX = "auditseal-sealer"
_RECOVERY_WINDOW = 64

SEALED_MAX_MESSAGE_BYTES = int(next(t for t in TOPICS if t.name == SEALED_TOPIC).configs()["max.message.bytes"])
"""The sealed topic's ``max.message.bytes`` as the audit topics are created (the sealer's default)."""
# a record's framing in its batch beside the value: batch header (61), record header, key, kind header
RECORD_FRAMING_BYTES = 512
_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)


class ChainFencedError(AuditSealError):
    """Another sealer took this chain over (or its transaction failed); this worker must let it go."""


class NoSealedPartitionError(ChainFencedError):
    """The raw partition has no partition of the same number on the sealed topic to be sealed into
    (partitions were added to the raw topic only); the chain waits until it exists."""


class ChainUnreadableError(ChainFencedError):
    """The chain's partitions could not be read while opening it (a leader moving, a broker down or
    restarting): nothing was sealed; the chain waits and opening it is retried."""


class RecordTooLargeError(ChainFencedError):
    """The broker refused a batch for a record's size: the topic takes less than the sealer was told.
    ``largest`` is the size of the batch's largest value; the chain is reopened sealing it as a rejection."""

    def __init__(self, message: str, largest: int) -> None:
        super().__init__(message)
        self.largest = largest


def record_limit(max_message_bytes: int) -> int:
    """The largest sealed value a topic with this ``max.message.bytes`` takes in one record."""
    return max_message_bytes - RECORD_FRAMING_BYTES


def producer_config(settings: KafkaSettings, transactional_id: str,
                    max_message_bytes: int = SEALED_MAX_MESSAGE_BYTES) -> dict[str, object]:
    """The transactional producer of one chain; it sends records up to the sealed topic's limit
    (librdkafka's own default, 1,000,000 bytes, is below it)."""
    return settings.client_config(**{
        "message.max.bytes": max_message_bytes,
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


StrayHandler = Callable[[int, str], None]


def last_checkpoint(consumer: Consumer, topic: str, partition: int, timeout: float = 60.0, *,
                    chain_id: str | None = None, public_key: Ed25519PublicKey | None = None,
                    on_stray: StrayHandler | None = None,
                    on_head: Callable[[dict], None] | None = None) -> dict | None:
    """The last committed checkpoint of a sealed partition that its own entries back (None if none).

    Scans back from the end in growing windows. A checkpoint is the resume point only if the
    entries before it link from its ``chain_head`` back to its ``first_seq`` (each hash recomputed)
    and their Merkle root is its root; with ``chain_id`` it must be that chain's, and with
    ``public_key`` a checkpoint that names that key's id must verify under it. Every record after
    the resume point, and every record inside its batch that is not one of its entries, is a
    stray (garbage, another writer's record, an entry no checkpoint covers): each is passed to
    ``on_stray(offset, reason)`` and skipped, never sealed over. The sealer writes every batch and
    its checkpoint in one transaction, so its own records always form such a tail: resuming from
    it never forks a chain. Tree heads of the chain are not strays; the newest one at the resume
    point's size (whose frontier gives back the history tree) is passed to ``on_head``.
    """
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    window = _RECOVERY_WINDOW
    key_id = key_id_for(public_key) if public_key is not None else None
    while high > low:
        start = max(low, high - window)
        records = _read(consumer, topic, partition, start, timeout)
        found = _resume_point(records, start == low, chain_id, public_key, key_id)
        if found is not None:
            checkpoint, strays = found
            for offset, reason in strays:
                if on_stray is not None:
                    on_stray(offset, reason)
            if checkpoint is not None and on_head is not None:
                size = checkpoint["last_seq"] + 1
                heads = [r for _, kind, r in map(lambda item: (item[0], *_decoded(item[1])), records)
                         if kind == HEAD_KIND and r["chain_id"] == checkpoint["chain_id"] and r["tree_size"] == size]
                if heads:
                    on_head(heads[-1])
            return checkpoint
        window *= 4
    return None


def _read(consumer: Consumer, topic: str, partition: int, start: int, timeout: float) -> list[tuple[int, bytes | None]]:
    """(offset, value) of every committed record from ``start`` to the end."""
    try:
        return [(offset, value) for offset, value, _ in read_partition(consumer, topic, partition, start,
                                                                        timeout=timeout)]
    except PartitionReadError as exc:
        raise SealerStateError(f"reading the tail failed: {exc}") from exc


def _decoded(value: bytes | None) -> tuple[bytes | None, dict | str]:
    # (kind, record), or (None, why it is not a sealed record)
    if value is None:
        return None, "an empty value (a tombstone)"
    try:
        return sealed_codecs().decode(value)
    except (AuditSealError, ValueError, TypeError, IndexError, EOFError) as exc:  # fastavro raises several types
        return None, f"not a sealed record: {exc}"


def _resume_point(records: list[tuple[int, bytes | None]], complete: bool, chain_id: str | None,
                  public_key: Ed25519PublicKey | None, key_id: str | None):
    """(checkpoint record or None, strays) of the window, or None if the window must grow
    (``complete``: it starts at the partition's first record)."""
    decoded = [(offset, *_decoded(value)) for offset, value in records]
    rejected: dict[int, str] = {}  # checkpoints found not to be a resume point
    for index in range(len(decoded) - 1, -1, -1):
        offset, kind, record = decoded[index]
        if kind != CHECKPOINT_KIND:
            continue
        why, batch = _backing(decoded, index, chain_id, public_key, key_id)
        if why == _NEED_MORE:
            if not complete:
                return None
            why = "its entries are not all in the partition"
        if why is not None:
            rejected[offset] = f"a checkpoint that is not a resume point: {why}"
            continue
        # the chain's tree heads are written beside its batches (and alone, as heartbeats): not strays
        # and so are the witnesses' cosignatures of its heads, written whenever the witnesses answered
        own_head = {o for o, k, r in decoded if k in _HEAD_KINDS and r.get("chain_id") == record["chain_id"]}
        strays = [(o, rejected.get(o) or _stray_reason(k, r, "after the last valid checkpoint"))
                  for o, k, r in decoded[index + 1:] if o not in own_head]
        first_of_batch = min(batch) if batch else offset
        strays += [(o, _stray_reason(k, r, "inside a checkpoint's batch but not one of its entries"))
                   for o, k, r in decoded[:index] if first_of_batch < o and o not in batch and o not in own_head]
        return record, sorted(strays)
    if not complete:
        return None
    return None, [(o, rejected.get(o) or _stray_reason(k, r, "before any valid checkpoint")) for o, k, r in decoded
                  if not (k in _HEAD_KINDS and chain_id is not None and r.get("chain_id") == chain_id)]


_NEED_MORE = "need more"
_HEAD_KINDS = (HEAD_KIND, COSIGNATURE_KIND)


def _stray_reason(kind: bytes | None, record: dict | str, where: str) -> str:
    if kind is None:
        return f"{record} ({where})"
    return f"a {kind.decode()} record of chain {record.get('chain_id')!r} seq {record.get('seq', record.get('last_seq'))} {where}"


def _backing(decoded, index: int, chain_id: str | None, public_key: Ed25519PublicKey | None,
             key_id: str | None) -> tuple[str | None, set[int]]:
    # (None, offsets of its entries) if the checkpoint at ``index`` is backed by the entries before it,
    # else (why not, ...); _NEED_MORE if the window starts inside its batch
    _, _, record = decoded[index]
    try:
        checkpoint = checkpoint_from_record(record)
    except (AuditSealError, ValueError, TypeError) as exc:
        return f"its fields are malformed: {exc}", set()
    if chain_id is not None and checkpoint.chain_id != chain_id:
        return f"it belongs to chain {checkpoint.chain_id!r}, not {chain_id!r}", set()
    if public_key is not None and checkpoint.key_id == key_id:
        try:
            public_key.verify(checkpoint.signature, checkpoint_signed_bytes(checkpoint))
        except InvalidSignature:
            return f"its signature does not verify under this sealer's key {key_id}", set()
    # walk back from the head it signs to its first_seq, picking out its own entries among strays
    expected_seq, expected_hash = checkpoint.last_seq, checkpoint.chain_head
    entries, batch = [], set()
    for offset, kind, entry in reversed(decoded[:index]):
        if expected_seq < checkpoint.first_seq:
            break
        if kind is None or kind in _HEAD_KINDS or kind == CHECKPOINT_KIND or entry["chain_id"] != checkpoint.chain_id:
            if kind == CHECKPOINT_KIND and entry["chain_id"] == checkpoint.chain_id:
                return f"the checkpoint at offset {offset} comes before seq {expected_seq} of its batch", set()
            continue
        if entry["seq"] != expected_seq or entry["hash"] != expected_hash:
            continue
        try:
            payload = entry_payload(kind, entry)
            if chain_hash(entry["prev_hash"], entry["seq"], payload) != entry["hash"]:
                continue  # a record claiming the position with other bytes: a stray
        except (AuditSealError, ValueError, TypeError, KeyError):
            continue
        entries.append((offset, entry))
        batch.add(offset)
        expected_seq, expected_hash = expected_seq - 1, entry["prev_hash"]
    if expected_seq >= checkpoint.first_seq:
        return _NEED_MORE, set()
    if not entries:
        return f"it signs no entries (first_seq {checkpoint.first_seq}, last_seq {checkpoint.last_seq})", set()
    # the batch judged by the one state machine the verifier runs: links, continuity, Merkle root
    first = entries[-1][1]
    state = ChainState(checkpoint.chain_id, head_seq=first["seq"] - 1, head_hash=first["prev_hash"],
                       batch_first_seq=first["seq"], expected_first_seq=checkpoint.first_seq,
                       previous_checkpoint_hash=checkpoint.prev_checkpoint_hash)
    found: list[Violation] = []
    for offset, entry in reversed(entries):
        # each hash was recomputed above (the walk keeps only entries whose bytes give their hash): link them
        found += state.link(entry["chain_id"], entry["seq"], entry["prev_hash"], entry["hash"], entry["hash"],
                            f"offset {offset}", entry["source_offset"], entry.get("source_last_offset", -1))
    found += state.checkpoint(checkpoint, f"offset {decoded[index][0]}", keyring=None)
    if found:
        return "; ".join(f"{violation.kind}: {violation.detail}" for violation in found), set()
    return None, batch


class ChainWriter:
    """Owns one chain: fences older writers, recovers the state, writes batch + checkpoint atomically."""

    def __init__(self, settings: KafkaSettings, *, raw_topic: str, sealed_topic: str, partition: int,
                 signing_key: KeySchedule, group_prefix: str = TRANSACTIONAL_PREFIX,
                 max_message_bytes: int = SEALED_MAX_MESSAGE_BYTES, max_record_bytes: int | None = None,
                 log_name: str | None = None) -> None:
        self.settings = settings
        self.raw_topic = raw_topic
        self.sealed_topic = sealed_topic
        self.partition = partition
        self.signing_key = signing_key
        self.chain_id = chain_id_for(raw_topic, partition)
        self.transactional_id = f"{TRANSACTIONAL_PREFIX}-{raw_topic}-{partition}"
        self.group_id = f"{group_prefix}-recovery"
        self.max_message_bytes = max_message_bytes
        self.max_record_bytes = record_limit(max_message_bytes) if max_record_bytes is None else max_record_bytes
        self._producer: Producer | None = None
        # the log name its checkpoints' origin starts with; None: auditseal/<Kafka cluster id>
        self.log_name = log_name
        self.origin: str | None = None
        self.last_head: dict | None = None  # the chain's newest tree head at its resume point
        self.raw_low_watermark = 0
        self.strays: list[tuple[int, str]] = []  # (sealed offset, why) of the records open() skipped

    def open(self, timeout: float = 60.0) -> ChainSealer:
        """Fence older writers of this chain, then rebuild its state from the committed tail."""
        producer = Producer(producer_config(self.settings, self.transactional_id, self.max_message_bytes))
        try:
            producer.init_transactions(timeout)
        except KafkaException as exc:
            raise ChainFencedError(f"{self.chain_id}: init_transactions failed: {exc.args[0].str()}") from exc
        self._producer = producer
        try:
            tail, self.raw_low_watermark = self._read_tail(timeout)
        except NoSealedPartitionError:
            self.close()
            raise
        except (KafkaException, SealerStateError) as exc:
            # a timed-out or failed read of the raw or sealed partition: transient while a leader moves
            # (a SIGKILLed leader stays in the metadata until the controller fences it), never a reason
            # to stop the worker
            self.close()
            why = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            raise ChainUnreadableError(f"{self.chain_id}: not opened, its partitions could not be read: {why}; "
                                       "retried") from exc
        return ChainSealer.resume(self.chain_id, self.partition, self.signing_key, tail, self.max_record_bytes,
                                  origin=self.origin, last_head=self.last_head)

    def _read_tail(self, timeout: float) -> tuple[dict | None, int]:
        consumer = tail_consumer(self.settings, self.group_id)
        try:
            raw_low, _ = consumer.get_watermark_offsets(TopicPartition(self.raw_topic, self.partition), timeout=timeout)
            metadata = consumer.list_topics(self.sealed_topic, timeout=timeout)
            self.origin = self._origin(metadata.cluster_id)
            sealed = metadata.topics.get(self.sealed_topic)
            if sealed is None or self.partition not in sealed.partitions:
                count = len(sealed.partitions) if sealed is not None else 0
                raise NoSealedPartitionError(
                    f"{self.chain_id}: {self.sealed_topic} has {count} partitions, none numbered {self.partition}: "
                    f"add partitions to {self.sealed_topic} up to those of {self.raw_topic} (the chain of raw "
                    f"partition N is sealed into partition N); it starts at genesis once the partition exists")
            self.strays = []
            self.last_head = None
            tail = last_checkpoint(consumer, self.sealed_topic, self.partition, timeout, chain_id=self.chain_id,
                                   public_key=self.signing_key.signer_at(time.time_ns() // 1000).public_key,
                                   on_stray=lambda offset, why: self.strays.append((offset, why)),
                                   on_head=lambda head: setattr(self, "last_head", head))
            return tail, raw_low
        finally:
            consumer.close()

    def _origin(self, cluster_id: str | None) -> str:
        # the log identity inside every v2 checkpoint: <log name>/<chain id>
        if self.log_name is None:
            if not cluster_id:
                raise SealerStateError(f"{self.chain_id}: the broker reports no cluster id to name the log by: "
                                       "give the sealer --log-name")
            return chain_origin(default_log_name(cluster_id), self.chain_id)
        return chain_origin(self.log_name, self.chain_id)

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
            if error.code() in _TOO_LARGE:
                raise RecordTooLargeError(f"{self.chain_id}: transaction failed: {error.str()}",
                                          max(len(r.value) for r in records)) from exc
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
