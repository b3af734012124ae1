"""One partition of ``audit.sealed``, in offset order, turned into OCSF documents in the same order (pure).

The sealer writes each batch of entries and the checkpoint signing it in one transaction, the
checkpoint last. An entry's evidence names its covering checkpoint, so :class:`PartitionMapper`
holds a partition's entries until their checkpoint arrives and then releases the whole batch,
entries first and the checkpoint last: chain order, one document per sealed record. A record it
cannot read becomes an "unmapped" document in its place (:func:`pipeline.siem.ocsf.unmapped_record`),
never a gap.

The evidence attached is what the checkpoint says, checked only as far as building the inclusion
proofs needs: when the held entries are not exactly ``first_seq..last_seq`` or do not root to the
checkpoint's ``merkle_root`` (an incomplete batch at the start of the retained topic, or a damaged
log), the entries are released without a signature and with ``evidence_error`` saying why.
Verifying the whole log stays ``auditseal verify``'s job.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

import fastavro
import orjson

from pipeline.integrity.merkle import audit_path, record_leaf_hash, root_from_leaf_hashes, tree_levels
from pipeline.siem import fast, ocsf
from pipeline.siem.ocsf import Inclusion, Position
from pipeline.wire.codec import HEADER_SIZE, MARKER, DecodeError, EventCodec, default_codec
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    COSIGNATURE_KIND,
    EVENT_KIND,
    GAP_KIND,
    HEAD_KIND,
    REJECTION_KIND,
    SealedCodecs,
    entry_payload,
    sealed_codecs,
)

FORMATS = ("ocsf", "json")


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {key: _without_logical_types(value) for key, value in schema.items() if key != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


class PlainEventReader:
    """AuditEvent bytes decoded with timestamps as ints and uuids as strings (what the mapping writes),
    skipping fastavro's datetime and UUID objects. Anything unusual (another header, trailing bytes, a
    decoding error) goes to the codec, which decides and words the error."""

    def __init__(self, codec: EventCodec) -> None:
        self.codec = codec
        newest = codec.schema
        self.reader_schema = fastavro.parse_schema(_without_logical_types(newest.parsed))
        self.writers = {}
        for version in codec.catalog.versions(newest.family):
            writer = fastavro.parse_schema(_without_logical_types(version.parsed))
            self.writers[MARKER + version.fingerprint] = (writer, None if version is newest else self.reader_schema)

    def decode(self, value: bytes) -> dict[str, Any]:
        """The AuditEvent of single-object bytes (newest version's fields); DecodeError as the codec words it."""
        schemas = self.writers.get(bytes(value[:HEADER_SIZE]))
        if schemas is not None:
            stream = io.BytesIO(value)
            stream.seek(HEADER_SIZE)
            try:
                event = fastavro.schemaless_reader(stream, schemas[0], schemas[1])
                if stream.tell() == len(value):
                    return event
            except Exception:  # damaged: the codec below raises the worded DecodeError
                pass
        return self.codec.decode(value)


class Document(NamedTuple):
    """One released document: its JSON bytes (no newline) and what the bridge and export count it by."""

    json: bytes
    class_uid: int | None  # None in the ``json`` format
    time: int | None       # OCSF ``time`` (ms); None in the ``json`` format
    unsigned: bool         # an entry released without a covering signature (``evidence_error``)


class Lines(NamedTuple):
    """A batch's documents as JSON lines in one buffer (``PartitionMapper(lines=...)``, what export writes)."""

    data: bytes               # the documents whose time is in the mapper's window, each followed by a newline
    written: int              # how many documents ``data`` holds
    by_class: dict[int, int]  # every document rendered, kept or not, by class_uid (all signed events)


class _Held:
    """A record read and not yet released (its Position is made only when the readable mapping needs it)."""

    __slots__ = ("topic", "partition", "offset", "timestamp_ms", "value", "kind", "record", "payload", "event",
                 "problem", "fields", "seq", "hash", "_position")

    def __init__(self, topic: str, partition: int, offset: int, timestamp_ms: int | None, value: bytes,
                 kind: bytes | None, record: dict[str, Any] | None, problem: str | None = None,
                 fields: tuple[Any, ...] | None = None) -> None:
        self.topic, self.partition, self.offset, self.timestamp_ms = topic, partition, offset, timestamp_ms
        self.value, self.kind, self.record, self.problem = value, kind, record, problem  # kind None: unreadable
        self.payload: bytes | None = None
        self.event: dict[str, Any] | None = None
        # an event whose reading is left to the compiled writer (or, if it declines, to _complete): its
        # SealedEvent values, the event not decoded
        self.fields = fields
        self.seq: int | None = None  # an entry's (event or rejection) chain position and hash
        self.hash: bytes | None = None
        self._position: Position | None = None

    @property
    def position(self) -> Position:
        if self._position is None:
            self._position = Position(self.topic, self.partition, self.offset, self.timestamp_ms)
        return self._position


@lru_cache(maxsize=1)
def plain_event_reader() -> PlainEventReader:
    """The process-wide PlainEventReader over the default codec (both the mapping and its re-verification read
    events with it, so they see the same values)."""
    return PlainEventReader(default_codec())


class PartitionMapper:
    """Maps one partition's sealed values (fed in offset order) to documents, batch by batch.

    ``format`` ``ocsf`` gives OCSF events (:mod:`pipeline.siem.ocsf`); ``json`` gives each record's
    own fields as JSON (bytes hex, the inner AuditEvent decoded), also released per batch so that
    both formats hold the same records at the same moment. Documents are released as
    :class:`Document` (JSON bytes). In the ``ocsf`` format, events are written by the compiled
    :mod:`pipeline.native.ocsf_writer` where it can (``native``; the same bytes, held equal by the
    differential tests), everything else by the readable mapping: a batch of sealed events only is
    held as its raw values and rendered in one call at its checkpoint; a batch with any other record
    (a rejection, a gap, an unreadable value), or one the writer declines, is read and mapped record
    by record, each event by the writer unless it declines it too. With ``lines`` (``(since_ms, until_ms)``,
    what export passes) a batch rendered in one call is released as one :class:`Lines` holding the
    documents whose time is in that window, not a Document each.
    """

    def __init__(self, topic: str, partition: int, *, format: str = "ocsf", product_version: str | None = None,
                 codecs: SealedCodecs | None = None, event_codec: EventCodec | None = None,
                 native: bool = True, lines: tuple[int, int] | None = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, found {format!r}")
        self.topic = topic
        self.partition = partition
        self.format = format
        self.product_version = product_version
        self._codecs = codecs or sealed_codecs()
        self._event_reader = PlainEventReader(event_codec or default_codec()) if event_codec else plain_event_reader()
        self._held: list[_Held] = []
        self._writer = (fast.event_writer(topic, partition, product_version, event_codec or default_codec())
                        if native and format == "ocsf" else None)
        # With the compiled writer, a batch's SealedEvent values are held as they came, (offset, timestamp_ms,
        # value), until the checkpoint: the writer then renders the whole batch in one call. The first record of
        # another kind spills them into _held (read as below) and the batch goes on record by record.
        # (AUDITSEAL_SIEM_NATIVE=records keeps the writer record by record: bench.siem's baseline of this)
        self._sealed_header = (self._codecs.event.header if self._writer is not None
                               and os.environ.get("AUDITSEAL_SIEM_NATIVE") != "records" else None)
        self._raw: list[tuple[int, int | None, bytes]] | None = [] if self._sealed_header is not None else None
        # export's [since, until) in ms: a whole batch then comes back as one Lines, not a Document per entry
        self._lines = lines
        # field names per kind, so a record is one dict(zip()) (record_of_fields' result, without its lookups)
        self._names = {kind: tuple(f["name"] for f in getattr(self._codecs, kind.decode()).schema.parsed["fields"])
                       for kind in (EVENT_KIND, REJECTION_KIND, CHECKPOINT_KIND, GAP_KIND, HEAD_KIND, COSIGNATURE_KIND)}

    @property
    def held(self) -> int:
        """Records read and not yet released (waiting for their checkpoint)."""
        return len(self._held) + (len(self._raw) if self._raw else 0)

    @property
    def first_held_offset(self) -> int | None:
        """Offset of the oldest record not yet released (where a restart must read again)."""
        if self._raw:
            return self._raw[0][0]  # raw values always precede what a spill put in _held
        return self._held[0].offset if self._held else None

    def add(self, offset: int, value: bytes, timestamp_ms: int | None = None) -> list[Document | Lines]:
        """Read one record; returns the documents of the batch it completes (a checkpoint), else [] (with
        ``lines``, a whole batch of sealed events comes as one :class:`Lines` before its checkpoint's Document)."""
        raw = self._raw
        if raw is not None and value[:HEADER_SIZE] == self._sealed_header:
            raw.append((offset, timestamp_ms, value))
            return []
        held = self._read(offset, timestamp_ms, value)
        if held.kind == CHECKPOINT_KIND:
            return self._release(held)
        if held.kind == HEAD_KIND or held.kind == COSIGNATURE_KIND:
            # a tree head is integrity metadata over the chain, not an event: it is not forwarded (the README's
            # SIEM section says so); it stays on audit.sealed and in the archive, where verifiers read it
            return []
        self._spill()
        self._held.append(held)
        return []

    def flush(self) -> list[Document]:
        """Release what is held without a checkpoint (the end of an export): entries without signatures."""
        self._spill()
        documents = self._render(self._held, "no checkpoint covers this entry yet in what was read")
        self._held = []
        self._restart_raw()
        return documents

    def reset(self) -> None:
        """Forget what is held (the partition was revoked, or a transaction failed: it will be read again)."""
        self._held = []
        self._restart_raw()

    def _spill(self) -> None:
        # the batch goes on record by record: the raw values held so far are read as any record is
        raw = self._raw
        if raw is None:
            return
        self._raw = None
        if raw:
            self._held[:0] = [self._read(offset, timestamp_ms, value) for offset, timestamp_ms, value in raw]

    def _restart_raw(self) -> None:
        self._raw = [] if self._sealed_header is not None else None

    # ---- reading ------------------------------------------------------------------------------------
    def _read(self, offset: int, timestamp_ms: int | None, value: bytes) -> _Held:
        codecs = self._codecs
        try:
            kind, fields = codecs.decode_fields(value)
        except (DecodeError, ValueError) as exc:
            return _Held(self.topic, self.partition, offset, timestamp_ms, value, None, None,
                         f"not a readable audit.sealed record: {exc}")
        if kind == CHECKPOINT_KIND or kind == HEAD_KIND or kind == COSIGNATURE_KIND:
            return _Held(self.topic, self.partition, offset, timestamp_ms, value, kind,
                         dict(zip(self._names[kind], fields, strict=False)))
        held = _Held(self.topic, self.partition, offset, timestamp_ms, value, kind, None, None, fields)
        held.seq, held.hash = fields[1], fields[3]  # ENTRY_FIELDS' chain_id, seq, prev_hash, hash
        if kind == EVENT_KIND and self._writer is not None:
            return held  # the record dict is made only if the compiled writer declines it
        return self._complete(held)

    def _complete(self, held: _Held) -> _Held:
        # the reference's reading of an entry: its hashed payload, and an event's AuditEvent decoded
        kind = held.kind
        record = held.record = dict(zip(self._names[kind], held.fields, strict=False))
        held.fields = None
        held.payload = entry_payload(kind, record)
        if kind == GAP_KIND:  # no OCSF class of its own: delivered unmapped, with its evidence and its account
            held.problem = (f"gap entry: raw offsets {record['source_offset']}..{record['source_last_offset']} "
                            f"{record['cause']}: {record['reason']}")
        elif kind == EVENT_KIND:
            try:
                held.event = self._event_reader.decode(record["event"])
            except DecodeError as exc:
                held.problem = f"the sealed AuditEvent is unreadable: {exc}"
        return held

    # ---- releasing ----------------------------------------------------------------------------------
    def _release(self, checkpoint: _Held) -> list[Document | Lines]:
        record = checkpoint.record
        raw = self._raw
        if raw and not self._held:
            # the whole batch in one call of the compiled writer; None: record by record, as below
            covering = ocsf.covering_checkpoint(record, checkpoint.position)
            arguments = (raw, self._sealed_header, record["first_seq"], record["last_seq"], record["merkle_root"],
                         orjson.dumps(covering.signature), orjson.dumps(covering.evidence))
            if self._lines is not None:
                lines = self._writer.render_sealed_lines(*arguments, *self._lines)
                documents = None if lines is None else [Lines(*lines)]
            else:
                documents = self._writer.render_sealed_batch(*arguments, Document)
            if documents is not None:
                self._restart_raw()
                documents.append(self._document(self._checkpoint_document(checkpoint)))
                return documents
        self._spill()
        self._restart_raw()
        held, self._held = self._held, []
        entries = [h for h in held if h.seq is not None]
        seqs = [h.seq for h in entries]
        problem, levels = None, []
        if seqs != list(range(record["first_seq"], record["last_seq"] + 1)):
            span = f"{seqs[0]}..{seqs[-1]}" if seqs else "none"
            problem = (f"the entries read before checkpoint {record['first_seq']}..{record['last_seq']} are "
                       f"{len(seqs)} (seq {span}): incomplete batch, no inclusion proof")
        else:
            # the root and every audit path from one build (compiled where it can)
            compiled = self._writer.tree_levels([h.hash for h in entries]) if self._writer is not None else None
            levels = compiled if compiled is not None else tree_levels([record_leaf_hash(h.hash) for h in entries])
            if (levels[-1][0] if levels else root_from_leaf_hashes([])) != record["merkle_root"]:
                problem = (f"the entries {record['first_seq']}..{record['last_seq']} do not root to the checkpoint's "
                           "merkle_root: damaged log, run auditseal verify")
        covering, indexes = None, {}
        if problem is None:
            covering = ocsf.covering_checkpoint(record, checkpoint.position)
            indexes = {id(entry): index for index, entry in enumerate(entries)}
        documents = self._render(held, problem, covering, levels, indexes)
        documents.append(self._document(self._checkpoint_document(checkpoint)))
        return documents

    def _render(self, held: list[_Held], problem: str | None, covering: ocsf.CoveringCheckpoint | None = None,
                levels: list[list[bytes]] | None = None, indexes: Mapping[int, int] | None = None) -> list[Document]:
        # covering, levels and indexes: the checkpoint signing these entries, its tree, each entry's leaf index
        if self.format == "json":
            return [self._document(self._render_json(h, None, problem)) for h in held]
        writer, indexes = self._writer, indexes or {}
        tree_size = len(levels[0]) if levels else 0
        if writer is None:
            documents: list[Document | None] = [None] * len(held)
        elif covering is not None:
            documents = writer.render_batch(held, problem, orjson.dumps(covering.signature),
                                            orjson.dumps(covering.evidence), writer.audit_paths(levels), tree_size,
                                            Document)
        else:
            documents = writer.render_batch(held, problem, None, None, None, 0, Document)
        if None not in documents:
            return documents  # type: ignore[return-value]
        for position, h in enumerate(held):
            if documents[position] is not None:
                continue
            if h.fields is not None:
                self._complete(h)  # declined by the compiled writer: the reference reads and maps it
            index = indexes.get(id(h))
            inclusion = None if index is None else Inclusion(covering, index, tree_size, audit_path(levels, index))
            documents[position] = self._document(self._render_ocsf(h, inclusion, problem))
        return documents  # type: ignore[return-value]

    def _document(self, document: dict[str, Any]) -> Document:
        if self.format == "json":
            return Document(orjson.dumps(document, default=_json_value, option=orjson.OPT_PASSTHROUGH_DATETIME),
                            None, None, False)
        class_uid = document["class_uid"]
        unsigned = class_uid != ocsf.BASE_EVENT and "evidence_error" in document["unmapped"]["auditseal"]
        return Document(orjson.dumps(document), class_uid, document["time"], unsigned)

    def _render_ocsf(self, held: _Held, inclusion: Inclusion | None, problem: str | None) -> dict[str, Any]:
        version = self.product_version
        if held.kind is None:
            return ocsf.unmapped_record(held.value, held.position, held.problem, product_version=version)
        if held.problem is not None:
            return ocsf.unmapped_record(held.value, held.position, held.problem, kind=held.kind.decode(),
                                        record=held.record, payload=held.payload, inclusion=inclusion,
                                        time_ms=held.record["source_timestamp_micros"] // 1000,
                                        product_version=version)
        if held.kind == EVENT_KIND:
            return ocsf.event_record(held.record, held.event, held.payload, held.position, inclusion,
                                     evidence_error=problem, product_version=version)
        return ocsf.rejection_record(held.record, held.payload, held.position, inclusion, evidence_error=problem,
                                     product_version=version)

    def _render_json(self, held: _Held, inclusion: Inclusion | None, problem: str | None) -> dict[str, Any]:
        document: dict[str, Any] = {"sealed": held.position.as_dict()}
        if held.kind is None:
            document.update(kind="unmapped", reason=held.problem, value=held.value.hex())
            return document
        document["kind"] = held.kind.decode()
        document.update(held.record)
        if held.event is not None:
            document["event_decoded"] = held.event
        if held.problem is not None:
            document["problem"] = held.problem
        return document

    def _checkpoint_document(self, checkpoint: _Held) -> dict[str, Any]:
        if self.format == "ocsf":
            return ocsf.checkpoint_record(checkpoint.record, checkpoint.position, product_version=self.product_version)
        return {"sealed": checkpoint.position.as_dict(), "kind": "checkpoint", **checkpoint.record}


def _json_value(value: Any) -> Any:
    # what orjson does not write as the json format shows it: bytes as hex, timestamps as the Avro record's
    # timestamp-micros (uuids it writes as str() does)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime.datetime):
        return ocsf.micros(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def mappers(*, format: str = "ocsf", product_version: str | None = None,
            lines: tuple[int, int] | None = None) -> Callable[[str, int], PartitionMapper]:
    """A factory ``make(topic, partition)`` of PartitionMappers sharing one set of codecs (and ``lines``)."""
    codecs = sealed_codecs()

    def make(topic: str, partition: int) -> PartitionMapper:
        return PartitionMapper(topic, partition, format=format, product_version=product_version, codecs=codecs,
                               lines=lines)

    return make
