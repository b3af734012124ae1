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
from collections.abc import Iterator, Sequence
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
from pipeline.archive.query_index import IndexBuilder, QueryIndex
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.checkpoint import checkpoint_hash
from pipeline.wire.catalog import default_catalog
from pipeline.wire.codec import HEADER_SIZE, MARKER, DecodeError
from pipeline.wire.event_head import read_event_index_fields
from pipeline.wire.sealed import checkpoint_from_record, sealed_codecs
from pipeline.wire.varint import read_long

SYNC_INTERVAL = 256 * 1024
"""Bytes of records per OCF block: large enough for deflate to work well, small enough to resync after damage."""

DEFAULT_DEFLATE_LEVEL = 1
"""zlib level 1: within a few percent of level 6 on these records, several times faster."""

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


def summarise(records: Sequence[ArchivedInput]) -> tuple[list[str], dict[str, int], list[ChainRange], list[CheckpointRef]]:
    """Per record its kind, plus the manifest's record_kinds, chains and checkpoints."""
    kinds_by_header = _kinds_by_header()
    kinds = [kinds_by_header.get(value[:HEADER_SIZE], KIND_UNKNOWN) for _, _, value in records]
    counts = dict.fromkeys((KIND_CHECKPOINT, KIND_EVENT, KIND_REJECTION, KIND_UNKNOWN, KIND_GAP, KIND_HEAD,
                            KIND_COSIGNATURE), 0)
    chains: dict[str, list[int]] = {}
    checkpoints: list[CheckpointRef] = []
    checkpoint_codec = sealed_codecs().checkpoint
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
            try:
                record = checkpoint_codec.decode(value)
                digest = checkpoint_hash(checkpoint_from_record(record)).hex()
            except Exception:
                continue
            checkpoints.append(CheckpointRef(record["chain_id"], record["first_seq"], record["last_seq"], digest))
    ranges = [ChainRange(chain_id, first, last, entries) for chain_id, (first, last, entries) in sorted(chains.items())]
    return kinds, counts, ranges, checkpoints


def query_index(records: Sequence[ArchivedInput], kinds: Sequence[str]) -> QueryIndex:
    """The manifest's query index (:mod:`pipeline.archive.query_index`) of a batch's event records."""
    builder = IndexBuilder()
    codecs = sealed_codecs()
    for (_, _, value), kind in zip(records, kinds, strict=False):
        if kind != KIND_EVENT:
            continue
        try:
            _, fields = codecs.decode_fields(value)
            found = read_event_index_fields(fields[-1])  # SealedEvent.event: the AuditEvent bytes, its last field
        except (DecodeError, ValueError, IndexError, TypeError):
            builder.add_undecoded()  # archived as is; the object is then read by every query
            continue
        builder.add(*found)
    return builder.index()


def container_bytes(topic: str, partition: int, records: Sequence[ArchivedInput], kinds: Sequence[str], *,
                    codec: str = "deflate", level: int | None = DEFAULT_DEFLATE_LEVEL) -> bytes:
    """The Avro object container file of one batch, one ArchivedRecord per Kafka record, deterministic."""
    rows = [{"topic": topic, "partition": partition, "offset": offset, "timestamp_micros": timestamp * 1000,
             "kind": kind, "value": value} for (offset, timestamp, value), kind in zip(records, kinds, strict=False)]
    out = io.BytesIO()
    fastavro.writer(out, archived_record_schema(), rows, codec=codec, sync_interval=SYNC_INTERVAL,
                    sync_marker=sync_marker(topic, partition, records[0][0]),
                    codec_compression_level=level if codec == "deflate" else None)
    return out.getvalue()


def build_object(topic: str, partition: int, records: Sequence[ArchivedInput], *, profile: ComplianceProfile,
                 prefix: str = "", codec: str = "deflate", level: int | None = DEFAULT_DEFLATE_LEVEL,
                 master_key: KeyEncryptionKey | None = None) -> ArchiveObject:
    """The object, manifest and retention of one batch: ``records`` are a contiguous, offset-ordered
    range of one partition as read with read_committed."""
    if not records:
        raise ValueError("an archive object needs at least one record")
    first_offset, last_offset = records[0][0], records[-1][0]
    key = object_key(topic, partition, first_offset, last_offset, prefix=prefix, encrypted=master_key is not None)
    kinds, counts, chains, checkpoints = summarise(records)
    body = container_bytes(topic, partition, records, kinds, codec=codec, level=level)
    encryption = None
    if master_key is not None:
        body, encryption = encrypt_object(body, key, master_key)
    timestamps = [timestamp for _, timestamp, _ in records]
    newest_micros = max(timestamps) * 1000
    retain_until = profile.retain_until(newest_micros)
    manifest = Manifest(
        key=key, sha256=hashlib.sha256(body).hexdigest(), size=len(body), record_count=len(records), topic=topic,
        partition=partition, first_offset=first_offset, last_offset=last_offset,
        first_timestamp_micros=min(timestamps) * 1000, last_timestamp_micros=newest_micros, record_kinds={kind: n for kind, n in counts.items() if n or kind not in OPTIONAL_KINDS},
        chains=tuple(chains), checkpoints=tuple(checkpoints), compliance_profile=profile.name,
        retain_until=format_time(retain_until), codec=codec, encryption=encryption,
        index=query_index(records, kinds),
    )
    return ArchiveObject(key, body, manifest, manifest.to_bytes(), retain_until)


def read_archived_records(container: bytes) -> Iterator[dict[str, Any]]:
    """The ArchivedRecord dicts of an (unencrypted) object's bytes, in offset order."""
    for record in fastavro.reader(io.BytesIO(container)):
        yield cast(dict[str, Any], record)  # ArchivedRecord is a record schema
