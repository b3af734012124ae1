"""The records on ``audit.sealed`` and the exact bytes each chain entry hashes.

The record kinds share the topic, each an Avro single-object encoding of its own schema in
``schemas/`` (so the 8-byte fingerprint after ``C3 01`` tells them apart) and each also labelled by
the Kafka header ``auditseal-kind``:

- ``SealedEvent`` (kind ``event``): a raw event, its chain position and hash;
- ``Rejection`` (kind ``rejection``): a raw record that was refused, with the reason;
- ``Checkpoint`` (kind ``checkpoint``): a signed Merkle checkpoint over a batch of entries (version 1,
  or version 2 with the log's origin and the raw offsets it accounts for);
- ``GapEntry`` (kind ``gap``): a range of raw offsets the sealer expected and did not receive, and why;
- ``TreeHeadRecord`` (kind ``head``): a signed C2SP tlog-checkpoint note over the chain's whole history,
  before each batch's checkpoint and alone while the chain is idle (heartbeats). Not an entry.
- ``CosignatureRecord`` (kind ``cosignature``): one of those heads with the witnesses' C2SP cosignature/v1
  lines, written when the witnesses answered (after the head, off the sealing path). Not an entry.

Events, rejections and gap entries are *entries*: they take the next ``seq`` of the chain. The chain hash
(:func:`pipeline.integrity.chain.chain_hash`) is taken over the entry payload::

    event:     0x01 || u32be(source_partition) || u64be(source_offset) || u64be(source_timestamp_micros)
                    || event bytes (the raw single-object encoded AuditEvent, as produced)
    rejection: 0x02 || u32be(source_partition) || u64be(source_offset) || u64be(source_timestamp_micros)
                    || raw_sha256 (32) || u64be(raw_size) || utf8(reason)
    gap:       0x03 || u32be(source_partition) || u64be(source_offset) || u64be(source_timestamp_micros)
                    || u64be(source_last_offset) || u8(cause: 0x01 lost, 0x02 skipped) || utf8(reason)

so the source coordinates and the reason are as tamper-evident as the event itself.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

from pipeline.errors import ConfigError
from pipeline.integrity.checkpoint import Checkpoint, checkpoint_hash
from pipeline.wire.codec import HEADER_SIZE, CorruptBodyError, EventCodec
from pipeline.wire.flat_decoder import Decoder, compile_decoder, record_fields

EVENT_KIND = b"event"
REJECTION_KIND = b"rejection"
CHECKPOINT_KIND = b"checkpoint"
GAP_KIND = b"gap"
HEAD_KIND = b"head"
COSIGNATURE_KIND = b"cosignature"
ENTRY_KINDS = frozenset({EVENT_KIND, REJECTION_KIND, GAP_KIND})
"""The kinds that take a seq of the chain (checkpoints, heads and cosignatures do not)."""
GAP_LOST = "lost"          # below the raw partition's low watermark: expired or deleted, the records are gone
GAP_SKIPPED = "skipped"    # the broker delivered nothing there (transaction markers, aborted records): benign
GAP_CAUSES = {GAP_LOST: 1, GAP_SKIPPED: 2}
KIND_HEADER = "auditseal-kind"

ENTRY_FIELDS = ("chain_id", "seq", "prev_hash", "hash", "source_partition", "source_offset",
                "source_timestamp_micros")
"""The leading fields of both entry kinds, in schema order: what :meth:`SealedCodecs.decode_fields`
callers unpack; the rest is ``event`` for an event, ``raw_sha256, raw_size, reason`` for a rejection."""
_ENTRY_TAILS = {EVENT_KIND: ("event",), REJECTION_KIND: ("raw_sha256", "raw_size", "reason"),
                GAP_KIND: ("source_last_offset", "cause", "reason")}

_EVENT_TAG = b"\x01"
_REJECTION_TAG = b"\x02"
_GAP_TAG = b"\x03"
_SOURCE = struct.Struct(">IQQ")
_U64 = struct.Struct(">Q")


def chain_id_for(topic: str, partition: int) -> str:
    """The id of the chain sealing ``partition`` of the raw ``topic``: ``audit.raw/3``."""
    return f"{topic}/{partition}"


def event_payload(source_partition: int, source_offset: int, source_timestamp_micros: int, event: bytes) -> bytes:
    """The bytes a sealed event's chain hash covers (module docstring)."""
    return _EVENT_TAG + _SOURCE.pack(source_partition, source_offset, source_timestamp_micros) + event


def rejection_payload(
    source_partition: int, source_offset: int, source_timestamp_micros: int, raw_sha256: bytes, raw_size: int,
    reason: str,
) -> bytes:
    """The bytes a rejection's chain hash covers (module docstring)."""
    return (_REJECTION_TAG + _SOURCE.pack(source_partition, source_offset, source_timestamp_micros)
            + raw_sha256 + _U64.pack(raw_size) + reason.encode("utf-8"))


def gap_payload(source_partition: int, source_offset: int, source_timestamp_micros: int, source_last_offset: int,
                cause: str, reason: str) -> bytes:
    """The bytes a gap entry's chain hash covers (module docstring); ValueError for an unknown cause or a
    range that ends before it starts."""
    code = GAP_CAUSES.get(cause)
    if code is None:
        raise ValueError(f"gap cause must be one of {', '.join(GAP_CAUSES)}, found {cause!r}")
    if not 0 <= source_offset <= source_last_offset:
        raise ValueError(f"gap range must be 0 <= source_offset <= source_last_offset, found "
                         f"{source_offset}..{source_last_offset}")
    return (_GAP_TAG + _SOURCE.pack(source_partition, source_offset, source_timestamp_micros)
            + _U64.pack(source_last_offset) + bytes((code,)) + reason.encode("utf-8"))


def entry_payload(kind: bytes, record: Mapping[str, Any]) -> bytes:
    """Recompute the hashed payload of a decoded event, rejection or gap entry (for verifiers)."""
    if kind == EVENT_KIND:
        return event_payload(record["source_partition"], record["source_offset"],
                             record["source_timestamp_micros"], record["event"])
    if kind == GAP_KIND:
        return gap_payload(record["source_partition"], record["source_offset"], record["source_timestamp_micros"],
                           record["source_last_offset"], record["cause"], record["reason"])
    return rejection_payload(record["source_partition"], record["source_offset"], record["source_timestamp_micros"],
                             record["raw_sha256"], record["raw_size"], record["reason"])


def entry_payload_of_fields(kind: bytes, fields: tuple[Any, ...]) -> bytes:
    """:func:`entry_payload` of an entry decoded by :meth:`SealedCodecs.decode_fields` (values in ENTRY_FIELDS order)."""
    if kind == EVENT_KIND:
        return event_payload(*fields[4:8])
    if kind == GAP_KIND:
        return gap_payload(*fields[4:])
    return rejection_payload(*fields[4:])


@dataclass(frozen=True)
class SealedCodecs:
    """Codecs of the record kinds, compiled once per process."""

    event: EventCodec
    rejection: EventCodec
    checkpoint: EventCodec
    gap: EventCodec
    head: EventCodec
    cosignature: EventCodec

    @property
    def kinds(self) -> tuple[tuple[bytes, EventCodec], ...]:
        """(kind, codec) of every record kind."""
        return ((EVENT_KIND, self.event), (CHECKPOINT_KIND, self.checkpoint), (REJECTION_KIND, self.rejection),
                (GAP_KIND, self.gap), (HEAD_KIND, self.head), (COSIGNATURE_KIND, self.cosignature))

    def kind_of(self, value: bytes) -> bytes:
        """The kind of an encoded record, from its schema fingerprint (ValueError if none matches)."""
        fingerprint = bytes(value[2:10])
        for kind, codec in self.kinds:
            if codec.schema.fingerprint == fingerprint:
                return kind
        # an older version of a kind (a version 1 checkpoint): its codec resolves it into the newest
        writer = self.checkpoint.catalog.by_fingerprint(fingerprint)
        for kind, codec in self.kinds:
            if writer is not None and writer.family == codec.family:
                return kind
        raise ValueError(f"not an audit.sealed record: schema fingerprint {fingerprint.hex()}")

    def decode(self, value: bytes) -> tuple[bytes, dict[str, Any]]:
        """(kind, record) of any audit.sealed value."""
        kind = self.kind_of(value)
        return kind, getattr(self, kind.decode()).decode(value)

    @cached_property
    def specialised(self) -> dict[bytes, tuple[bytes, Decoder, tuple[str, ...]]]:
        """Single-object header -> (kind, specialised decoder, field names) of each kind's newest schema.

        Built on first use (only verifiers decode many records). ConfigError if a schema in
        ``schemas/`` is no longer flat or no longer has the field layout ENTRY_FIELDS describes:
        this module's unpacking must then be updated with it.
        """
        found = {}
        for kind, codec in self.kinds:
            fields = record_fields(codec.schema.parsed)
            decoder = compile_decoder(codec.schema.parsed)
            names = tuple(name for name, _ in fields or ())
            if decoder is None or (kind in ENTRY_KINDS and names != ENTRY_FIELDS + _ENTRY_TAILS[kind]):
                raise ConfigError(f"{codec.schema.name} has fields {names or 'of types'} the verifier's "
                                  "specialised decoder does not expect; update pipeline/wire/sealed.py")
            found[codec.header] = (kind, decoder, names)
        return found

    def decode_fields(self, value: bytes) -> tuple[bytes, tuple[Any, ...]]:
        """(kind, field values in schema order) of any audit.sealed value: :meth:`decode`, faster.

        Same values as :meth:`decode` (as a tuple) for every valid record; DecodeError
        (CorruptBodyError naming the field) for a damaged one, also where fastavro would return
        a short or wrapped value (see :mod:`pipeline.wire.flat_decoder`).
        """
        found = self.specialised.get(value[:HEADER_SIZE])
        if found is None:
            # Not a known header: the codecs name the problem (bad marker, unknown fingerprint).
            kind, record = self.decode(value)
            return kind, tuple(record.values())
        kind, decoder, names = found
        fields, position = decoder(value, HEADER_SIZE, len(value))
        if position != len(value):
            raise CorruptBodyError(
                f"{len(value) - position} unexpected trailing byte(s) after the {kind.decode()} body; "
                "the record is garbled or two records were concatenated"
            )
        return kind, fields

    def record_of_fields(self, kind: bytes, fields: tuple[Any, ...]) -> dict[str, Any]:
        """The record :meth:`decode` gives, from the (kind, fields) :meth:`decode_fields` gives."""
        parsed = getattr(self, kind.decode()).schema.parsed
        return dict(zip((field["name"] for field in parsed["fields"]), fields, strict=False))


@lru_cache(maxsize=1)
def sealed_codecs() -> SealedCodecs:
    """The process-wide codecs of the sealed record kinds."""
    return SealedCodecs(EventCodec(family="sealed_event"), EventCodec(family="rejection"),
                        EventCodec(family="checkpoint"), EventCodec(family="gap"), EventCodec(family="tree_head"),
                        EventCodec(family="cosignature"))


def checkpoint_record(checkpoint: Checkpoint, last_source_offset: int | None = None) -> dict[str, Any]:
    """The Avro record of a signed checkpoint (of either version; the schema's newest version).

    A version 2 checkpoint stores the offsets it signs; a version 1 checkpoint stores
    ``last_source_offset``, which it does not sign, as given.
    """
    if checkpoint.origin is not None:
        if last_source_offset is not None and last_source_offset != checkpoint.last_source_offset:
            raise ValueError(f"{checkpoint.describe()} signs last_source_offset {checkpoint.last_source_offset}, "
                             f"not {last_source_offset}")
        last_source_offset = checkpoint.last_source_offset
    if last_source_offset is None:
        raise ValueError(f"{checkpoint.describe()}: a version 1 checkpoint record needs its last_source_offset")
    return {
        "chain_id": checkpoint.chain_id, "first_seq": checkpoint.first_seq, "last_seq": checkpoint.last_seq,
        "merkle_root": checkpoint.merkle_root, "chain_head": checkpoint.chain_head,
        "prev_checkpoint_hash": checkpoint.prev_checkpoint_hash, "key_id": checkpoint.key_id,
        "issued_at_micros": checkpoint.issued_at_micros, "signature": checkpoint.signature,
        "checkpoint_hash": checkpoint_hash(checkpoint), "last_source_offset": last_source_offset,
        # a version 1 checkpoint stores the schema's defaults: no origin, no signed first offset
        "origin": checkpoint.origin or "",
        "first_source_offset": -1 if checkpoint.first_source_offset is None else checkpoint.first_source_offset,
    }


def checkpoint_from_record(record: Mapping[str, Any]) -> Checkpoint:
    """The Checkpoint a decoded checkpoint record carries (its stored checkpoint_hash is not trusted).

    A record with an origin is a version 2 checkpoint, which signs its source offsets; a version 1
    record (no origin, as every record written before version 2 reads) leaves them unsigned.
    """
    origin = record.get("origin") or None  # "" (the default a version 1 record reads with): version 1
    return Checkpoint(
        chain_id=record["chain_id"], first_seq=record["first_seq"], last_seq=record["last_seq"],
        merkle_root=record["merkle_root"], chain_head=record["chain_head"],
        prev_checkpoint_hash=record["prev_checkpoint_hash"], key_id=record["key_id"],
        issued_at_micros=record["issued_at_micros"], signature=record["signature"],
        origin=origin,
        first_source_offset=None if origin is None else record.get("first_source_offset"),
        last_source_offset=None if origin is None else record.get("last_source_offset"),
    )
