"""Avro single-object encoding of audit events (Avro 1.11 specification, "Single object encoding").

Every event on ``audit.raw`` is::

    C3 01 | fingerprint (8 bytes) | Avro binary body

where the fingerprint is the CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
Form in little-endian byte order. The bytes carry their schema identity, so a consumer needs no
schema registry: it looks the fingerprint up among the ``schemas/*.avsc`` files it ships and
resolves the body into the newest version it knows (Avro schema resolution).

Encoding validates in the same pass (see :mod:`pipeline.wire.validation` and, for the compiled fast
path, :mod:`pipeline.native.avro_writer`); decoding errors are
:class:`DecodeError` subclasses, one per kind of damage, because the sealer records each
rejected record with its reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, cast

from fastavro import schemaless_reader
from fastavro.read import SchemaResolutionError

from pipeline.errors import AuditSealError, ConfigError
from pipeline.native.avro_writer import compile_native_encoder
from pipeline.wire.catalog import AUDIT_EVENT, SchemaCatalog, SchemaVersion, default_catalog
from pipeline.wire.validation import compile_writer

MARKER = b"\xc3\x01"
HEADER_SIZE = len(MARKER) + 8


class DecodeError(AuditSealError):
    """Bytes that are not a decodable single-object encoded event."""


class BadMarkerError(DecodeError):
    """The bytes do not start with the single-object marker C3 01."""


class UnknownSchemaError(DecodeError):
    """The fingerprint names no schema version in ``schemas/`` (or one of another family)."""

    def __init__(self, fingerprint: bytes, message: str) -> None:
        self.fingerprint = fingerprint
        super().__init__(message)


class CorruptBodyError(DecodeError):
    """The header is valid but the rest is truncated, garbled, or followed by extra bytes."""


class EventCodec:
    """Encodes events with the newest schema of a family, decodes any version of it into the newest.

    Build one per process (or use :func:`default_codec`): construction compiles the schemas.
    """

    def __init__(self, catalog: SchemaCatalog | None = None, family: str = AUDIT_EVENT) -> None:
        """Compile the writer for the newest ``family`` version in ``catalog`` (default: ``schemas/``)."""
        self.catalog = default_catalog() if catalog is None else catalog
        self.family = family
        self.schema: SchemaVersion = self.catalog.latest(family)
        self.header = MARKER + self.schema.fingerprint
        self._write = compile_writer(self.schema.parsed)
        # An instance attribute, not a method: emit() calls the compiled encoder directly.
        self.encode: Callable[[Mapping[str, Any]], bytes] = compile_native_encoder(
            self.schema.parsed, self.header, self.encode_checked
        )
        """The single-object encoding of an event; InvalidEventError (naming the field) if it does not validate.

        The compiled fast path (:mod:`pipeline.native.avro_writer`), which hands anything
        unusual or invalid to :meth:`encode_checked`; both give the same bytes.
        """

    def encode_checked(self, event: Mapping[str, Any]) -> bytes:
        """Like :attr:`encode`, through the general checked writer only (the reference for the fast path)."""
        body = bytearray()
        self._write(body, event)
        return self.header + body

    def decode(self, data: bytes | bytearray | memoryview) -> dict[str, Any]:
        """Decode single-object bytes written with any known version, as a dict of the newest version.

        Timestamps come back as aware UTC ``datetime`` and UUIDs as ``uuid.UUID`` (Avro logical
        types). Raises BadMarkerError, UnknownSchemaError or CorruptBodyError.
        """
        if bytes(data[:2]) != MARKER:
            found = bytes(data[:2]).hex() or "nothing (empty input)"
            raise BadMarkerError(
                f"not an Avro single-object encoded event: expected marker c301, found {found}"
            )
        if len(data) < HEADER_SIZE:
            raise CorruptBodyError(
                f"truncated header: {len(data)} bytes, the single-object header alone is {HEADER_SIZE} "
                "(marker + 8-byte schema fingerprint)"
            )
        fingerprint = bytes(data[2:HEADER_SIZE])
        writer = self.catalog.by_fingerprint(fingerprint)
        if writer is None or writer.family != self.family:
            raise UnknownSchemaError(fingerprint, self._unknown_fingerprint_message(fingerprint, writer))
        stream = io.BytesIO(data)
        stream.seek(HEADER_SIZE)
        # Same fingerprint as the newest version: plain read, no resolution work per record.
        reader = None if writer.fingerprint == self.schema.fingerprint else self.schema.parsed
        try:
            event = schemaless_reader(stream, writer.parsed, reader)
        except SchemaResolutionError as exc:
            raise ConfigError(
                f"{writer.name} data cannot be read as {self.schema.name}: {exc}; the schemas break "
                "the evolution rules in schemas/README.md"
            ) from exc
        except Exception as exc:  # fastavro signals damage with EOFError, ValueError, IndexError, ...
            raise CorruptBodyError(
                f"garbled or truncated {writer.name} body ({len(data) - HEADER_SIZE} bytes): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        extra = len(data) - stream.tell()
        if extra:
            raise CorruptBodyError(
                f"{extra} unexpected trailing byte(s) after the {writer.name} body; "
                "the record is garbled or two records were concatenated"
            )
        return cast(dict[str, Any], event)  # an AuditEvent record decodes to a dict

    def _unknown_fingerprint_message(self, fingerprint: bytes, other: SchemaVersion | None) -> str:
        if other is not None:
            return (
                f"schema fingerprint {fingerprint.hex()} is {other.name}, not a version of "
                f"{self.family}: the record is not an audit event"
            )
        known = ", ".join(f"{s.name} = {s.fingerprint.hex()}" for s in self.catalog.versions(self.family))
        return (
            f"unknown schema fingerprint {fingerprint.hex()} (CRC-64-AVRO, wire byte order); known: {known}. "
            f"Written with a newer schema than this copy of schemas/ holds, or not an AuditSeal record"
        )


@lru_cache(maxsize=1)
def default_codec() -> EventCodec:
    """The process-wide codec for AuditEvent over :func:`pipeline.wire.catalog.default_catalog`."""
    return EventCodec()
