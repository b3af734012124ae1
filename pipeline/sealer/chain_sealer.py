"""One chain's sealing state machine, with no I/O: raw records in, sealed records out.

A :class:`ChainSealer` turns each raw record of one ``audit.raw`` partition into the next chain
entry (a sealed event, or a rejection if the record does not decode or validate), and closes a
batch into a signed checkpoint. The Kafka side (:mod:`pipeline.sealer.output`) writes one batch
and its checkpoint in one transaction, so a chain's committed tail always ends in a checkpoint,
and :meth:`ChainSealer.resume` can rebuild the state from that checkpoint alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

from pipeline.codec import DecodeError, EventCodec, default_codec
from pipeline.errors import AuditSealError
from pipeline.integrity.chain import GENESIS_HASH, ChainHead, chain_hash
from pipeline.integrity.checkpoint import build_checkpoint, checkpoint_hash, sign_checkpoint
from pipeline.integrity.keyring import SigningKey
from pipeline.schemas import AUDIT_EVENT, default_catalog
from pipeline.sealer.records import (
    CHECKPOINT_KIND,
    EVENT_KIND,
    REJECTION_KIND,
    SealedCodecs,
    checkpoint_from_record,
    checkpoint_record,
    event_payload,
    rejection_payload,
    sealed_codecs,
)
from pipeline.specialised_checker import Checker, compile_checker
from pipeline.validation import InvalidEventError, validate_event


class SealerStateError(AuditSealError):
    """The committed tail of a chain is not what this sealer writes; sealing it further could fork it."""


@dataclass(frozen=True)
class SealedRecord:
    """One record to write to ``audit.sealed``: its kind (the Kafka header) and encoded value."""

    kind: bytes
    value: bytes
    seq: int | None = None
    source_timestamp_micros: int | None = None


@dataclass
class ChainSealer:
    """The state of one chain between batches: head, previous checkpoint, next expected raw offset."""

    chain_id: str
    source_partition: int
    signing_key: SigningKey
    head: ChainHead
    prev_checkpoint_hash: bytes = GENESIS_HASH
    next_source_offset: int | None = None
    codecs: SealedCodecs = field(default_factory=sealed_codecs)
    event_codec: EventCodec = field(default_factory=default_codec)
    _batch_hashes: list[bytes] = field(default_factory=list)
    _batch_first_seq: int = 0
    _last_source_offset: int = -1
    _certainly_valid: Checker = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._certainly_valid = _fast_check(self.event_codec)

    @classmethod
    def resume(cls, chain_id: str, source_partition: int, signing_key: SigningKey,
               last_checkpoint: dict | None) -> ChainSealer:
        """The state after the chain's last committed checkpoint record (None: an empty chain)."""
        if last_checkpoint is None:
            return cls(chain_id, source_partition, signing_key, ChainHead.genesis(chain_id))
        if last_checkpoint["chain_id"] != chain_id:
            raise SealerStateError(f"partition of {chain_id} ends with a checkpoint of {last_checkpoint['chain_id']}")
        checkpoint = checkpoint_from_record(last_checkpoint)
        return cls(
            chain_id, source_partition, signing_key,
            ChainHead(chain_id, checkpoint.last_seq, checkpoint.chain_head),
            prev_checkpoint_hash=checkpoint_hash(checkpoint),
            next_source_offset=last_checkpoint["last_source_offset"] + 1,
        )

    @property
    def pending(self) -> int:
        """Entries sealed since the last checkpoint."""
        return len(self._batch_hashes)

    def seal(self, value: bytes | None, source_offset: int, source_timestamp_micros: int) -> SealedRecord:
        """The next chain entry for one raw record: a sealed event if it decodes and validates,
        otherwise a rejection naming why. Never raises for bad input: nothing is dropped."""
        reason = self._refusal(value)
        seq = self.head.seq + 1
        if reason is None:
            assert value is not None
            payload = event_payload(self.source_partition, source_offset, source_timestamp_micros, value)
            digest = chain_hash(self.head.hash, seq, payload)
            record = {
                "chain_id": self.chain_id, "seq": seq, "prev_hash": self.head.hash, "hash": digest,
                "source_partition": self.source_partition, "source_offset": source_offset,
                "source_timestamp_micros": source_timestamp_micros, "event": value,
            }
            kind, encoded = EVENT_KIND, self.codecs.event.encode(record)
        else:
            raw = value or b""
            raw_sha256 = hashlib.sha256(raw).digest()
            payload = rejection_payload(self.source_partition, source_offset, source_timestamp_micros,
                                        raw_sha256, len(raw), reason)
            digest = chain_hash(self.head.hash, seq, payload)
            record = {
                "chain_id": self.chain_id, "seq": seq, "prev_hash": self.head.hash, "hash": digest,
                "source_partition": self.source_partition, "source_offset": source_offset,
                "source_timestamp_micros": source_timestamp_micros, "raw_sha256": raw_sha256,
                "raw_size": len(raw), "reason": reason,
            }
            kind, encoded = REJECTION_KIND, self.codecs.rejection.encode(record)
        if not self._batch_hashes:
            self._batch_first_seq = seq
        self._batch_hashes.append(digest)
        self.head = ChainHead(self.chain_id, seq, digest)
        self.next_source_offset = source_offset + 1
        self._last_source_offset = source_offset
        return SealedRecord(kind, encoded, seq, source_timestamp_micros)

    def _refusal(self, value: bytes | None) -> str | None:
        if value is None:
            return "empty record value (a tombstone): an audit event was expected"
        # One pass over the bytes for the newest schema's plain records; anything else, and
        # every invalid record, gets the reference decision and message below.
        if self._certainly_valid(value):
            return None
        try:
            validate_event(self.event_codec.decode(value))
        except (DecodeError, InvalidEventError) as exc:
            return str(exc)
        return None

    def checkpoint(self, issued_at_micros: int) -> SealedRecord:
        """Close the batch: a checkpoint over the entries sealed since the last one, signed."""
        unsigned = build_checkpoint(
            chain_id=self.chain_id, first_seq=self._batch_first_seq, record_hashes=self._batch_hashes,
            prev_checkpoint_hash=self.prev_checkpoint_hash, issued_at_micros=issued_at_micros,
        )
        signed = sign_checkpoint(unsigned, self.signing_key)
        self.prev_checkpoint_hash = checkpoint_hash(signed)
        self._batch_hashes = []
        return SealedRecord(CHECKPOINT_KIND, self.codecs.checkpoint.encode(
            checkpoint_record(signed, self._last_source_offset)))


def _never_sure(value: bytes) -> bool:
    return False


@lru_cache(maxsize=8)
def _fast_check(codec: EventCodec) -> Checker:
    # Compiled once per codec (resume() builds a sealer per partition assignment). The check
    # stands for decode + validate_event only where both mean the same schema: validate_event
    # checks against the newest AuditEvent of schemas/. Otherwise, or for a schema the generator
    # does not handle, every record takes the reference path.
    if codec.schema.parsed != default_catalog().latest(AUDIT_EVENT).parsed:
        return _never_sure
    return compile_checker(codec.schema.parsed, codec.header) or _never_sure
