"""The archive object of one batch: its Avro container file, its manifest, its key (pure, no I/O).

The same records always give the same bytes: the OCF's sync marker is derived from the range
(:func:`pipeline.archive.layout.sync_marker`), its header holds only the schema and the codec,
the deflate codec is deterministic for one zlib, and the manifest's times come from the records.
That is what lets a retry after a crash rewrite an object's key with identical content.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import fastavro

from pipeline.archive.encryption import KeyEncryptionKey, encrypt_object
from pipeline.archive.layout import (
    ARCHIVED_RECORD_FAMILY,
    KIND_CHECKPOINT,
    KIND_COSIGNATURE,
    KIND_EVENT,
    KIND_GAP,
    KIND_HEAD,
    KIND_REJECTION,
    KIND_UNKNOWN,
    OPTIONAL_KINDS,
    ChainRange,
    CheckpointRef,
    Manifest,
    format_time,
    manifest_key,
    object_key,
    sync_marker,
)
from pipeline.archive.query_index import (
    ACTOR_FIELD,
    HASHES,
    RESOURCE_FIELD,
    BloomFilter,
    IndexBuilder,
    QueryIndex,
    filter_bits,
    filter_prefix,
)
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.checkpoint import checkpoint_hash
from pipeline.native.archive_batch import BatchScan, bloom_table
from pipeline.wire.catalog import default_catalog
from pipeline.wire.codec import HEADER_SIZE, MARKER, DecodeError
from pipeline.wire.event_head import ACTOR_TYPES, OUTCOME_STATUSES, check_layout, read_event_index_fields
from pipeline.wire.flat_decoder import record_fields
from pipeline.wire.sealed import checkpoint_from_record, sealed_codecs
from pipeline.wire.varint import encode_long, read_long

# what each record kind takes part in, for the compiled pass (pipeline/native/archive_batch.pyx)
ROLE_NONE, ROLE_ENTRY, ROLE_EVENT, ROLE_CHECKPOINT = 0, 1, 2, 3

SYNC_INTERVAL = 256 * 1024
"""Bytes of records per OCF block: large enough for deflate to work well, small enough to resync after damage."""

DEFAULT_DEFLATE_LEVEL = 1
"""zlib level 1: within a few percent of level 6 on these records, several times faster."""

_KIND_ORDER = (KIND_CHECKPOINT, KIND_EVENT, KIND_REJECTION, KIND_UNKNOWN, KIND_GAP, KIND_HEAD, KIND_COSIGNATURE)
"""The manifest's record_kinds, in the order it has always listed them."""

ArchivedInput = tuple[int, int, bytes]
"""(offset, Kafka timestamp in ms or -1, value bytes) of one record, as read from Kafka."""


@dataclass(frozen=True)
class ArchiveObject:
    """What to write for one batch: the object and its manifest, both under COMPLIANCE lock until ``retain_until``."""

    key: str
    body: bytes
    manifest: Manifest
    manifest_bytes: bytes
    retain_until: datetime.datetime

    @property
    def manifest_key(self) -> str:
        """Where the manifest goes."""
        return manifest_key(self.key)


@lru_cache(maxsize=1)
def archived_record_schema() -> dict[str, Any]:
    """The parsed newest ``archived_record`` schema (what the sink writes)."""
    return default_catalog().latest(ARCHIVED_RECORD_FAMILY).parsed


@lru_cache(maxsize=1)
def _kinds_by_header() -> dict[bytes, str]:
    # every version of each kind: the topic still holds records of an older one (v1 checkpoints) after an upgrade
    codecs = sealed_codecs()
    return {MARKER + version.fingerprint: kind
            for kind, codec in ((KIND_EVENT, codecs.event), (KIND_REJECTION, codecs.rejection),
                                (KIND_CHECKPOINT, codecs.checkpoint), (KIND_GAP, codecs.gap),
                                (KIND_HEAD, codecs.head), (KIND_COSIGNATURE, codecs.cosignature))
            for version in codec.catalog.versions(codec.family)}


def kind_of(value: bytes) -> str:
    """``event``, ``rejection`` or ``checkpoint`` from the single-object header of ``value``, else ``unknown``."""
    return _kinds_by_header().get(value[:HEADER_SIZE], KIND_UNKNOWN)


def entry_position(value: bytes) -> tuple[str, int]:
    """(chain_id, seq) of a sealed event or rejection, read from the first two fields of its body
    without decoding the rest (varints read by :mod:`pipeline.wire.varint`); ValueError if the bytes
    are too short or damaged."""
    length, position = read_long(value, HEADER_SIZE, len(value))
    end = position + length
    if length < 0 or end > len(value):
        raise ValueError("chain_id runs past the end of the record")
    seq, _ = read_long(value, end, len(value))
    return value[position:end].decode("utf-8"), seq


def checkpoint_ref(value: bytes) -> CheckpointRef | None:
    """The manifest's reference to a checkpoint record (its range and hash), None if it does not decode
    (archived as is; the verifier reports it)."""
    try:
        record = sealed_codecs().checkpoint.decode(value)
        digest = checkpoint_hash(checkpoint_from_record(record)).hex()
    except Exception:
        return None
    return CheckpointRef(record["chain_id"], record["first_seq"], record["last_seq"], digest)


def summarise(records: Sequence[ArchivedInput]) -> tuple[list[str], dict[str, int], list[ChainRange], list[CheckpointRef]]:
    """Per record its kind, plus the manifest's record_kinds, chains and checkpoints."""
    kinds_by_header = _kinds_by_header()
    kinds = [kinds_by_header.get(value[:HEADER_SIZE], KIND_UNKNOWN) for _, _, value in records]
    counts = dict.fromkeys(_KIND_ORDER, 0)
    chains: dict[str, list[int]] = {}
    checkpoints: list[CheckpointRef] = []
    for (_, _, value), kind in zip(records, kinds, strict=False):
        counts[kind] += 1
        if kind == KIND_EVENT or kind == KIND_REJECTION or kind == KIND_GAP:
            try:
                chain_id, seq = entry_position(value)
            except (ValueError, IndexError, UnicodeDecodeError):
                continue  # a damaged entry is archived as is; the verifier reports it
            span = chains.get(chain_id)
            if span is None:
                chains[chain_id] = [seq, seq, 1]
            else:
                span[1] = seq
                span[2] += 1
        elif kind == KIND_CHECKPOINT:
            found = checkpoint_ref(value)
            if found is not None:
                checkpoints.append(found)
    return kinds, counts, _chain_ranges(chains), checkpoints


def _chain_ranges(chains: dict[str, list[int]]) -> list[ChainRange]:
    return [ChainRange(chain_id, first, last, entries) for chain_id, (first, last, entries) in sorted(chains.items())]


def index_fields(value: bytes) -> tuple[int, str, str] | None:
    """(occurred_at, actor.id, resource.id) of a sealed event record for the query index, None if its
    AuditEvent cannot be read (archived as is; the object is then read by every query)."""
    try:
        _, fields = sealed_codecs().decode_fields(value)
        return read_event_index_fields(fields[-1])  # SealedEvent.event: the AuditEvent bytes, its last field
    except (DecodeError, ValueError, IndexError, TypeError):
        return None


def query_index(records: Sequence[ArchivedInput], kinds: Sequence[str]) -> QueryIndex:
    """The manifest's query index (:mod:`pipeline.archive.query_index`) of a batch's event records."""
    builder = IndexBuilder()
    for (_, _, value), kind in zip(records, kinds, strict=False):
        if kind != KIND_EVENT:
            continue
        found = index_fields(value)
        if found is None:
            builder.add_undecoded()
        else:
            builder.add(*found)
    return builder.index()


def container_bytes(topic: str, partition: int, records: Sequence[ArchivedInput], kinds: Sequence[str], *,
                    codec: str = "deflate", level: int | None = DEFAULT_DEFLATE_LEVEL,
                    sync_interval: int = SYNC_INTERVAL) -> bytes:
    """The Avro object container file of one batch, one ArchivedRecord per Kafka record, deterministic."""
    rows = [{"topic": topic, "partition": partition, "offset": offset, "timestamp_micros": timestamp * 1000,
             "kind": kind, "value": value} for (offset, timestamp, value), kind in zip(records, kinds, strict=False)]
    out = io.BytesIO()
    fastavro.writer(out, archived_record_schema(), rows, codec=codec, sync_interval=sync_interval,
                    sync_marker=sync_marker(topic, partition, records[0][0]),
                    codec_compression_level=level if codec == "deflate" else None)
    return out.getvalue()


@dataclass(frozen=True)
class _Parts:
    """What the manifest and the object are made of, from either the readable or the compiled pass."""

    counts: dict[str, int]
    chains: list[ChainRange]
    checkpoints: list[CheckpointRef]
    index: QueryIndex
    body: bytes
    first_timestamp: int
    last_timestamp: int


def _reference_parts(topic: str, partition: int, records: Sequence[ArchivedInput], codec: str,
                     level: int | None, sync_interval: int) -> _Parts:
    kinds, counts, chains, checkpoints = summarise(records)
    body = container_bytes(topic, partition, records, kinds, codec=codec, level=level, sync_interval=sync_interval)
    timestamps = [timestamp for _, timestamp, _ in records]
    return _Parts(counts, chains, checkpoints, query_index(records, kinds), body, min(timestamps), max(timestamps))


def batch_scan(checkpoint_ref: Callable[[bytes], CheckpointRef | None] = checkpoint_ref,
               index_fields: Callable[[bytes], tuple[int, str, str] | None] = index_fields) -> BatchScan:
    """The compiled batch pass configured from the catalog, handing checkpoints and any event it does not
    read cleanly to ``checkpoint_ref`` and ``index_fields`` (the readable functions)."""
    codecs = sealed_codecs()
    kinds_by_header = _kinds_by_header()
    roles = {KIND_CHECKPOINT: ROLE_CHECKPOINT, KIND_EVENT: ROLE_EVENT, KIND_REJECTION: ROLE_ENTRY,
             KIND_GAP: ROLE_ENTRY, KIND_UNKNOWN: ROLE_NONE, KIND_HEAD: ROLE_NONE,
             KIND_COSIGNATURE: ROLE_NONE}
    # decode_fields reads the newest event schema field by field; older versions go through fastavro (not compiled)
    layouts = {codecs.event.header: record_fields(codecs.event.schema.parsed)} \
        if codecs.event.header in codecs.specialised else {}
    return BatchScan(HEADER_SIZE, [(header, _KIND_ORDER.index(kind)) for header, kind in kinds_by_header.items()],
                     _KIND_ORDER, _KIND_ORDER.index(KIND_UNKNOWN), bytes(roles[kind] for kind in _KIND_ORDER),
                     {header: layout for header, layout in layouts.items() if layout is not None},
                     sorted(check_layout()), len(ACTOR_TYPES), len(OUTCOME_STATUSES), checkpoint_ref, index_fields)


_batch_scan = lru_cache(maxsize=1)(batch_scan)


def _container_header(topic: str, partition: int, first_offset: int, codec: str, level: int | None) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, archived_record_schema(), [], codec=codec, sync_marker=sync_marker(topic, partition, first_offset),
                    codec_compression_level=level if codec == "deflate" else None)
    return out.getvalue()


def _compiled_filter(field_name: str, distinct: set[str]) -> BloomFilter:
    """:meth:`BloomFilter.of` over a set of distinct values, its table built by the compiled twin."""
    bits = filter_bits(len(distinct))
    return BloomFilter(field_name, bits, HASHES, bloom_table(filter_prefix(field_name), distinct, bits, HASHES))


def _compiled_parts(topic: str, partition: int, records: Sequence[ArchivedInput], codec: str,
                    level: int | None, sync_interval: int) -> _Parts | None:
    scanned = _batch_scan().scan(records, topic, partition, sync_interval)
    if scanned is None:
        return None
    counts, chains, checkpoints, (events, undecoded, low, high, actors, resources), (first, last), blocks = scanned
    # the blocks as fastavro's writer frames them: count, size, data (deflate: zlib's stream without its
    # 2-byte header and last byte, fastavro's deflate_write_block), sync marker
    marker = sync_marker(topic, partition, records[0][0])
    out = [_container_header(topic, partition, records[0][0], codec, level)]
    for count, block in blocks:
        if codec == "deflate":
            block = (zlib.compress(block, level) if level is not None else zlib.compress(block))[2:-1]
        out += (encode_long(count), encode_long(len(block)), block, marker)
    index = QueryIndex(events, undecoded, low, high, _compiled_filter(ACTOR_FIELD, actors),
                       _compiled_filter(RESOURCE_FIELD, resources))
    return _Parts(dict(zip(_KIND_ORDER, counts, strict=True)), _chain_ranges(chains), checkpoints, index,
                  b"".join(out), first, last)


def object_query_index(records: Sequence[ArchivedInput]) -> QueryIndex:
    """The query index :func:`build_object` writes for ``records``, by the same compiled pass (the readable
    :func:`query_index` where the pass declines the batch): what the verifier rebuilds to check a manifest."""
    scanned = _batch_scan().scan(records, "", 0, SYNC_INTERVAL)
    if scanned is None:
        return query_index(records, [kind_of(value) for _, _, value in records])
    events, undecoded, low, high, actors, resources = scanned[3]
    return QueryIndex(events, undecoded, low, high, _compiled_filter(ACTOR_FIELD, actors),
                      _compiled_filter(RESOURCE_FIELD, resources))


def build_object(topic: str, partition: int, records: Sequence[ArchivedInput], *, profile: ComplianceProfile,
                 prefix: str = "", codec: str = "deflate", level: int | None = DEFAULT_DEFLATE_LEVEL,
                 master_key: KeyEncryptionKey | None = None, reference: bool = False,
                 sync_interval: int = SYNC_INTERVAL) -> ArchiveObject:
    """The object, manifest and retention of one batch: ``records`` are a contiguous, offset-ordered
    range of one partition as read with read_committed.

    Built by one compiled pass (:mod:`pipeline.native.archive_batch`); ``reference=True`` builds it with
    the readable functions above instead, the same bytes (the differential tests compare the two)."""
    if not records:
        raise ValueError("an archive object needs at least one record")
    first_offset, last_offset = records[0][0], records[-1][0]
    key = object_key(topic, partition, first_offset, last_offset, prefix=prefix, encrypted=master_key is not None)
    compiled = not reference and codec in ("null", "deflate")  # fastavro frames any other codec itself
    parts = None if not compiled else _compiled_parts(topic, partition, records, codec, level, sync_interval)
    if parts is None:
        parts = _reference_parts(topic, partition, records, codec, level, sync_interval)
    body, encryption = parts.body, None
    if master_key is not None:
        body, encryption = encrypt_object(body, key, master_key)
    newest_micros = parts.last_timestamp * 1000
    retain_until = profile.retain_until(newest_micros)
    counts = parts.counts
    manifest = Manifest(
        key=key, sha256=hashlib.sha256(body).hexdigest(), size=len(body), record_count=len(records), topic=topic,
        partition=partition, first_offset=first_offset, last_offset=last_offset,
        first_timestamp_micros=parts.first_timestamp * 1000, last_timestamp_micros=newest_micros,
        record_kinds={kind: n for kind, n in counts.items() if n or kind not in OPTIONAL_KINDS},
        chains=tuple(parts.chains), checkpoints=tuple(parts.checkpoints), compliance_profile=profile.name,
        retain_until=format_time(retain_until), codec=codec, encryption=encryption, index=parts.index,
    )
    return ArchiveObject(key, body, manifest, manifest.to_bytes(), retain_until)


def read_archived_records(container: bytes) -> Iterator[dict[str, Any]]:
    """The ArchivedRecord dicts of an (unencrypted) object's bytes, in offset order."""
    for record in fastavro.reader(io.BytesIO(container)):
        yield cast(dict[str, Any], record)  # ArchivedRecord is a record schema
