"""The compiled OCSF writer (pipeline.native.ocsf_writer, set up by pipeline.siem.fast) against the readable
mapping production also runs (pipeline.siem.ocsf.event_record over the plain event reader): byte for byte
what orjson writes for the reference's dict, for generated and edge-case events (unicode, control
characters, extreme integers, absent and empty optional fields, encrypted personal fields, both
AuditEvent versions), with and without covering evidence; on damaged bytes it declines exactly where the
reference cannot read, and whole partitions (rejections, checkpoints, alerts, junk) map to the same
documents both ways. Its output is valid OCSF (the official schema source)."""

from __future__ import annotations

import hashlib
import io
import json
import random

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.integrity.keyring import SigningKey
from pipeline.integrity.merkle import inclusion_proofs, record_leaf_hash, tree_levels
from pipeline.native import ocsf_writer
from pipeline.privacy.protector import Protector
from pipeline.producer.event import new_event
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.siem import fast, ocsf
from pipeline.siem.batches import PartitionMapper, plain_event_reader
from pipeline.wire.codec import MARKER, DecodeError, default_codec
from pipeline.wire.sealed import event_payload
from tests.differential.strategies import valid_events
from tests.support.ocsf_schema import ocsf_errors
from tests.unit.test_privacy_protector import MemoryKeys

pytestmark = pytest.mark.differential

CODEC = default_codec()
VERSIONS = {version.name + str(index): version for index, version in enumerate(CODEC.catalog.versions("audit_event"))}
TOPIC, PARTITION = "audit.sealed", 3
WRITERS = {version: fast.event_writer(TOPIC, PARTITION, version) for version in (None, "1.2.3", 'odd "v"\n')}
CHECKPOINT = {"chain_id": "audit.raw/3", "first_seq": 0, "last_seq": 9, "merkle_root": bytes(range(32)),
              "chain_head": bytes(32), "prev_checkpoint_hash": b"\xff" * 32, "key_id": "k1",
              "issued_at_micros": 1_767_225_600_123_456, "signature": bytes(range(64)),
              "checkpoint_hash": bytes(range(1, 33)), "last_source_offset": 41}
LONGS = st.integers(-(2**63), 2**63 - 1)
NON_NEGATIVE = st.integers(0, 2**63 - 1)
# text that stresses escaping: controls, quotes, backslashes, DEL, U+2028, non-BMP, NUL
NASTY = st.text(alphabet=st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\u2028", "é", "\U0001F600", "/", "\n",
                                          "\t", "\b", "\f", "\r", "a", " ", "."]) | st.characters(exclude_categories=("Cs",)),
                max_size=30)


def test_the_writer_is_built_and_reads_both_event_versions():
    assert all(WRITERS.values()), "pipeline.native.ocsf_writer is not built: run make venv"
    # v1, v2 with protected_fields, v3 with protected_fields and protected_subjects
    assert sorted(fast.readable_headers(CODEC).values()) == [0, 1, 2]


def _encode(event: dict, version) -> bytes:
    record = {**event, "event_id": str(event["event_id"])}
    names = {f["name"] for f in version.parsed["fields"]}
    for field in ("protected_fields", "protected_subjects"):
        if field not in names:
            record.pop(field, None)
    stream = io.BytesIO()
    fastavro.schemaless_writer(stream, version.parsed, record)
    return MARKER + version.fingerprint + stream.getvalue()


def _reference(fields: tuple, offset: int, timestamp_ms, inclusion, error, product_version) -> bytes:
    names = ("chain_id", "seq", "prev_hash", "hash", "source_partition", "source_offset", "source_timestamp_micros",
             "event")
    record = dict(zip(names, fields, strict=True))
    event = plain_event_reader().decode(record["event"])
    payload = event_payload(*fields[4:8])
    document = ocsf.event_record(record, event, payload, ocsf.Position(TOPIC, PARTITION, offset, timestamp_ms),
                                 inclusion, evidence_error=error, product_version=product_version)
    return orjson.dumps(document)


def _both(fields: tuple, offset: int, timestamp_ms, covered: bool, error, product_version):
    """(compiled bytes or None, the reference's bytes) of one sealed event."""
    writer = WRITERS[product_version]
    if covered:
        covering = ocsf.covering_checkpoint(CHECKPOINT, ocsf.Position(TOPIC, PARTITION, offset + 5, timestamp_ms))
        path = [bytes([i]) * 32 for i in range(fields[1] % 5)]
        inclusion = ocsf.Inclusion(covering, fields[1] % 10, 10, path)
        rendered = writer.render(fields, offset, timestamp_ms, orjson.dumps(covering.signature),
                                 orjson.dumps(covering.evidence), inclusion.leaf_index, inclusion.tree_size,
                                 orjson.dumps([node.hex() for node in path]), error)
    else:
        inclusion = None
        rendered = writer.render(fields, offset, timestamp_ms, None, None, 0, 0, None, error)
    return rendered, _reference(fields, offset, timestamp_ms, inclusion, error, product_version)


def _left_to_the_reference(event: dict) -> bool:
    """What the writer declines by design: a Detection Finding, over 64 attributes."""
    return ((event["action"] == ocsf.ALERT_ACTION and event["source_service"] == ocsf.DETECTOR_SERVICE
             and ocsf.class_of_event(event)[0] == ocsf.DETECTION_FINDING)
            or len(event["attributes"]) > 64)


def _check(event: dict, version, seq: int, offset: int, source: tuple, timestamp_ms, covered: bool, error,
           product_version) -> bytes | None:
    value = _encode(event, version)
    fields = ("audit.raw/3", seq, bytes(range(32)), bytes(range(32, 64)), *source, value)
    rendered, expected = _both(fields, offset, timestamp_ms, covered, error, product_version)
    if rendered is None:
        assert _left_to_the_reference(plain_event_reader().decode(value)), "declined an event it writes"
        return None
    assert rendered[0] == expected, (rendered[0], expected)
    document = json.loads(expected)
    assert (rendered[1], rendered[2]) == (document["class_uid"], document["time"])
    return rendered[0]


# source_ip: an address (OCSF ip) or not (the endpoint's name alone), as ipaddress decides
ADDRESSES = (st.ip_addresses().map(str) | st.sampled_from(
    ["1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "256.1.1.1", "1.2.3", "1.2.3.4.5", "1.2.3.", ".1.2.3",
     "1..2.3", "1234.1.1.1", "::1", "fe80::1%eth0", "::ffff:1.2.3.4", ":", "1.2.3.4 ", "\u0661.2.3.4", "p1.abc"])
             | st.lists(st.integers(0, 300).map(str), min_size=1, max_size=5).map(".".join))
events = valid_events.map(lambda event: {**event, "occurred_at": ocsf.micros(event["occurred_at"])})
nasty_events = st.fixed_dictionaries({
    "event_id": NASTY, "occurred_at": LONGS,
    "actor": st.fixed_dictionaries({"id": NASTY, "type": st.sampled_from(["USER", "SERVICE", "SYSTEM", "UNKNOWN"]),
                                    "source_ip": st.none() | NASTY | ADDRESSES, "user_agent": st.none() | NASTY,
                                    "session_id": st.none() | NASTY}),
    "action": st.sampled_from(["user.login", "session.logout", "document.read", "x.delete", "a.b.grant", "", ".",
                               "alert.raised", "weird.verb", "signin", "é.update"]) | NASTY,
    "resource": st.fixed_dictionaries({"type": NASTY, "id": NASTY}),
    "outcome": st.fixed_dictionaries({"status": st.sampled_from(["SUCCESS", "FAILURE", "DENIED", "UNKNOWN"]),
                                      "reason": st.none() | NASTY}),
    "source_service": st.sampled_from(["auditseal-detector", "billing", ""]) | NASTY,
    "request_id": st.none() | NASTY, "trace_id": st.none() | NASTY,
    "attributes": st.dictionaries(NASTY, NASTY, max_size=8),
    "protected_fields": st.lists(st.fixed_dictionaries({"field": NASTY, "subject": NASTY, "key_id": NASTY,
                                                        "ciphertext": NASTY}), max_size=3),
    "protected_subjects": st.lists(st.fixed_dictionaries({"subject": NASTY, "key_id": NASTY,
                                                          "fields": st.lists(NASTY, max_size=4),
                                                          "ciphertext": st.binary(max_size=300)}), max_size=3),
})
positions = st.tuples(st.integers(0, 2**31 - 1), NON_NEGATIVE, NON_NEGATIVE)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=events, version=st.sampled_from(sorted(VERSIONS)), seq=NON_NEGATIVE, offset=NON_NEGATIVE,
       source=positions, timestamp_ms=st.none() | LONGS, covered=st.booleans(), error=st.none() | NASTY,
       product_version=st.sampled_from(sorted(WRITERS, key=str)))
def test_generated_events_render_as_the_reference(event, version, seq, offset, source, timestamp_ms, covered, error,
                                                  product_version):
    _check(event, VERSIONS[version], seq, offset, source, timestamp_ms, covered, error, product_version)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=nasty_events, version=st.sampled_from(sorted(VERSIONS)), seq=NON_NEGATIVE | st.just(0),
       offset=NON_NEGATIVE, source=positions, timestamp_ms=st.none() | LONGS, covered=st.booleans(),
       error=st.none() | NASTY, product_version=st.sampled_from(sorted(WRITERS, key=str)))
def test_edge_case_events_render_as_the_reference(event, version, seq, offset, source, timestamp_ms, covered, error,
                                                  product_version):
    _check(event, VERSIONS[version], seq, offset, source, timestamp_ms, covered, error, product_version)


ADDRESS_TEXT = st.text(alphabet="0123456789abcdefABCDEFg:.%/ \u0661", max_size=45)


@settings(max_examples=3000, deadline=None)
@given(text=ADDRESS_TEXT | ADDRESSES | st.ip_addresses(v=6).map(str).flatmap(
    lambda address: st.sampled_from([address, address + "%eth0", address + "%", address + "%a%b", address + "/64",
                                     address.upper(), address.replace("::", ":0:", 1), ":" + address, address + ":"])))
def test_ip_addresses_are_recognised_as_ipaddress_does(text):
    assert ocsf_writer.is_ip_address(text) == ocsf.is_ip_address(text), text


def test_ip_address_edge_cases():
    for text in ["::", "::1", "1::", ":::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8",
                 "1::2::3", "::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3.04",
                 "fe80::1%", "fe80::1%%", "fe80::1%x%", "fe80::1%é", "12345::", "g::", "1:2", ":1:2", "1.2.3.4",
                 "1.2.3.4:", "", "%", "::%x", "0:0:0:0:0:0:0:0", "::0:0:0:0:0:0:0", "1:2:3:4:5:6:7::8"]:
        assert ocsf_writer.is_ip_address(text) == ocsf.is_ip_address(text), text


def test_extreme_integers_and_absent_optional_fields():
    event = new_event(actor={"id": "svc", "type": "SERVICE"}, action="invoice.create",
                      resource={"type": "invoice", "id": "i-1"}, outcome={"status": "SUCCESS"}, source_service="b")
    event = {**event, "occurred_at": -(2**63)}
    newest = VERSIONS[max(VERSIONS)]
    for seq, offset, source, occurred in [(0, 0, (0, 0, 0), -(2**63)), (2**63 - 1, 2**63 - 1,
                                          (2**31 - 1, 2**63 - 1, 2**63 - 1), 2**63 - 1), (1, 5, (3, 7, 9), -1),
                                          (1, 5, (3, 7, 9), -1000), (1, 5, (3, 7, 9), -1001)]:
        for timestamp_ms in (None, -1, 0, 2**63 - 1, -(2**63)):
            for covered in (False, True):
                assert _check({**event, "occurred_at": occurred}, newest, seq, offset, source, timestamp_ms,
                              covered, None, None) is not None


def test_encrypted_personal_fields_render_as_the_reference():
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    event = new_event(actor={"id": "alice@example.org", "type": "USER", "source_ip": "203.0.113.7",
                             "user_agent": "Mozilla/5.0", "session_id": "s-1"}, action="patient.record.read",
                      resource={"type": "record", "id": "r-9"}, outcome={"status": "DENIED", "reason": "policy"},
                      source_service="clinic", attributes={"patient_email": "bob@example.org", "ward": "3"})
    protected = dict(protector.protect({**event, "personal_attributes": {"patient_email": "bob"}}))
    assert protected["protected_subjects"]
    value = CODEC.encode(protected)
    fields = ("audit.raw/3", 7, bytes(32), bytes(32), 3, 10, 20, value)
    for covered in (False, True):
        rendered, expected = _both(fields, 11, 1_767_225_600_000, covered, None, None)
        assert rendered is not None and rendered[0] == expected
        assert b"alice@example.org" not in rendered[0] and ocsf_errors(json.loads(rendered[0])) == []


def test_declines_exactly_where_the_reference_cannot_read_damaged_bytes():
    rng = random.Random(19)
    base = [_encode(event, version) for event, version in (
        (new_event(actor={"id": "a", "type": "USER", "source_ip": "192.0.2.1", "session_id": "s"},
                   action="doc.read", resource={"type": "doc", "id": "d"}, outcome={"status": "SUCCESS"},
                   source_service="svc", request_id="r", trace_id="t", attributes={"k": "v", "k2": "é"}), v)
        for v in VERSIONS.values())]
    declined = written = 0
    for _ in range(3000):
        value = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            if len(value) <= 11:
                break
            where = rng.randrange(10, len(value))
            action = rng.random()
            if action < 0.6:
                value[where] = rng.randrange(256)
            elif action < 0.8:
                del value[where:]
            else:
                value.insert(where, rng.randrange(256))
        value = bytes(value)
        fields = ("audit.raw/3", 4, bytes(32), bytes(32), 3, 10, 20, value)
        rendered = WRITERS[None].render(fields, 11, None, None, None, 0, 0, None, None)
        try:
            expected = _reference(fields, 11, None, None, None, None)
        except DecodeError:
            assert rendered is None, "rendered an event the reference cannot read"
            declined += 1
            continue
        if rendered is None:  # allowed only for what the writer leaves to the reference by design
            event = plain_event_reader().decode(value)
            assert _left_to_the_reference(event) or value[:10] not in fast.readable_headers(CODEC)
            continue
        assert rendered[0] == expected
        written += 1
    assert declined > 100 and written > 100, (declined, written)


def test_repeated_attribute_keys_and_negative_source_coordinates_go_to_the_reference():
    event = new_event(actor={"id": "a", "type": "USER"}, action="doc.read", resource={"type": "doc", "id": "d"},
                      outcome={"status": "SUCCESS"}, source_service="svc")
    value = CODEC.encode({**event, "attributes": {"x": "1"}})
    # the map block {"x": "1"} written twice with different values: fastavro keeps the last value
    body = value[10:]
    one = b"\x02\x02x\x021"
    at = body.rindex(one)
    twice = value[:10] + body[:at] + b"\x04\x02x\x021\x02x\x022" + body[at + len(one):]
    assert plain_event_reader().decode(twice)["attributes"] == {"x": "2"}
    assert WRITERS[None].render(("c", 1, bytes(32), bytes(32), 0, 0, 0, twice), 0, None, None, None, 0, 0, None,
                                None) is None
    for source in ((-1, 0, 0), (0, -1, 0), (0, 0, -1)):
        assert WRITERS[None].render(("c", 1, bytes(32), bytes(32), *source, value), 0, None, None, None, 0, 0, None,
                                    None) is None


@pytest.mark.parametrize("size", [*range(1, 70), 127, 128, 129, 1000, 1025])
def test_audit_paths_are_the_inclusion_proofs(size):
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size)]
    expected = [orjson.dumps([node.hex() for node in path]) for path in inclusion_proofs(leaves)]
    assert WRITERS[None].audit_paths(tree_levels(leaves)) == expected
    assert WRITERS[None].audit_paths(tree_levels([])) == [] == inclusion_proofs([])
    assert WRITERS[None].tree_levels(leaves) == tree_levels([record_leaf_hash(leaf) for leaf in leaves])
    assert WRITERS[None].tree_levels([]) == [] and WRITERS[None].tree_levels([*leaves, bytes(31)]) is None


def _partition(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    key = SigningKey.from_seed(bytes(range(32)))
    sealer = ChainSealer.resume("audit.raw/3", 3, key, None)
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    raw = []
    for index in range(400):
        choice = rng.random()
        event = new_event(actor={"id": f"u{index}\u00e9\"", "type": rng.choice(["USER", "SERVICE"]),
                                 "source_ip": rng.choice([None, "", "10.0.0.1"])},
                          action=rng.choice(["doc.read", "user.login", "session.logout", "x.frobnicate"]),
                          resource={"type": "doc", "id": f"d\n{index}"}, outcome={"status": "FAILURE", "reason": "x"},
                          source_service="svc", attributes={"i": str(index)} if index % 3 else {})
        if choice < 0.05:
            raw.append(b"junk that is not an event")
        elif choice < 0.08:
            raw.append(CODEC.encode(new_event(actor={"id": "detector", "type": "SERVICE"}, action="alert.raised",
                                              resource={"type": "principal", "id": "User:x"},
                                              outcome={"status": "SUCCESS"}, source_service="auditseal-detector",
                                              attributes={"rule": "r", "severity": "CRITICAL", "summary": "s"})))
        elif choice < 0.2 and event["attributes"]:
            raw.append(CODEC.encode(dict(protector.protect({**event, "personal_attributes": {"i": "bob"}}))))
        else:
            raw.append(CODEC.encode(event))
    values = []
    for offset, value in enumerate(raw):
        values.append(sealer.seal(value, offset, 1_767_225_600_000_000 + offset).value)
        if sealer.pending >= rng.randint(1, 60):
            values.append(sealer.checkpoint(1_767_225_601_000_000 + offset).value)
    values.insert(50, b"\xc3\x01" + bytes(8) + b"a future record kind")
    # starts inside a batch (the topic's retention removed its first entries) and ends inside one: both are
    # released without a signature
    return values[3:-7]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_whole_partitions_map_to_the_same_documents_both_ways(seed):
    values = _partition(seed)
    out = {}
    for native in (True, False):
        mapper = PartitionMapper(TOPIC, PARTITION, native=native, product_version="9.9")
        documents = []
        for offset, value in enumerate(values):
            documents += mapper.add(offset, value, 1_767_225_600_000 + offset)
        out[native] = documents + mapper.flush()
    assert out[True] == out[False]
    classes = {document.class_uid for document in out[True]}
    assert classes == {ocsf.API_ACTIVITY, ocsf.AUTHENTICATION, ocsf.DETECTION_FINDING, ocsf.APPLICATION_ERROR,
                       ocsf.EVENT_LOG_ACTIVITY, ocsf.BASE_EVENT}
    assert any(document.unsigned for document in out[True])


def test_the_compiled_output_is_valid_ocsf():
    values = _partition(4)
    mapper = PartitionMapper(TOPIC, PARTITION)
    documents = []
    for offset, value in enumerate(values):
        documents += mapper.add(offset, value, 1_767_225_600_000 + offset)
    documents += mapper.flush()
    for document in documents[:300]:
        assert ocsf_errors(json.loads(document.json)) == [], document.json[:300]


def _sealed_batch(events: list[dict], version, seq_base: int = 0) -> tuple[list[bytes], bytes]:
    """The SealedEvent values of ``events`` (AuditEvent ``version``) sealed on one chain, and their checkpoint:
    each sealed as an event whatever it holds (what the bridge may read, not what the sealer would accept)."""
    key = SigningKey.from_seed(bytes(range(32)))
    sealer = ChainSealer.resume("audit.raw/3", 3, key, None)
    sealer._certainly_valid = lambda value: True  # type: ignore[method-assign]
    values = [sealer.seal(_encode(event, version), seq_base + n, 1_767_225_600_000_000 + n).value
              for n, event in enumerate(events)]
    return values, sealer.checkpoint(1_767_225_601_000_000).value


def _map(values: list[bytes], native: bool, first_offset: int = 0) -> list:
    mapper = PartitionMapper(TOPIC, PARTITION, native=native, product_version="9.9")
    documents = []
    for offset, value in enumerate(values, first_offset):
        documents += mapper.add(offset, value, None if offset % 2 else 1_767_225_600_000 + offset)
    return documents + mapper.flush()


def _writer_batch(values: list[bytes], checkpoint: bytes, window: tuple[int, int] | None = None, **changes):
    """render_sealed_batch of one whole batch as PartitionMapper calls it (``changes``: arguments altered)."""
    mapper = PartitionMapper(TOPIC, PARTITION, product_version="9.9")
    record = dict(zip(mapper._names[b"checkpoint"], mapper._codecs.decode_fields(checkpoint)[1], strict=False))
    at = len(values)  # the checkpoint's offset and timestamp, as _map gives them
    covering = ocsf.covering_checkpoint(record, ocsf.Position(TOPIC, PARTITION, at,
                                                              None if at % 2 else 1_767_225_600_000 + at))
    arguments = {"raw": [(offset, None if offset % 2 else 1_767_225_600_000 + offset, value)
                         for offset, value in enumerate(values)],
                 "sealed_header": mapper._sealed_header, "first_seq": record["first_seq"],
                 "last_seq": record["last_seq"], "merkle_root": record["merkle_root"],
                 "signature": orjson.dumps(covering.signature), "checkpoint": orjson.dumps(covering.evidence),
                 "document": ocsf_document_type()}
    arguments.update(changes)
    if window is not None:  # render_sealed_lines: the same batch as JSON lines in [since, until)
        del arguments["document"]
        return mapper._writer.render_sealed_lines(*arguments.values(), *window)
    return mapper._writer.render_sealed_batch(*arguments.values())


def ocsf_document_type():
    from pipeline.siem.batches import Document

    return Document


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(nasty_events, min_size=1, max_size=40), version=st.sampled_from(sorted(VERSIONS)))
def test_whole_batches_render_in_one_call_as_the_reference(batch, version):
    batch = [event for event in batch if not _left_to_the_reference(plain_event_reader().decode(
        _encode(event, VERSIONS[version])))] or [{**_plain_event(), "action": "doc.read"}]
    values, checkpoint = _sealed_batch(batch, VERSIONS[version])
    whole = _writer_batch(values, checkpoint)
    assert whole is not None, "the writer declined a batch of events it writes"
    expected = _map([*values, checkpoint], native=False)
    assert [d.json for d in whole] == [d.json for d in expected[:-1]]
    assert whole == expected[:-1]  # class, time and unsigned too
    assert _map([*values, checkpoint], native=True) == expected
    # as export takes it: one buffer of lines, the documents in the window, every one counted by class
    counts: dict[int, int] = {}
    for document in whole:
        counts[document.class_uid] = counts.get(document.class_uid, 0) + 1
    middle = sorted(d.time for d in whole)[len(whole) // 2]
    for window in ((-(2**63), 2**63 - 1), (middle, middle + 1)):
        kept = [d for d in whole if window[0] <= d.time < window[1]]
        assert _writer_batch(values, checkpoint, window) == (b"".join(d.json + b"\n" for d in kept), len(kept), counts)


def _plain_event() -> dict:
    event = new_event(actor={"id": "u", "type": "USER"}, action="doc.read", resource={"type": "doc", "id": "d"},
                      outcome={"status": "SUCCESS"}, source_service="svc")
    return {**event, "event_id": str(event["event_id"]), "occurred_at": ocsf.micros(event["occurred_at"])}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 9, 255, 256, 257, 1000])
def test_whole_batch_audit_paths_of_every_tree_shape(size):
    values, checkpoint = _sealed_batch([_plain_event() for _ in range(size)], CODEC.schema)
    whole = _writer_batch(values, checkpoint)
    expected = _map([*values, checkpoint], native=False)
    assert whole == expected[:-1]
    for document in whole[:: max(1, size // 5)]:
        inclusion = json.loads(document.json)["unmapped"]["auditseal"]["inclusion"]
        assert inclusion["tree_size"] == size and len(inclusion["audit_path"]) <= size.bit_length()
        assert ocsf_errors(json.loads(document.json)) == [], document.json[:300]


def test_a_batch_the_writer_does_not_take_goes_record_by_record():
    events = [_plain_event() for _ in range(12)]
    values, checkpoint = _sealed_batch(events, CODEC.schema)
    alert = CODEC.encode(new_event(actor={"id": "detector", "type": "SERVICE"}, action="alert.raised",
                                   resource={"type": "principal", "id": "User:x"}, outcome={"status": "SUCCESS"},
                                   source_service="auditseal-detector", attributes={"rule": "r"}))
    key = SigningKey.from_seed(bytes(range(32)))
    with_alert = ChainSealer.resume("audit.raw/3", 3, key, None)
    alert_batch = [with_alert.seal(value, n, 1_767_225_600_000_000 + n).value
                   for n, value in enumerate([_encode(events[0], CODEC.schema), alert])]
    alert_checkpoint = with_alert.checkpoint(1_767_225_601_000_000).value
    declined = {
        "another root": _writer_batch(values, checkpoint, merkle_root=bytes(32)),
        "another first seq": _writer_batch(values, checkpoint, first_seq=1, last_seq=12),
        "an entry missing": _writer_batch(values[1:], checkpoint),
        "a trailing byte": _writer_batch([*values[:5], values[5] + b"\x00", *values[6:]], checkpoint),
        "a value cut short": _writer_batch([*values[:5], values[5][:-1], *values[6:]], checkpoint),
        "another header": _writer_batch(values, checkpoint, sealed_header=bytes(10)),
        "an alert": _writer_batch(alert_batch, alert_checkpoint),
    }
    assert {name: result for name, result in declined.items() if result is not None} == {}
    # what the mapper publishes for each of them is the reference's, record by record
    for stream in ([*values[1:], checkpoint], [*values[:5], values[5] + b"\x00", *values[6:], checkpoint],
                   [*values[:5], values[5][:-1], *values[6:], checkpoint], [*alert_batch, alert_checkpoint],
                   [*values, b"junk", checkpoint], [*values[:4], b"junk", *values[4:]]):
        assert _map(stream, native=True) == _map(stream, native=False)


def test_whole_batches_keep_the_committed_offset_and_held_count():
    values, checkpoint = _sealed_batch([_plain_event() for _ in range(5)], CODEC.schema)
    for native in (True, False):
        mapper = PartitionMapper(TOPIC, PARTITION, native=native)
        assert [mapper.add(10 + n, value) for n, value in enumerate(values)] == [[]] * 5
        assert (mapper.held, mapper.first_held_offset) == (5, 10)
        assert len(mapper.add(15, checkpoint)) == 6
        assert (mapper.held, mapper.first_held_offset) == (0, None)
        mapper.add(16, values[0])
        mapper.reset()
        assert (mapper.held, mapper.first_held_offset) == (0, None)
