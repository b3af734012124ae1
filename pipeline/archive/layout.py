"""Where the sink puts each archived batch and what its manifest says: the contract with verifiers.

Pure (no I/O): the verifier imports this module to find, parse and check what the sink wrote.

Key layout (bucket-relative; ``prefix`` is configurable, "" by default, e.g. "archive/")::

    {prefix}{topic}/{partition:03d}/{first_offset:020d}-{last_offset:020d}.avro        the batch (OCF)
    {prefix}{topic}/{partition:03d}/{first_offset:020d}-{last_offset:020d}.avro.enc    the same, encrypted
    <object key>.manifest.json                                                           its manifest

One object holds every record of ``audit.sealed`` (read_committed) with an offset in
first_offset..last_offset of one partition, in offset order, one ``dev.auditseal.ArchivedRecord``
each (``schemas/archived_record.v1.avsc``). Keys sort by first offset. A key names its range, so a
retry after a crash rewrites the *same* key with byte-identical content: the bucket keeps it as a
second version of that key, which a verifier tells from tampering by comparing the versions' bytes.
Two logical objects (keys) never share an offset.

The manifest is UTF-8 JSON with sorted keys and no whitespace (:meth:`Manifest.to_bytes`), so the
same batch always yields the same bytes; every time in it comes from the records, not the clock::

    {"chains": [{"chain_id", "entries", "first_seq", "last_seq"}, ...],        sorted by chain_id
     "checkpoints": [{"chain_id", "checkpoint_hash", "first_seq", "last_seq"}, ...],   in offset order
     "codec": "null" | "deflate",                  the OCF block codec
     "compliance_profile": "soc2",                 config/compliance.yaml
     "encryption": null | {"aad": "object_key", "algorithm": "AES-256-GCM", "key_wrap": "AES-KW",
                           "master_key_id", "nonce" (base64), "wrapped_key" (base64)},
     "first_offset", "last_offset", "first_timestamp_micros", "last_timestamp_micros" (min/max),
     "key": the object's bucket-relative key,
     "partition", "record_count", "record_kinds": {"checkpoint", "event", "rejection", "unknown"[, "gap", "head", "cosignature"]},
     "retain_until": "2027-11-26T06:10:16Z",       COMPLIANCE retention of object and manifest
     "sha256": hex of the object's bytes as stored (after encryption), "size": their length,
     "topic", "version": 1,
     "index": {...}}                               optional: the query index (pipeline.archive.query_index)

``record_kinds`` names ``gap`` (gap entries) and ``head`` (tree heads) only when the object holds one, so the manifest of an
object without one is byte for byte what it was before gap entries existed.
``checkpoint_hash`` is recomputed from each checkpoint's signed content (the record's own field is
not trusted); ``chains`` gives, per chain, the seq of its first and last entry in the object.

``index`` is optional and absent from every manifest written before it existed: a manifest without it
reads as before (its bytes round-trip unchanged) and its object is simply always read by a query.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pipeline.archive.query_index import QueryIndex, QueryIndexError
from pipeline.errors import AuditSealError

MANIFEST_VERSION = 1
OBJECT_SUFFIX = ".avro"
ENCRYPTED_SUFFIX = ".avro.enc"
MANIFEST_SUFFIX = ".manifest.json"
ARCHIVED_RECORD_FAMILY = "archived_record"
"""``schemas/archived_record.v<N>.avsc``: the record type of the OCF."""

KIND_EVENT, KIND_REJECTION, KIND_CHECKPOINT, KIND_UNKNOWN = "event", "rejection", "checkpoint", "unknown"
RECORD_KINDS = (KIND_CHECKPOINT, KIND_EVENT, KIND_REJECTION, KIND_UNKNOWN)
KIND_GAP = "gap"
KIND_HEAD = "head"
KIND_COSIGNATURE = "cosignature"
OPTIONAL_KINDS = (KIND_GAP, KIND_HEAD, KIND_COSIGNATURE)
"""Gap entries, tree heads and witness cosignatures: counted in ``record_kinds`` only when non-zero (optional on reading, 0 if absent)."""
CODECS = ("null", "deflate")

ENCRYPTION_ALGORITHM = "AES-256-GCM"
KEY_WRAP_ALGORITHM = "AES-KW"
"""RFC 3394 key wrap of the 256-bit data key with the 256-bit master key."""
AAD_OBJECT_KEY = "object_key"
"""The GCM associated data is the object's key (UTF-8): a ciphertext moved to another key fails to decrypt."""

_SYNC_TAG = b"auditseal/sink/ocf-sync/v1\x00"
_KEY = re.compile(
    r"(?P<prefix>(?:.*/)?)(?P<topic>[A-Za-z0-9._-]+)/(?P<partition>[0-9]{3,})/"
    r"(?P<first>[0-9]{20})-(?P<last>[0-9]{20})(?P<suffix>\.avro(?:\.enc)?)(?P<manifest>\.manifest\.json)?"
)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_T = TypeVar("_T")


class ManifestError(AuditSealError):
    """A manifest that is not valid JSON of this layout, naming the field and the problem."""


def partition_prefix(topic: str, partition: int, prefix: str = "") -> str:
    """The key prefix of every object of one partition: ``{prefix}{topic}/{partition:03d}/``."""
    return f"{prefix}{topic}/{partition:03d}/"


def object_key(topic: str, partition: int, first_offset: int, last_offset: int, *, prefix: str = "",
               encrypted: bool = False) -> str:
    """The key of the object holding offsets ``first_offset..last_offset`` of one partition."""
    suffix = ENCRYPTED_SUFFIX if encrypted else OBJECT_SUFFIX
    return f"{partition_prefix(topic, partition, prefix)}{first_offset:020d}-{last_offset:020d}{suffix}"


def manifest_key(key: str) -> str:
    """The key of an object's manifest: the object key plus ``.manifest.json``."""
    return key + MANIFEST_SUFFIX


@dataclass(frozen=True)
class ArchiveKey:
    """What a key of the layout says."""

    prefix: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    encrypted: bool
    is_manifest: bool

    @property
    def object_key(self) -> str:
        """The key of the object (also for a manifest's key)."""
        return object_key(self.topic, self.partition, self.first_offset, self.last_offset, prefix=self.prefix,
                          encrypted=self.encrypted)

    @property
    def manifest_key(self) -> str:
        """The key of the object's manifest."""
        return manifest_key(self.object_key)


def parse_key(key: str) -> ArchiveKey | None:
    """The parts of an object or manifest key of this layout, or None for any other key
    (conformance probes under ``_auditseal/``, foreign files)."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    return ArchiveKey(
        prefix=match["prefix"], topic=match["topic"], partition=int(match["partition"]),
        first_offset=int(match["first"]), last_offset=int(match["last"]),
        encrypted=match["suffix"] == ENCRYPTED_SUFFIX, is_manifest=match["manifest"] is not None,
    )


def sync_marker(topic: str, partition: int, first_offset: int) -> bytes:
    """The 16-byte OCF sync marker of the object starting at ``first_offset``: derived, not random,
    so a retried object is byte-identical."""
    return hashlib.sha256(_SYNC_TAG + f"{topic}/{partition}/{first_offset}".encode()).digest()[:16]


def format_time(moment: datetime.datetime) -> str:
    """ISO-8601 UTC to the second, ``2027-11-26T06:10:16Z`` (sub-second parts must already be zero)."""
    if moment.tzinfo is None or moment.microsecond:
        raise ValueError(f"expected an aware datetime on a whole second, found {moment!r}")
    return moment.astimezone(datetime.UTC).strftime(_TIME_FORMAT)


def parse_time(text: str) -> datetime.datetime:
    """The aware UTC datetime of a :func:`format_time` string; ValueError otherwise."""
    return datetime.datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class ChainRange:
    """The entries of one chain in an object: seq of the first and last, and how many."""

    chain_id: str
    first_seq: int
    last_seq: int
    entries: int


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint record in an object: the range it signs and its recomputed hash."""

    chain_id: str
    first_seq: int
    last_seq: int
    checkpoint_hash: str
    """hex of :func:`pipeline.integrity.checkpoint.checkpoint_hash` of the checkpoint."""


@dataclass(frozen=True)
class Encryption:
    """How an encrypted object was sealed (see :mod:`pipeline.archive.encryption`)."""

    master_key_id: str
    wrapped_key: bytes
    nonce: bytes
    algorithm: str = ENCRYPTION_ALGORITHM
    key_wrap: str = KEY_WRAP_ALGORITHM
    aad: str = AAD_OBJECT_KEY

    def as_dict(self) -> dict[str, str]:
        """JSON form (binary fields base64)."""
        return {"aad": self.aad, "algorithm": self.algorithm, "key_wrap": self.key_wrap,
                "master_key_id": self.master_key_id,
                "nonce": base64.b64encode(self.nonce).decode(), "wrapped_key": base64.b64encode(self.wrapped_key).decode()}


@dataclass(frozen=True)
class Manifest:
    """The manifest of one archived object (module docstring)."""

    key: str
    sha256: str
    size: int
    record_count: int
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    first_timestamp_micros: int
    last_timestamp_micros: int
    record_kinds: Mapping[str, int]
    chains: tuple[ChainRange, ...]
    checkpoints: tuple[CheckpointRef, ...]
    compliance_profile: str
    retain_until: str
    codec: str
    encryption: Encryption | None
    version: int = MANIFEST_VERSION
    index: QueryIndex | None = None
    """The query index of the object's events; None in manifests written before it existed."""

    @property
    def retain_until_datetime(self) -> datetime.datetime:
        """``retain_until`` as an aware UTC datetime."""
        return parse_time(self.retain_until)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``index`` only when there is one: older manifests keep their exact bytes)."""
        found = {
            "chains": [{"chain_id": c.chain_id, "entries": c.entries, "first_seq": c.first_seq, "last_seq": c.last_seq}
                       for c in self.chains],
            "checkpoints": [{"chain_id": c.chain_id, "checkpoint_hash": c.checkpoint_hash, "first_seq": c.first_seq,
                             "last_seq": c.last_seq} for c in self.checkpoints],
            "codec": self.codec, "compliance_profile": self.compliance_profile,
            "encryption": None if self.encryption is None else self.encryption.as_dict(),
            "first_offset": self.first_offset, "first_timestamp_micros": self.first_timestamp_micros,
            "key": self.key, "last_offset": self.last_offset, "last_timestamp_micros": self.last_timestamp_micros,
            "partition": self.partition, "record_count": self.record_count,
            "record_kinds": {kind: int(self.record_kinds.get(kind, 0)) for kind in RECORD_KINDS}
            | {kind: int(self.record_kinds[kind]) for kind in OPTIONAL_KINDS if self.record_kinds.get(kind)},
            "retain_until": self.retain_until, "sha256": self.sha256, "size": self.size, "topic": self.topic,
            "version": self.version,
        }
        if self.index is not None:
            found["index"] = self.index.as_dict()
        return found

    def to_bytes(self) -> bytes:
        """The canonical bytes: UTF-8 JSON, sorted keys, no whitespace, no trailing newline."""
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "manifest") -> Manifest:
        """Parse and check a manifest; ManifestError naming ``where``, the field and the problem."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{where}: not UTF-8 JSON: {exc}") from None
        fields = _Fields(raw, where)
        version = fields.integer("version")
        if version != MANIFEST_VERSION:
            raise ManifestError(f"{where}: version {version}, this reader knows version {MANIFEST_VERSION}")
        encryption_raw = raw.get("encryption") if isinstance(raw, dict) else None
        encryption = None
        if encryption_raw is not None:
            enc = _Fields(encryption_raw, f"{where}: encryption")
            encryption = Encryption(master_key_id=enc.string("master_key_id"), wrapped_key=enc.base64("wrapped_key"),
                                    nonce=enc.base64("nonce"), algorithm=enc.string("algorithm"),
                                    key_wrap=enc.string("key_wrap"), aad=enc.string("aad"))
        chains = tuple(ChainRange(c.string("chain_id"), c.integer("first_seq"), c.integer("last_seq"), c.integer("entries"))
                       for c in fields.objects("chains"))
        checkpoints = tuple(CheckpointRef(c.string("chain_id"), c.integer("first_seq"), c.integer("last_seq"),
                                          c.hex("checkpoint_hash", 32)) for c in fields.objects("checkpoints"))
        kinds = _Fields(fields.value("record_kinds", dict), f"{where}: record_kinds")
        index = None
        if isinstance(raw, dict) and raw.get("index") is not None:
            try:
                index = QueryIndex.from_dict(raw["index"], f"{where}: index")
            except QueryIndexError as exc:
                raise ManifestError(str(exc)) from None
        manifest = cls(
            key=fields.string("key"), sha256=fields.hex("sha256", 32), size=fields.integer("size"),
            record_count=fields.integer("record_count"), topic=fields.string("topic"),
            partition=fields.integer("partition"), first_offset=fields.integer("first_offset"),
            last_offset=fields.integer("last_offset"),
            first_timestamp_micros=fields.value("first_timestamp_micros", int),
            last_timestamp_micros=fields.value("last_timestamp_micros", int),
            record_kinds={kind: kinds.integer(kind) for kind in RECORD_KINDS}
            | {kind: kinds.integer(kind) for kind in OPTIONAL_KINDS
               if isinstance(raw.get("record_kinds"), dict) and kind in raw["record_kinds"]},
            chains=chains, checkpoints=checkpoints,
            compliance_profile=fields.string("compliance_profile"), retain_until=fields.string("retain_until"),
            codec=fields.string("codec"), encryption=encryption, version=version, index=index,
        )
        manifest._check(where)
        return manifest

    def _check(self, where: str) -> None:
        key = parse_key(self.key)
        if key is None or key.is_manifest:
            raise ManifestError(f"{where}: key {self.key!r} is not an object key of the layout")
        found = (key.topic, key.partition, key.first_offset, key.last_offset, key.encrypted)
        expected = (self.topic, self.partition, self.first_offset, self.last_offset, self.encryption is not None)
        if found != expected:
            raise ManifestError(f"{where}: key {self.key!r} says (topic, partition, first, last, encrypted) = "
                                f"{found}, the fields say {expected}")
        if not 0 < self.record_count <= self.last_offset - self.first_offset + 1:
            raise ManifestError(f"{where}: record_count {self.record_count} does not fit offsets "
                                f"{self.first_offset}..{self.last_offset}")
        if sum(self.record_kinds.values()) != self.record_count:
            raise ManifestError(f"{where}: record_kinds add up to {sum(self.record_kinds.values())}, "
                                f"record_count is {self.record_count}")
        if self.index is not None and self.index.events != self.record_kinds.get(KIND_EVENT, 0):
            raise ManifestError(f"{where}: index counts {self.index.events} events, record_kinds "
                                f"{self.record_kinds.get(KIND_EVENT, 0)}")
        if self.codec not in CODECS:
            raise ManifestError(f"{where}: codec {self.codec!r}, expected one of {', '.join(CODECS)}")
        try:
            parse_time(self.retain_until)
        except ValueError:
            raise ManifestError(f"{where}: retain_until {self.retain_until!r} is not YYYY-MM-DDTHH:MM:SSZ") from None


class _Fields:
    """Typed access to one JSON object's fields, with errors naming the field."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected a JSON object, found {type(raw).__name__}")
        self.raw, self.where = raw, where

    def value(self, name: str, kind: type[_T]) -> _T:
        if name not in self.raw:
            raise ManifestError(f"{self.where}: field {name!r} is missing")
        value = self.raw[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(f"{self.where}: field {name!r} must be {kind.__name__}, found {value!r}")
        return value

    def integer(self, name: str) -> int:
        value = self.value(name, int)
        if value < 0:
            raise ManifestError(f"{self.where}: field {name!r} must not be negative, found {value}")
        return value

    def string(self, name: str) -> str:
        return self.value(name, str)

    def hex(self, name: str, size: int) -> str:
        value = self.string(name)
        if not re.fullmatch(f"[0-9a-f]{{{2 * size}}}", value):
            raise ManifestError(f"{self.where}: field {name!r} must be {2 * size} lowercase hex digits, found {value!r}")
        return value

    def base64(self, name: str) -> bytes:
        try:
            return base64.b64decode(self.string(name), validate=True)
        except binascii.Error:
            raise ManifestError(f"{self.where}: field {name!r} is not base64") from None

    def objects(self, name: str) -> list[_Fields]:
        return [_Fields(item, f"{self.where}: {name}[{index}]") for index, item in enumerate(self.value(name, list))]
