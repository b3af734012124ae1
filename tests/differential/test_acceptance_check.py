"""The sealer's compiled one-pass check (pipeline.native.sealing.Checker) against the one reference
production also runs, the decision of pipeline.wire.acceptance.refusal (decode + validate_event): the
check says "valid" only when the reference agrees, and the sealer records exactly the reference's
decision and reason, on generated, mutated, truncated and garbled records."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import generate_signing_key
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.acceptance import checker_program, compile_checker, refusal
from pipeline.wire.codec import HEADER_SIZE, EventCodec, default_codec
from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND
from pipeline.wire.validation import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from tests.differential.strategies import valid_events
from tests.unit.test_codec import FIXED_V3_HEX, _catalog_with, _v2_with_tenant

pytestmark = pytest.mark.differential

CODEC = default_codec()
CHECK = compile_checker(CODEC.schema.parsed, CODEC.header)
SIGNING_KEY = generate_signing_key()
LOW_MICROS, HIGH_MICROS = (int(bound.timestamp()) * 10**6 for bound in (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP))


def reference_reason(value: bytes, codec: EventCodec = CODEC) -> str | None:
    """The reference decision: decode with fastavro, then validate (None: valid)."""
    return refusal(codec, value)


def sealer_reason(value: bytes, codec: EventCodec = CODEC) -> str | None:
    """The reason the sealer records (None: it sealed the record as an event)."""
    sealer = ChainSealer("audit.raw/0", 0, SIGNING_KEY, ChainHead.genesis("audit.raw/0"), event_codec=codec)
    record = sealer.seal(value, 0, 1)
    if record.kind == EVENT_KIND:
        return None
    assert record.kind == REJECTION_KIND
    return sealer.codecs.rejection.decode(record.value)["reason"]


def assert_same_decision(value: bytes) -> None:
    expected = reference_reason(value)
    if CHECK(value):
        assert expected is None, f"fast path accepted {value.hex()}, the reference path says: {expected}"
    assert sealer_reason(value) == expected


def zigzag_varint(value: int, pad_to: int = 0) -> bytes:
    """The varint of ``value``, optionally padded with continuation bytes to ``pad_to`` bytes (still valid Avro)."""
    n, out = (value << 1) ^ (value >> 63), bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    while len(out) < pad_to:
        out[-1] |= 0x80
        out.append(0)
    return bytes(out)


FIXED = bytes.fromhex(FIXED_V3_HEX)  # what producers write: the newest version
TIMESTAMP_AT = HEADER_SIZE + 37  # after the header and the 36-character event_id
TIMESTAMP_END = TIMESTAMP_AT + 8


def with_timestamp(encoded_varint: bytes) -> bytes:
    return FIXED[:TIMESTAMP_AT] + encoded_varint + FIXED[TIMESTAMP_END:]


# -- properties -------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(valid_events)
def test_every_valid_event_takes_the_fast_path(event: dict) -> None:
    data = CODEC.encode(event)
    assert CHECK(data)
    assert sealer_reason(data) is None


@st.composite
def damaged_records(draw: st.DrawFn) -> bytes:
    data = bytearray(CODEC.encode(draw(valid_events)))
    for _ in range(draw(st.integers(1, 3))):
        operation = draw(st.sampled_from(["set", "set", "flip", "flip", "truncate", "insert", "delete", "append"]))
        at = draw(st.integers(HEADER_SIZE if len(data) > HEADER_SIZE else 0, max(len(data) - 1, 0)))
        if operation == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 2, 3, 6, 7, 8, 0x48, 0x7F, 0x80, 0xC0, 0xFF])
                            | st.integers(0, 255))
        elif operation == "flip" and data:
            # even <-> odd: a length, count or index turns negative, a timestamp's sign flips
            data[at] ^= 1
        elif operation == "truncate":
            del data[at:]
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "delete":
            del data[at:at + draw(st.integers(1, 4))]
        else:
            data += draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(damaged_records())
def test_damaged_records_get_the_reference_decision_and_reason(data: bytes) -> None:
    assert_same_decision(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80).map(lambda body: CODEC.header + body) | st.binary(max_size=40))
def test_garbage_gets_the_reference_decision_and_reason(data: bytes) -> None:
    assert_same_decision(data)


@settings(max_examples=200, deadline=None)
@given(valid_events, st.text(min_size=1, max_size=30).filter(lambda s: not s.isascii()))
def test_non_ascii_strings_are_decoded_and_accepted(event: dict, text: str) -> None:
    event = {**event, "action": text}
    data = CODEC.encode(event)
    assert CHECK(data)
    # the same bytes with the text's first byte replaced by one that never starts UTF-8
    encoded = text.encode()
    start = data.index(zigzag_varint(len(encoded)) + encoded, TIMESTAMP_END) + len(zigzag_varint(len(encoded)))
    garbled = data[:start] + b"\xff" + data[start + 1:]
    assert reference_reason(garbled) is not None
    assert_same_decision(garbled)


# -- fixed cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "accepted"),
    [(LOW_MICROS, True), (LOW_MICROS - 1, False), (HIGH_MICROS - 1, True), (HIGH_MICROS, False),
     (0, False), (-1, False), (1_700_000_000, False), (1_700_000_000_000_000_000, False),
     # negative: zig-zag values 2 * LOW_MICROS + 1 and 2 * HIGH_MICROS - 3 lie between the valid ones
     (-LOW_MICROS - 1, False), (-HIGH_MICROS + 1, False)],
)
def test_timestamp_range_bounds(micros: int, accepted: bool) -> None:
    data = with_timestamp(zigzag_varint(micros))
    assert (reference_reason(data) is None) is accepted
    assert CHECK(data) is accepted
    assert_same_decision(data)


@pytest.mark.parametrize("pad_to", [9, 10, 11])
def test_padded_timestamp_varints_get_the_reference_decision(pad_to: int) -> None:
    # pipeline.native.varint's rule: up to 10 bytes, which fastavro reads to the same value
    data = with_timestamp(zigzag_varint(1_735_689_600_000_000, pad_to))
    assert CHECK(data) is (pad_to <= 10)
    assert_same_decision(data)


def test_a_timestamp_varint_wider_than_64_bits_is_left_to_the_reference() -> None:
    # fastavro drops the bits above the 64th, so these bytes decode to a valid time; the check is
    # strict (pipeline.native.varint's rule) and leaves them to the reference, which decides
    wide = bytearray(zigzag_varint(1_735_689_600_000_000, 10))
    wide[-1] |= 0x02
    data = with_timestamp(bytes(wide))
    assert not CHECK(data)
    assert reference_reason(data) is None
    assert_same_decision(data)


@pytest.mark.parametrize("case", ["negative enum index", "enum index past the symbols", "negative union index",
                                  "union index 2", "uuid in braces", "uuid without hyphens", "uuid not hex",
                                  "negative map block count", "trailing byte", "older schema fingerprint"])
def test_unusual_shapes_take_the_reference_path(case: str) -> None:
    data = bytearray(FIXED)
    actor_type_at = data.index(b"usr_42") + 6
    if case == "negative enum index":
        data[actor_type_at] = 0x01  # zig-zag -1
    elif case == "enum index past the symbols":
        data[actor_type_at] = 0x08
    elif case == "negative union index":
        data[actor_type_at + 1] = 0x01
    elif case == "union index 2":
        data[actor_type_at + 1] = 0x04
    elif case == "uuid in braces":
        uuid_text = data[HEADER_SIZE + 1:HEADER_SIZE + 37]
        data[HEADER_SIZE:HEADER_SIZE + 37] = zigzag_varint(38) + b"{" + uuid_text + b"}"
    elif case == "uuid without hyphens":
        uuid_text = bytes(data[HEADER_SIZE + 1:HEADER_SIZE + 37]).replace(b"-", b"")
        data[HEADER_SIZE:HEADER_SIZE + 37] = zigzag_varint(32) + uuid_text
    elif case == "uuid not hex":
        data[HEADER_SIZE + 1] = ord("g")
    elif case == "negative map block count":
        # the fixed event ends with its attributes map and empty protected_fields, protected_subjects (0x00 0x00);
        # rewrite the map as one block of negative count
        event = CODEC.decode(bytes(data))
        assert event["attributes"]
        tail = b"".join(zigzag_varint(len(s.encode())) + s.encode() for kv in event["attributes"].items() for s in kv)
        start = len(data) - len(tail) - 4
        assert data[start + 1:-3] == tail
        data[start:] = zigzag_varint(-len(event["attributes"])) + zigzag_varint(len(tail)) + tail + b"\x00\x00\x00"
        assert reference_reason(bytes(data)) is None
    elif case == "trailing byte":
        data += b"\x00"
    elif case == "older schema fingerprint":
        data[2:HEADER_SIZE] = bytes(8)
    assert not CHECK(bytes(data))
    assert_same_decision(bytes(data))


def test_a_record_cut_anywhere_is_rejected_with_the_reference_reason() -> None:
    for end in range(len(FIXED)):
        assert reference_reason(FIXED[:end]) is not None
        assert_same_decision(FIXED[:end])


def test_tombstones_and_non_bytes_are_not_fast_path_input() -> None:
    assert not CHECK(bytearray(FIXED))
    assert sealer_reason(None) == "empty record value (a tombstone): an audit event was expected"  # type: ignore[arg-type]


def test_a_codec_of_another_schema_than_validation_keeps_the_reference_path(tmp_path: Path) -> None:
    # validate_event checks against the newest schema of schemas/; a codec with a newer one
    # (here a v2 beside the v1 records) must not let its own fast path decide.
    codec = EventCodec(_catalog_with(tmp_path, ("audit_event.v2.avsc", _v2_with_tenant())))
    check = compile_checker(codec.schema.parsed, codec.header)
    assert check is not None
    assert not check(FIXED)  # written with another v2 than this catalog's: the reference path decides
    assert sealer_reason(FIXED, codec) == reference_reason(FIXED, codec)
    fields = {k: v for k, v in CODEC.decode(FIXED).items()
              if k not in ("protected_fields", "protected_subjects")}  # unknown to that v2
    v2 = codec.encode({**fields, "tenant_id": "t-1"})
    assert check(v2)
    assert reference_reason(v2, codec) is not None  # tenant_id is unknown to the validated schema
    assert sealer_reason(v2, codec) == reference_reason(v2, codec)


@pytest.mark.parametrize("schema", [
    {"type": "record", "name": "R", "fields": [{"name": "f", "type": "double"}]},
    {"type": "record", "name": "R", "fields": [{"name": "f", "type": ["int", "string"]}]},
    {"type": "record", "name": "R", "fields": [{"name": "f", "type": {"type": "fixed", "name": "F", "size": 4}}]},
])
def test_schemas_with_unchecked_nodes_get_no_checker(schema: dict) -> None:
    import fastavro

    assert compile_checker(fastavro.parse_schema(schema), CODEC.header) is None


def test_the_checker_program_of_the_audit_event_schema() -> None:
    # A fixed vector: the opcodes of AuditEvent v3 (pipeline.native.sealing), field by field.
    from pipeline.native.sealing import OP_BYTES, OP_ENUM, OP_NULLABLE, OP_RANGE, OP_REPEAT, OP_STRING, OP_UUID

    optional_string = (OP_NULLABLE, 1, 1, OP_STRING)
    assert checker_program(CODEC.schema.parsed) == (
        OP_UUID,                                              # event_id
        OP_RANGE, LOW_MICROS, HIGH_MICROS,                    # occurred_at
        OP_STRING, OP_ENUM, 4, *optional_string * 3,          # actor: id, type, source_ip, user_agent, session_id
        OP_STRING,                                            # action
        OP_STRING, OP_STRING,                                 # resource: type, id
        OP_ENUM, 4, *optional_string,                         # outcome: status, reason
        OP_STRING, *optional_string * 2,                      # source_service, request_id, trace_id
        OP_REPEAT, 1, 1, OP_STRING,                           # attributes: blocks of (key, string)
        OP_REPEAT, 0, 4, *(OP_STRING,) * 4,                   # protected_fields: field, subject, key_id, ciphertext
        OP_REPEAT, 0, 7, OP_STRING, OP_STRING,                # protected_subjects: subject, key_id,
        OP_REPEAT, 0, 1, OP_STRING, OP_BYTES,                 #   fields (blocks of strings), ciphertext
    )


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_records_get_the_reference_decision(data: st.DataObject) -> None:
    value = bytearray(FIXED)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(HEADER_SIZE, len(value) - 1))
        action = data.draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            value[at] = data.draw(st.integers(0, 255))
        elif action == "insert":
            value[at:at] = bytes([data.draw(st.integers(0, 255))])
        elif len(value) > HEADER_SIZE + 1:
            del value[at]
    assert_same_decision(bytes(value))
