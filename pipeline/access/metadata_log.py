"""The KRaft metadata log, read from the controller's disk: every change of users, ACLs, configs and topics.

The authorizer log says *that* a principal was allowed to call AlterUserScramCredentials, CreateAcls or
IncrementalAlterConfigs, but not which user, binding or key: those are in the request, which it does not
log. The controller writes each accepted change as a record of ``__cluster_metadata`` (Kafka's record
batch v2 on disk, each value one metadata record: frame version, API key, version, then the record in
Kafka's flexible encoding, see ``common/metadata/*.json`` in the kafka-metadata jar). This module decodes
the records that change who may do what to the log, and nothing else:

==========================  ===================================================================
record (API key)            change
==========================  ===================================================================
TopicRecord (2)             topic created (name, id)
ConfigRecord (4)            config key set or deleted on a topic, broker or the cluster
RemoveTopicRecord (9)       topic deleted (by id)
UserScramCredentialRecord   SCRAM credential set (user, mechanism, iterations, salt)
(11)
AccessControlEntryRecord    ACL created (full binding)
(18)
RemoveAccessControlEntry    ACL deleted (by id)
Record (19)
RemoveUserScramCredential   SCRAM credential deleted (user, mechanism)
Record (22)
==========================  ===================================================================

Pure: bytes in, :class:`MetadataChange` values out (the reader of the files is in
:mod:`pipeline.access.metadata_watch`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

TOPIC, CONFIG, REMOVE_TOPIC, SCRAM, ACL, REMOVE_ACL, REMOVE_SCRAM = 2, 4, 9, 11, 18, 19, 22
BATCH_HEADER = 61  # base offset .. records count, record batch v2
_CONTROL_BIT = 0x20
_COMPRESSION_MASK = 0x07
# Kafka's enums as the metadata records store them (ResourceType, PatternType, AclOperation, permission)
CONFIG_RESOURCE_TYPES = {2: "topic", 4: "broker", 8: "broker_logger", 16: "client_metrics", 32: "group"}
ACL_RESOURCE_TYPES = {2: "topic", 3: "group", 4: "cluster", 5: "transactional_id", 6: "delegation_token", 7: "user"}
PATTERN_TYPES = {3: "literal", 4: "prefixed"}
ACL_OPERATIONS = {2: "all", 3: "read", 4: "write", 5: "create", 6: "delete", 7: "alter", 8: "describe",
                  9: "cluster_action", 10: "describe_configs", 11: "alter_configs", 12: "idempotent_write",
                  13: "create_tokens", 14: "describe_tokens", 15: "two_phase_commit"}
PERMISSIONS = {2: "deny", 3: "allow"}
SCRAM_MECHANISMS = {1: "SCRAM-SHA-256", 2: "SCRAM-SHA-512"}
# config values never copied into an event (they are secrets, or hold them)
SECRET_KEY_MARKERS = ("password", "secret", "jaas", "key")


class MetadataLogError(ValueError):
    """A metadata log segment holds bytes that are not a record batch we can decode."""


@dataclass(frozen=True)
class MetadataChange:
    """One decoded change: the record's kind, its metadata-log offset and time (ms), and its fields."""

    kind: str  # topic, config, remove_topic, scram, acl, remove_acl, remove_scram
    offset: int
    timestamp_ms: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """One record batch on disk: its offsets, byte length, and the changes it holds (control batches: none)."""

    base_offset: int
    last_offset: int
    size: int
    changes: tuple[MetadataChange, ...]


class _Reader:
    def __init__(self, data: bytes, position: int = 0) -> None:
        self.data = data
        self.pos = position

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MetadataLogError(f"record truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return struct.unpack(">b", self.take(1))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            byte = self.take(1)[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise MetadataLogError("varint longer than 64 bits")

    def varint(self) -> int:
        value = self.uvarint()
        return (value >> 1) ^ -(value & 1)

    def compact_bytes(self) -> bytes | None:
        length = self.uvarint() - 1
        return None if length < 0 else self.take(length)

    def compact_string(self) -> str | None:
        raw = self.compact_bytes()
        return None if raw is None else raw.decode("utf-8")

    def uuid(self) -> str:
        return self.take(16).hex()

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def decode_record(value: bytes) -> tuple[int, dict[str, Any]] | None:
    """The API key and fields of one metadata record value; None for a record kind not decoded here."""
    reader = _Reader(value)
    reader.uvarint()  # frame version
    api_key = reader.uvarint()
    reader.uvarint()  # record version (every decoded kind has only version 0)
    if api_key == TOPIC:
        fields = {"name": reader.compact_string(), "topic_id": reader.uuid()}
    elif api_key == CONFIG:
        resource_type = reader.int8()
        fields = {"resource_type": CONFIG_RESOURCE_TYPES.get(resource_type, str(resource_type)),
                  "resource": reader.compact_string(), "key": reader.compact_string(), "value": reader.compact_string()}
    elif api_key == REMOVE_TOPIC:
        fields = {"topic_id": reader.uuid()}
    elif api_key == SCRAM:
        name, mechanism = reader.compact_string(), reader.int8()
        salt = reader.compact_bytes() or b""
        reader.compact_bytes()  # stored key
        reader.compact_bytes()  # server key
        fields = {"user": name, "mechanism": SCRAM_MECHANISMS.get(mechanism, str(mechanism)), "salt": salt.hex(),
                  "iterations": reader.int32()}
    elif api_key == ACL:
        acl_id, resource_type, resource = reader.uuid(), reader.int8(), reader.compact_string()
        pattern, principal, host = reader.int8(), reader.compact_string(), reader.compact_string()
        operation, permission = reader.int8(), reader.int8()
        fields = {"acl_id": acl_id, "resource_type": ACL_RESOURCE_TYPES.get(resource_type, str(resource_type)),
                  "resource": resource, "pattern": PATTERN_TYPES.get(pattern, str(pattern)), "principal": principal,
                  "host": host, "operation": ACL_OPERATIONS.get(operation, str(operation)),
                  "permission": PERMISSIONS.get(permission, str(permission))}
    elif api_key == REMOVE_ACL:
        fields = {"acl_id": reader.uuid()}
    elif api_key == REMOVE_SCRAM:
        name, mechanism = reader.compact_string(), reader.int8()
        fields = {"user": name, "mechanism": SCRAM_MECHANISMS.get(mechanism, str(mechanism))}
    else:
        return None
    return api_key, fields


_KINDS = {TOPIC: "topic", CONFIG: "config", REMOVE_TOPIC: "remove_topic", SCRAM: "scram", ACL: "acl",
          REMOVE_ACL: "remove_acl", REMOVE_SCRAM: "remove_scram"}


def read_batch(data: bytes, position: int) -> Batch | None:
    """The record batch starting at byte ``position`` of a segment; None if the bytes there do not hold a
    complete batch yet (the controller is still writing it, or the segment's preallocated tail)."""
    if position + BATCH_HEADER > len(data):
        return None
    base_offset, batch_length = struct.unpack_from(">qi", data, position)
    if batch_length <= 0:
        return None  # zero fill past the last batch
    size = 12 + batch_length
    if position + size > len(data):
        return None
    magic = data[position + 16]
    if magic != 2:
        raise MetadataLogError(f"record batch at byte {position} has magic {magic}, expected 2")
    # the CRC-32C is not checked (no stdlib CRC-32C): a torn write shows as a batch that does not fit yet,
    # and the controller only appends batches it has fsync'd to the quorum
    attributes, last_offset_delta, base_timestamp = struct.unpack_from(">hiq", data, position + 21)
    count = struct.unpack_from(">i", data, position + 57)[0]
    last_offset = base_offset + last_offset_delta
    if attributes & _CONTROL_BIT:
        return Batch(base_offset, last_offset, size, ())
    body = data[position + BATCH_HEADER:position + size]
    compression = attributes & _COMPRESSION_MASK
    if compression == 1:
        body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
    elif compression != 0:
        raise MetadataLogError(f"record batch at offset {base_offset} is compressed with codec {compression}, "
                               "which this reader does not decode (the controller writes metadata uncompressed "
                               "unless configured otherwise)")
    reader = _Reader(body)
    changes = []
    for _ in range(count):
        length = reader.varint()
        record = _Reader(reader.take(length))
        record.int8()  # attributes
        timestamp_delta = record.varint()
        offset_delta = record.varint()
        key_length = record.varint()
        if key_length > 0:
            record.take(key_length)
        value_length = record.varint()
        value = record.take(value_length) if value_length >= 0 else b""
        decoded = decode_record(value) if value else None
        if decoded is not None:
            api_key, fields = decoded
            changes.append(MetadataChange(_KINDS[api_key], base_offset + offset_delta,
                                          base_timestamp + timestamp_delta, fields))
    return Batch(base_offset, last_offset, size, tuple(changes))


def is_secret_config(key: str) -> bool:
    """Whether a config key's value must never be copied into an event."""
    return any(marker in key.lower() for marker in SECRET_KEY_MARKERS)
