"""One chain's sealing state machine, with no I/O: raw records in, sealed records out.

A :class:`ChainSealer` turns each raw record of one ``audit.raw`` partition into the next chain
entry (a sealed event, or a rejection if the record does not decode or validate), and closes a
batch into a signed checkpoint. The Kafka side (:mod:`pipeline.sealer.output`) writes one batch
and its checkpoint in one transaction, so a chain's committed tail always ends in a checkpoint,
and :meth:`ChainSealer.resume` can rebuild the state from that checkpoint alone.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple

from pipeline.errors import AuditSealError, ConfigError
from pipeline.integrity.chain import GENESIS_HASH, ChainHead, chain_hash
from pipeline.integrity.chain_state import ChainState
from pipeline.integrity.checkpoint import build_checkpoint, checkpoint_hash, sign_checkpoint
from pipeline.integrity.history_tree import HistoryTree, extended_by_chunks, extended_by_leaves, record_chunks
from pipeline.integrity.keyring import KeySchedule
from pipeline.integrity.merkle import batch_and_history, record_leaves
from pipeline.integrity.note import NoteSigner
from pipeline.integrity.tree_head import TreeHead, sign_tree_head
from pipeline.native.flat_reader import SEALED_EVENT_TYPES
from pipeline.native.sealing import seal_event
from pipeline.wire.acceptance import Checker, compile_checker, refusal
from pipeline.wire.catalog import AUDIT_EVENT, default_catalog
from pipeline.wire.codec import EventCodec, default_codec
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    ENTRY_FIELDS,
    EVENT_KIND,
    GAP_KIND,
    HEAD_KIND,
    REJECTION_KIND,
    SealedCodecs,
    checkpoint_from_record,
    checkpoint_record,
    gap_payload,
    rejection_payload,
    sealed_codecs,
)


class SealerStateError(AuditSealError):
    """The committed tail of a chain is not what this sealer writes; sealing it further could fork it."""


class SealedRecord(NamedTuple):
    """One record to write to ``audit.sealed``: its kind (the Kafka header) and encoded value."""

    kind: bytes
    value: bytes
    seq: int | None = None
    source_timestamp_micros: int | None = None


class ChainSealer:
    """The state of one chain between batches: head, previous checkpoint, next expected raw offset.

    Per event the work is one compiled acceptance check and one compiled hash-and-encode
    (:mod:`pipeline.native.sealing`); the head is kept as plain (seq, hash) and built into a
    :class:`ChainHead` only when asked for.
    """

    def __init__(self, chain_id: str, source_partition: int, signing_key: KeySchedule, head: ChainHead, *,
                 prev_checkpoint_hash: bytes = GENESIS_HASH, next_source_offset: int | None = None,
                 codecs: SealedCodecs | None = None, event_codec: EventCodec | None = None,
                 max_record_bytes: int | None = None, origin: str | None = None,
                 history: HistoryTree | None = None) -> None:
        if head.chain_id != chain_id:
            raise SealerStateError(f"the head of {head.chain_id} cannot start chain {chain_id}")
        self.chain_id = chain_id
        self.source_partition = source_partition
        self.signing_key = signing_key
        self.prev_checkpoint_hash = prev_checkpoint_hash
        self.next_source_offset = next_source_offset
        # the log identity its checkpoints sign (version 2, with their raw offsets); None: version 1
        self.origin = origin
        # the chain's whole-history tree up to the entries folded into it (None: not known, no heads)
        self.history = history if history is not None else (HistoryTree() if head.seq == -1 else None)
        self._folded = 0  # entries of the current batch already in self.history
        self._batch_root: bytes | None = None  # the batch's Merkle root, if a tree head built it over the whole batch
        # the entries the last tree head added, as (width, root) of aligned subtrees of the history tree: hashed
        # once, for the tree, the checkpoint's root and the witnesses (pipeline.sealer.witnessing)
        self.head_chunks: list[tuple[int, bytes]] = []
        # the largest sealed event the sealed topic takes; a larger one is sealed as a rejection
        self.max_record_bytes = max_record_bytes
        self.codecs = codecs or sealed_codecs()
        self.event_codec = event_codec or default_codec()
        self._seq, self._hash = head.seq, head.hash
        self._batch_hashes: list[bytes] = []
        self._batch_first_seq = 0
        self._last_source_offset = -1
        self._batch_first_source = -1
        self._certainly_valid = _fast_check(self.event_codec)
        self._event_header = _event_header(self.codecs)
        self._chain_id_utf8 = chain_id.encode("utf-8")
        self._kept_note_signers: dict[str, tuple[object, NoteSigner]] = {}  # key id -> (signer, note signer)

    @property
    def head(self) -> ChainHead:
        """The chain's last entry (the genesis head before the first)."""
        return ChainHead(self.chain_id, self._seq, self._hash)

    @classmethod
    def resume(cls, chain_id: str, source_partition: int, signing_key: KeySchedule,
               last_checkpoint: dict | None, max_record_bytes: int | None = None,
               origin: str | None = None, last_head: dict | None = None) -> ChainSealer:
        """The state after the chain's last committed checkpoint record (None: an empty chain), as
        :meth:`pipeline.integrity.chain_state.ChainState.after_checkpoint` defines it. With an ``origin``
        the next checkpoints are version 2 (a chain sealed in version 1 so far moves on to version 2).
        ``last_head`` (the chain's newest head record at that checkpoint) gives back the history tree; without
        one (a chain sealed in version 1 so far) the chain has no heads until the tree is rebuilt."""
        if last_checkpoint is None:
            return cls(chain_id, source_partition, signing_key, ChainHead.genesis(chain_id),
                       max_record_bytes=max_record_bytes, origin=origin)
        if last_checkpoint["chain_id"] != chain_id:
            raise SealerStateError(f"partition of {chain_id} ends with a checkpoint of {last_checkpoint['chain_id']}")
        # the state machine's state after that checkpoint, as the verifier would hold it there
        state = ChainState.after_checkpoint(checkpoint_from_record(last_checkpoint))
        return cls(
            chain_id, source_partition, signing_key, state.head,
            prev_checkpoint_hash=state.previous_checkpoint_hash,
            next_source_offset=last_checkpoint["last_source_offset"] + 1,
            max_record_bytes=max_record_bytes, origin=origin, history=history_of_head(last_head, state.head.seq + 1),
        )

    @property
    def pending(self) -> int:
        """Entries sealed since the last checkpoint."""
        return len(self._batch_hashes)

    def seal(self, value: bytes | None, source_offset: int, source_timestamp_micros: int) -> SealedRecord:
        """The next chain entry for one raw record: a sealed event if it decodes, validates and fits
        the sealed topic, otherwise a rejection naming why. Never raises for bad input: nothing is
        dropped, and no record can stall the chain."""
        seq = self._seq + 1
        reason = None
        if source_timestamp_micros < 0:
            # Kafka's "no timestamp" (-1 ms): the hashed payload holds an unsigned time, so the
            # record is sealed as a rejection at time 0 that says so, never as a crash loop
            reason = (f"the raw record has no usable timestamp ({source_timestamp_micros} µs); "
                      "sealed with source_timestamp_micros 0")
            source_timestamp_micros = 0
        else:
            try:
                if not self._certainly_valid(value):
                    reason = self._refusal(value)
            except Exception as exc:  # a checker failing on this input: refused and named, never a crash loop
                reason = f"the sealer could not check this record: {type(exc).__name__}: {exc}"
        if reason is None:
            try:
                encoded, digest = seal_event(self._event_header, self._chain_id_utf8, self._hash, seq,
                                             self.source_partition, source_offset, source_timestamp_micros, value)
            except Exception as exc:  # one record the sealer cannot seal must not stall its chain
                reason = f"the sealer could not seal this record: {type(exc).__name__}: {exc}"
            else:
                if self.max_record_bytes is not None and len(encoded) > self.max_record_bytes:
                    reason = (f"too large to seal: the sealed event would be {len(encoded)} bytes, the sealed "
                              f"topic takes records of at most {self.max_record_bytes} bytes")
        if reason is None:
            kind = EVENT_KIND
        else:
            raw = value or b""
            raw_sha256 = hashlib.sha256(raw).digest()
            payload = rejection_payload(self.source_partition, source_offset, source_timestamp_micros,
                                        raw_sha256, len(raw), reason)
            digest = chain_hash(self._hash, seq, payload)
            record = {
                "chain_id": self.chain_id, "seq": seq, "prev_hash": self._hash, "hash": digest,
                "source_partition": self.source_partition, "source_offset": source_offset,
                "source_timestamp_micros": source_timestamp_micros, "raw_sha256": raw_sha256,
                "raw_size": len(raw), "reason": reason,
            }
            kind, encoded = REJECTION_KIND, self.codecs.rejection.encode(record)
        if not self._batch_hashes:
            self._batch_first_seq = seq
            self._batch_first_source = source_offset
        self._batch_hashes.append(digest)
        self._seq, self._hash = seq, digest
        self._last_source_offset = source_offset
        self.next_source_offset = source_offset + 1
        return SealedRecord(kind, encoded, seq, source_timestamp_micros)

    def seal_gap(self, last_offset: int, cause: str, reason: str, found_at_micros: int) -> SealedRecord:
        """The next chain entry for raw offsets next_source_offset..last_offset that never arrived: a gap
        entry naming the range, its ``cause`` (``lost`` or ``skipped``, see :mod:`pipeline.wire.sealed`)
        and ``reason``, so that the chain accounts for every raw offset (ValueError for an empty range)."""
        first_offset = self.next_source_offset
        if first_offset is None or last_offset < first_offset:
            raise ValueError(f"{self.chain_id}: no gap to seal before raw offset {last_offset + 1} "
                             f"(next expected {first_offset})")
        seq = self._seq + 1
        payload = gap_payload(self.source_partition, first_offset, found_at_micros, last_offset, cause, reason)
        digest = chain_hash(self._hash, seq, payload)
        encoded = self.codecs.gap.encode({
            "chain_id": self.chain_id, "seq": seq, "prev_hash": self._hash, "hash": digest,
            "source_partition": self.source_partition, "source_offset": first_offset,
            "source_timestamp_micros": found_at_micros, "source_last_offset": last_offset, "cause": cause,
            "reason": reason,
        })
        if not self._batch_hashes:
            self._batch_first_seq = seq
            self._batch_first_source = first_offset
        self._batch_hashes.append(digest)
        self._seq, self._hash = seq, digest
        self._last_source_offset = last_offset
        self.next_source_offset = last_offset + 1
        return SealedRecord(GAP_KIND, encoded, seq, found_at_micros)

    def tree_head(self, issued_at_micros: int, heartbeat: bool = False) -> SealedRecord | None:
        """A signed tree head over every entry sealed so far (C2SP tlog-checkpoint, note key name = origin),
        as a head record; None if the chain has no origin (version 1) or its history tree is not known."""
        if self.origin is None or self.history is None:
            return None
        head_hashes = self._batch_hashes[self._folded:]
        self.head_chunks = []
        if head_hashes:
            if self._folded:
                self.head_chunks = record_chunks(self.history.size, head_hashes)
                self._batch_root = None
            else:  # the batch's tree built once, for the history tree, the checkpoint's root and the witnesses
                self._batch_root, self.head_chunks = batch_and_history(record_leaves(head_hashes), self.history.size)
            self.history = extended_by_chunks(self.history, self.head_chunks)
            self._folded = len(self._batch_hashes)
        history = self.history
        root = history.root  # folded from the frontier: once
        signer = self.signing_key.signer_at(issued_at_micros)
        head = TreeHead(self.origin, history.size, root, (f"auditseal-time {issued_at_micros}",))
        # during a key change-over the next key co-signs the head (a second note signature, same key name):
        # the witness verifies whichever of the two keys it trusts for the origin, and ignores the other
        announced = getattr(self.signing_key, "announced_at", None)
        co_signers = [s for s in announced(issued_at_micros) if s.key_id != signer.key_id] if announced else []
        note = sign_tree_head(head, self._note_signer(signer), *(self._note_signer(s) for s in co_signers))
        return SealedRecord(HEAD_KIND, self.codecs.head.encode({
            "chain_id": self.chain_id, "tree_size": history.size, "root_hash": root,
            "issued_at_micros": issued_at_micros, "key_id": signer.key_id, "heartbeat": int(heartbeat), "note": note,
            "frontier": b"".join(history.frontier),
        }), None, issued_at_micros)

    def _note_signer(self, signer) -> NoteSigner:
        # the signer as the chain's note key, kept while the schedule hands out the same signer: a NoteSigner
        # caches the key hash each note signature names (derived from the public key, once per key)
        kept = self._kept_note_signers.get(signer.key_id)
        if kept is None or kept[0] is not signer:
            kept = self._kept_note_signers[signer.key_id] = (signer, NoteSigner(self.origin, _NoteKey(signer)))  # type: ignore[arg-type]
        return kept[1]

    def _refusal(self, value: bytes | None) -> str | None:
        # The reference decision, for what the one-pass check is not sure of (seal() asks it
        # first): any record of an older schema version, and every invalid record.
        return refusal(self.event_codec, value)

    def checkpoint(self, issued_at_micros: int) -> SealedRecord:
        """Close the batch: a checkpoint over the entries sealed since the last one, signed (version 2,
        naming the origin and the raw offsets the batch accounts for, if the sealer has an origin)."""
        unsigned = build_checkpoint(
            chain_id=self.chain_id, first_seq=self._batch_first_seq, record_hashes=self._batch_hashes,
            prev_checkpoint_hash=self.prev_checkpoint_hash, issued_at_micros=issued_at_micros,
            origin=self.origin,
            source_offsets=None if self.origin is None else (self._batch_first_source, self._last_source_offset),
            # the root a tree head built with the history tree, if it covered the whole batch
            batch_root=self._batch_root if self._folded == len(self._batch_hashes) else None,
        )
        # the key valid at the checkpoint's own time: a rotation takes effect exactly at its instant
        signed = sign_checkpoint(unsigned, self.signing_key.signer_at(issued_at_micros))
        self.prev_checkpoint_hash = checkpoint_hash(signed)
        if self.history is not None and self._folded < len(self._batch_hashes):
            self.history = extended_by_leaves(self.history, record_leaves(self._batch_hashes[self._folded:]))
        self._folded = 0
        self._batch_root = None
        self._batch_hashes = []
        return SealedRecord(CHECKPOINT_KIND, self.codecs.checkpoint.encode(
            checkpoint_record(signed, self._last_source_offset)))


class _NoteKey:
    # a checkpoint Signer (a key file or a PKCS#11 token) as the private key a NoteSigner signs with
    def __init__(self, signer) -> None:
        self._signer = signer

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign(message)

    def public_key(self):
        return self._signer.public_key


def history_of_head(record: dict | None, size: int) -> HistoryTree | None:
    """The history tree a head record's frontier gives, if it is of ``size`` entries and the frontier folds
    to the record's root; else None (the tree is not known)."""
    if record is None or record.get("tree_size") != size:
        return None
    frontier = record.get("frontier") or b""
    try:
        tree = HistoryTree(size, tuple(frontier[i:i + 32] for i in range(0, len(frontier), 32)))
    except Exception:  # a damaged record: the tree is not known, heads stop until it is rebuilt
        return None
    return tree if tree.root == record.get("root_hash") else None


def _never_sure(value: bytes) -> bool:
    return False


@lru_cache(maxsize=8)
def _event_header(codecs: SealedCodecs) -> bytes:
    # seal_event writes the SealedEvent fields in ENTRY_FIELDS order, then the event: refuse a
    # schema with another layout rather than write records its readers would misread
    fields = tuple((f["name"], f["type"]) for f in codecs.event.schema.parsed["fields"])
    expected = tuple(zip((*ENTRY_FIELDS, "event"), SEALED_EVENT_TYPES, strict=False))
    if fields != expected:
        raise ConfigError(f"{codecs.event.schema.name} has fields {fields}; pipeline.native.sealing.seal_event "
                          f"writes {expected}: update it with the schema")
    return bytes(codecs.event.header)


@lru_cache(maxsize=8)
def _fast_check(codec: EventCodec) -> Checker:
    # Compiled once per codec (resume() builds a sealer per partition assignment). The check
    # stands for decode + validate_event only where both mean the same schema: validate_event
    # checks against the newest AuditEvent of schemas/. Otherwise, or for a schema the generator
    # does not handle, every record takes the reference path.
    if codec.schema.parsed != default_catalog().latest(AUDIT_EVENT).parsed:
        return _never_sure
    return compile_checker(codec.schema.parsed, codec.header) or _never_sure
