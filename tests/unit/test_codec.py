"""Single-object encoding of audit events: fixed vectors, round trips, and every kind of damage."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import fastavro
import pytest

from pipeline.errors import ConfigError
from pipeline.wire.catalog import SchemaCatalog, fingerprint_of, schemas_dir
from pipeline.wire.codec import (
    HEADER_SIZE,
    MARKER,
    BadMarkerError,
    CorruptBodyError,
    EventCodec,
    UnknownSchemaError,
    default_codec,
)
from pipeline.wire.validation import InvalidEventError

FIXED_EVENT = {
    "event_id": "0b0e7e6c-3f4a-4a8e-9d21-6c1f1f3a2b10",
    "occurred_at": 1735689600123456,  # 2025-01-01T00:00:00.123456Z
    "actor": {
        "id": "usr_42",
        "type": "USER",
        "source_ip": "203.0.113.7",
        "user_agent": "curl/8.8.0",
        "session_id": "sess_1",
    },
    "action": "document.read",
    "resource": {"type": "document", "id": "doc-1"},
    "outcome": {"status": "DENIED", "reason": "missing permission"},
    "source_service": "storage",
    "request_id": None,
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "attributes": {"region": "eu-west-1"},
}
# The single-object bytes of FIXED_EVENT under audit_event.v1. If this changes, records already
# in the log would no longer match what producers write: a wire-format break, not a test to update.
FIXED_HEX = (
    "c3014216880367485bc24830623065376536632d336634612d346138652d3964"
    "32312d3663316631663361326231308089f2a0b7a695060c7573725f34320002"
    "163230332e302e3131332e3702146375726c2f382e382e30020c736573735f31"
    "1a646f63756d656e742e7265616410646f63756d656e740a646f632d31040224"
    "6d697373696e67207065726d697373696f6e0e73746f72616765000240346266"
    "3932663335373762333464613661336365393239643065306534373336020c72"
    "6567696f6e1265752d776573742d3100"
)
V1_FINGERPRINT = "4216880367485bc2"
# What producers write since audit_event.v2: the same body plus an empty protected_fields array (0x00).
# Pinned for the same reason as the v1 bytes above.
V2_FINGERPRINT = "e45ee069157e1960"
FIXED_V2_HEX = "c301" + V2_FINGERPRINT + FIXED_HEX[20:] + "00"
# What producers write since audit_event.v3: the v2 body plus an empty protected_subjects array (0x00).
V3_FINGERPRINT = "fc0763bb7e4c1020"
FIXED_V3_HEX = "c301" + V3_FINGERPRINT + FIXED_HEX[20:] + "0000"


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return default_codec()


def fastavro_body(codec: EventCodec, event: dict) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, codec.schema.parsed, event)
    return buffer.getvalue()


# -- fingerprints and the fixed vector -----------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "java_long"),
    [('"null"', 7195948357588979594), ('"int"', 8247732601305521295), ('"string"', -8142146995180207161)],
)
def test_fingerprint_matches_avro_spec_vectors(schema: str, java_long: int) -> None:
    # Vectors from the Avro project's schema-tests; the wire carries the long little-endian.
    assert fingerprint_of(schema) == java_long.to_bytes(8, "little", signed=True)


def test_fixed_event_encodes_to_the_pinned_bytes(codec: EventCodec) -> None:
    data = codec.encode(FIXED_EVENT)
    assert data.hex() == FIXED_V3_HEX
    assert data[:2] == MARKER == b"\xc3\x01"
    assert data[2:HEADER_SIZE].hex() == V3_FINGERPRINT
    assert data[2:HEADER_SIZE] == fingerprint_of(codec.schema.canonical_form)
    # A second, independent Avro implementation agrees on the body.
    assert data[HEADER_SIZE:] == fastavro_body(codec, FIXED_EVENT)


def test_fixed_bytes_decode_to_the_event_with_logical_types(codec: EventCodec) -> None:
    decoded = codec.decode(bytes.fromhex(FIXED_HEX))
    assert decoded["event_id"] == uuid.UUID(FIXED_EVENT["event_id"])
    assert decoded["occurred_at"] == datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert {k: v for k, v in decoded.items() if k not in ("event_id", "occurred_at")} == {
        **{k: v for k, v in FIXED_EVENT.items() if k not in ("event_id", "occurred_at")}, "protected_fields": [],
        "protected_subjects": [],
    }
    # the v1 and v2 records read into v3 are exactly what v3 writes for the same event
    assert codec.decode(bytes.fromhex(FIXED_V2_HEX)) == decoded == codec.decode(bytes.fromhex(FIXED_V3_HEX))


def test_datetime_and_uuid_objects_encode_like_their_wire_values(codec: EventCodec) -> None:
    event = dict(
        FIXED_EVENT,
        event_id=uuid.UUID(FIXED_EVENT["event_id"]),
        # the same instant, given in another timezone
        occurred_at=datetime(2025, 1, 1, 1, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
    )
    assert codec.encode(event).hex() == FIXED_V3_HEX


def test_absent_optional_fields_encode_as_their_defaults(codec: EventCodec) -> None:
    event = {k: v for k, v in FIXED_EVENT.items() if k not in ("request_id", "attributes")}
    decoded = codec.decode(codec.encode(event))
    assert decoded["request_id"] is None
    assert decoded["attributes"] == {}


def test_encode_rejects_an_invalid_event(codec: EventCodec) -> None:
    with pytest.raises(InvalidEventError, match=r"actor\.type"):
        codec.encode(dict(FIXED_EVENT, actor=dict(FIXED_EVENT["actor"], type="ROBOT")))


# -- damage ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\x00\x01" + bytes(8), b"{\"event_id\": 1}", b"\xc3\x02" + bytes(8)])
def test_bad_marker(codec: EventCodec, data: bytes) -> None:
    with pytest.raises(BadMarkerError, match="expected marker c301"):
        codec.decode(data)


def test_unknown_fingerprint_is_reported_in_hex(codec: EventCodec) -> None:
    data = bytes.fromhex(FIXED_HEX)
    forged = MARKER + bytes.fromhex("0123456789abcdef") + data[HEADER_SIZE:]
    with pytest.raises(UnknownSchemaError, match="unknown schema fingerprint 0123456789abcdef") as caught:
        codec.decode(forged)
    assert caught.value.fingerprint == bytes.fromhex("0123456789abcdef")
    assert V1_FINGERPRINT in str(caught.value)  # says what it does know


def test_every_truncation_is_reported(codec: EventCodec) -> None:
    data = bytes.fromhex(FIXED_HEX)
    for length in range(2, len(data)):
        with pytest.raises(CorruptBodyError):
            codec.decode(data[:length])


def test_truncated_header_says_so(codec: EventCodec) -> None:
    with pytest.raises(CorruptBodyError, match="truncated header: 6 bytes"):
        codec.decode(bytes.fromhex(FIXED_HEX)[:6])


def test_trailing_bytes_are_reported(codec: EventCodec) -> None:
    with pytest.raises(CorruptBodyError, match="1 unexpected trailing byte"):
        codec.decode(bytes.fromhex(FIXED_HEX) + b"\x00")


def test_garbled_string_is_reported(codec: EventCodec) -> None:
    data = bytes.fromhex(FIXED_HEX)
    start = data.index(b"usr_42")
    garbled = data[:start] + b"\xff\xfe\xfd\xfc\xfb\xfa" + data[start + 6 :]
    with pytest.raises(CorruptBodyError, match="garbled or truncated audit_event.v1.avsc body"):
        codec.decode(garbled)


def test_garbled_enum_index_is_reported(codec: EventCodec) -> None:
    data = bytearray.fromhex(FIXED_HEX)
    # actor.type follows the length-prefixed actor.id "usr_42"; index 40 is no ActorType
    data[data.index(b"usr_42") + 6] = 80
    with pytest.raises(CorruptBodyError):
        codec.decode(bytes(data))


# -- schema resolution across versions -----------------------------------------------------------


def _catalog_with(tmp_path: Path, *extra: tuple[str, dict]) -> SchemaCatalog:
    shutil.copy(schemas_dir() / "audit_event.v1.avsc", tmp_path / "audit_event.v1.avsc")
    for name, schema in extra:
        (tmp_path / name).write_text(json.dumps(schema))
    return SchemaCatalog.load(tmp_path)


def _v2_with_tenant() -> dict:
    v2 = json.loads((schemas_dir() / "audit_event.v1.avsc").read_text())
    v2["fields"].append(
        {"name": "tenant_id", "type": ["null", "string"], "default": None, "doc": "Tenant the action belongs to."}
    )
    return v2


def test_older_records_are_read_into_the_newest_version(tmp_path: Path) -> None:
    catalog = _catalog_with(tmp_path, ("audit_event.v2.avsc", _v2_with_tenant()))
    codec = EventCodec(catalog)
    assert codec.schema.version == 2
    decoded = codec.decode(bytes.fromhex(FIXED_HEX))  # written with v1
    assert decoded["tenant_id"] is None
    assert decoded["action"] == "document.read"
    newer = codec.encode(dict(FIXED_EVENT, tenant_id="acme"))
    assert newer[2:HEADER_SIZE] != bytes.fromhex(V1_FINGERPRINT)
    assert codec.decode(newer)["tenant_id"] == "acme"


def test_fingerprint_of_another_family_is_named(tmp_path: Path) -> None:
    other = {"type": "record", "name": "Checkpoint", "namespace": "dev.auditseal", "doc": "x",
             "fields": [{"name": "seq", "type": "long", "doc": "x"}]}
    catalog = _catalog_with(tmp_path, ("checkpoint.v1.avsc", other))
    checkpoint = catalog.latest("checkpoint")
    data = MARKER + checkpoint.fingerprint + b"\x02"
    with pytest.raises(UnknownSchemaError, match="is checkpoint.v1.avsc, not a version of audit_event"):
        EventCodec(catalog).decode(data)


def test_schemas_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDITSEAL_SCHEMAS_DIR", str(tmp_path))
    assert schemas_dir() == tmp_path
    monkeypatch.delenv("AUDITSEAL_SCHEMAS_DIR")
    assert (schemas_dir() / "audit_event.v1.avsc").is_file()


def test_a_version_gap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="audit_event.v2.avsc is missing"):
        _catalog_with(tmp_path, ("audit_event.v3.avsc", _v2_with_tenant()))


def test_a_misnamed_schema_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be named <family>.v<N>.avsc"):
        _catalog_with(tmp_path, ("audit_event_v2.avsc", _v2_with_tenant()))
