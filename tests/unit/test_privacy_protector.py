"""The event-level protection (pipeline/privacy/protector.py) and the compiled paths over protected events.

The keys come from an in-memory key source with the key store's interface; the real key store
(Kafka) is exercised in tests/integration/test_privacy.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from pipeline.detector.rules import access_from_event, judge, parse_detector_config
from pipeline.privacy.crypto import FieldCipher, PseudonymKey, new_subject_key
from pipeline.privacy.keystore import UnknownSubjectError
from pipeline.privacy.protector import PROTECTED_FIELDS, Protector, personal_fields, reveal
from pipeline.producer.event import new_event
from pipeline.wire.acceptance import compile_checker
from pipeline.wire.codec import default_codec
from pipeline.wire.validation import InvalidEventError, validate_event
from tests.differential.strategies import valid_events

CODEC = default_codec()
CHECK = compile_checker(CODEC.schema.parsed, CODEC.header)


class MemoryKeys:
    """The part of KeyStore a Protector and reveal use, held in a dict."""

    def __init__(self) -> None:
        self.keys: dict[str, dict] = {}
        self.created = 0

    def pseudonym_key(self) -> PseudonymKey:
        return PseudonymKey(1, bytes(range(32)))

    def on_erasure(self, listener) -> None:
        self.listener = listener

    def cipher_for(self, pseudonym: str) -> FieldCipher:
        if pseudonym not in self.keys:
            key = new_subject_key()
            self.keys[pseudonym] = {key.key_id: key}
            self.created += 1
        key = next(iter(self.keys[pseudonym].values()))
        return FieldCipher(pseudonym, key)

    def cipher(self, pseudonym: str, key_id: str) -> FieldCipher:
        try:
            return FieldCipher(pseudonym, self.keys[pseudonym][key_id])
        except KeyError:
            raise UnknownSubjectError(f"no key {key_id} of {pseudonym}") from None


def _event(**overrides):
    actor = {"id": "alice@example.org", "type": "USER", "source_ip": "203.0.113.7",
             "user_agent": "Mozilla/5.0 (X11)", "session_id": "sess-81"}
    return {**new_event(actor=actor, action="patient.record.read", resource={"type": "record", "id": "r-9"},
                        outcome={"status": "SUCCESS"}, source_service="clinic",
                        attributes={"patient_email": "bob@example.org", "ward": "3"}), **overrides}


def test_the_schema_declares_the_personal_fields() -> None:
    assert personal_fields() == ("actor.id", "actor.source_ip", "actor.user_agent", "actor.session_id", "attributes")


def test_protected_event_has_no_plaintext_one_key_per_subject_and_reveals() -> None:
    keys = MemoryKeys()
    protector = Protector(keys)  # type: ignore[arg-type]
    event = _event(personal_attributes={"patient_email": "bob"})
    protected = protector.protect(event)
    assert "personal_attributes" in event and "personal_attributes" not in protected  # input untouched
    data = CODEC.encode(protected)
    for plaintext in (b"alice@example.org", b"203.0.113.7", b"Mozilla", b"sess-81", b"bob@example.org"):
        assert plaintext not in data
    alice, bob = protector.subject_pseudonym("alice@example.org"), protector.subject_pseudonym("bob")
    assert protected["actor"]["id"] == alice and protected["actor"]["type"] == "USER"
    assert protected["attributes"]["ward"] == "3"  # not flagged: stays as it is
    fields = {f["field"]: f for f in protected[PROTECTED_FIELDS]}
    assert sorted(fields) == ["actor.id", "actor.session_id", "actor.source_ip", "actor.user_agent",
                              "attributes.patient_email"]
    assert {f["subject"] for f in fields.values()} == {alice, bob} and keys.created == 2
    assert fields["attributes.patient_email"]["subject"] == bob
    revealed = reveal(CODEC.decode(data), keys)  # type: ignore[arg-type]
    assert {name: r["value"] for name, r in revealed.items()} == {
        "actor.id": "alice@example.org", "actor.source_ip": "203.0.113.7", "actor.user_agent": "Mozilla/5.0 (X11)",
        "actor.session_id": "sess-81", "attributes.patient_email": "bob@example.org"}


def test_one_actor_is_protected_once_per_cache_lifetime_and_again_after_an_erasure() -> None:
    keys = MemoryKeys()
    protector = Protector(keys)  # type: ignore[arg-type]
    first, second = protector.protect(_event()), protector.protect(_event())
    assert first[PROTECTED_FIELDS] == second[PROTECTED_FIELDS] and keys.created == 1
    subject = protector.subject_pseudonym("alice@example.org")
    del keys.keys[subject]
    keys.listener(subject)  # the key store saw the erasure: cached ciphertexts of the old key must go
    third = protector.protect(_event())
    assert third[PROTECTED_FIELDS][0]["key_id"] != first[PROTECTED_FIELDS][0]["key_id"] and keys.created == 2


def test_workloads_are_not_data_subjects_and_absent_fields_carry_nothing() -> None:
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    service = _event(actor={"id": "User:svc-billing", "type": "SERVICE"})
    assert protector.protect(service) is service
    human = protector.protect(_event(actor={"id": "carol", "type": "USER"}))
    assert [f["field"] for f in human[PROTECTED_FIELDS]] == ["actor.id"]
    assert human["actor"].get("source_ip") is None


@pytest.mark.parametrize("flagged, problem", [
    ({"missing": "bob"}, "flags attribute 'missing'"),
    ({"patient_email": ""}, "must map attribute keys"),
    (["patient_email"], "must map attribute keys"),
])
def test_bad_flags_are_one_clear_error(flagged, problem) -> None:
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError, match=problem):
        protector.protect(_event(personal_attributes=flagged))


def test_a_producer_without_protection_refuses_flagged_values_instead_of_sending_them() -> None:
    with pytest.raises(InvalidEventError, match="personal_attributes: unknown field"):
        CODEC.encode(_event(personal_attributes={"patient_email": "bob"}))


@settings(max_examples=200, deadline=None)
@given(valid_events)
def test_protected_events_take_the_compiled_paths_with_the_reference_bytes(event: dict) -> None:
    # differential: the compiled writer (codec.encode) and the checked writer give the same bytes, the
    # sealer's compiled acceptance check says "certainly valid", and the reference validation agrees
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    event = {**event, "actor": {**event["actor"], "type": "USER"}}
    protected = protector.protect(event)
    data = CODEC.encode(protected)
    assert data == CODEC.encode_checked(protected)
    assert CHECK(data)
    validate_event(CODEC.decode(data))
    assert len(protected[PROTECTED_FIELDS]) == sum(
        1 for name in ("id", "source_ip", "user_agent", "session_id") if isinstance(event["actor"].get(name), str))


def test_the_detector_rules_work_on_pseudonyms() -> None:
    config = parse_detector_config("version: 1\nrules:\n  denied_burst: {threshold: 3, window: 60}\n")
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    source = next(iter(config.access_sources))
    bucket, profile, started, alerts = None, None, None, []
    for second in range(4):
        event = protector.protect(_event(source_service=source, outcome={"status": "DENIED", "reason": "policy"},
                                         occurred_at=1_790_000_000_000_000 + second * 1_000_000))
        access = access_from_event(CODEC.decode(CODEC.encode(event)), config, own_principal="User:detector")
        verdict = judge(access, profile, bucket, config=config, learning_started=started,
                        window_start=1_790_000_000_000_000)
        bucket, profile, started = verdict.bucket, verdict.profile, verdict.learning_started
        alerts += verdict.alerts
    pseudonym = protector.subject_pseudonym("alice@example.org")
    assert [a.rule for a in alerts] == ["denied_burst"] and alerts[0].principal == pseudonym
    assert "alice" not in alerts[0].summary


def test_an_invalid_actor_is_never_hidden_behind_a_cached_valid_one() -> None:
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    valid = _event()
    CODEC.encode(protector.protect(valid))
    invalid = _event(actor={**valid["actor"], "nickname": "al"})
    with pytest.raises(InvalidEventError, match="nickname"):
        CODEC.encode(protector.protect(invalid))
    with pytest.raises(InvalidEventError, match="actor.source_ip"):
        CODEC.encode(protector.protect(_event(actor={**valid["actor"], "source_ip": ["not", "a", "string"]})))


@settings(max_examples=200, deadline=None)
@given(valid_events)
def test_the_encoder_splices_the_cached_fields_into_the_same_bytes(event: dict) -> None:
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    encode = protector.encoder(CODEC.encode)
    event = {**event, "actor": {**event["actor"], "type": "USER"}}
    first, second = encode(event), encode(dict(event))  # the second takes the spliced path
    assert first == second == CODEC.encode(protector.protect(event)) == CODEC.encode_checked(protector.protect(event))
    flagged = {**event, "attributes": {"mail": "m@x"}, "personal_attributes": {"mail": "m"}}
    assert encode(flagged) == CODEC.encode(protector.protect(flagged))
    invalid = {**event, "action": 7}
    with pytest.raises(InvalidEventError, match="action"):
        encode(invalid)  # the spliced path still validates the event


# -- the compiled path (pipeline/native/protector_core.pyx) against the reference encode(protect(event)) ---


def test_the_compiled_path_learns_an_actor_once_and_encodes_later_events_without_protecting_them() -> None:
    keys = MemoryKeys()
    protector = Protector(keys)  # type: ignore[arg-type]
    calls = []
    protector.protect = lambda event: calls.append(event) or Protector.protect(protector, event)
    encode = protector.encoder(CODEC.encode)
    first = encode(_event(action="a.first"))
    assert len(encode) == 1 and protector.encoder(CODEC.encode) is encode  # every producer shares what is learnt
    events = [_event(action=f"a.{n}") for n in range(5)]
    later = [encode(event) for event in events]
    assert len(calls) == 1 and keys.created == 1  # learnt from the reference once; no key lookup after that
    assert first != later[0] and all(b"alice@example.org" not in data for data in later)
    assert later == [CODEC.encode(Protector.protect(protector, event)) for event in events]


@pytest.mark.parametrize("change", [
    {"source_ip": "198.51.100.9"},  # another value of a cached actor: another actor
    {"session_id": None},  # None instead of a string
    {"nickname": "al"},  # an unknown field: refused, never hidden behind the cached actor
    {"user_agent": 7},  # a wrong type: refused
])
def test_an_actor_differing_in_any_item_is_never_taken_for_a_cached_one(change) -> None:
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    encode = protector.encoder(CODEC.encode)
    valid = _event()
    encode(valid), encode(dict(valid))
    other = _event(actor={**valid["actor"], **change})
    try:
        reference = CODEC.encode(protector.protect(other))
    except InvalidEventError as refused:
        with pytest.raises(InvalidEventError, match=str(refused).split(":")[0]):
            encode(other)
        return
    assert encode(other) == encode(dict(other)) == reference


def test_the_compiled_table_is_bounded_and_emptied_by_an_erasure() -> None:
    keys = MemoryKeys()
    protector = Protector(keys, cache_size=3)  # type: ignore[arg-type]
    encode = protector.encoder(CODEC.encode)
    for n in range(7):
        encode(_event(actor={"id": f"user-{n}", "type": "USER"}))
        assert len(encode) <= 3
    encode(_event())
    assert len(encode) >= 1
    subject = protector.subject_pseudonym("alice@example.org")
    old_key = next(iter(keys.keys[subject]))
    del keys.keys[subject]
    keys.listener(subject)  # the key store saw the erasure
    assert len(encode) == 0
    after = CODEC.decode(encode(_event()))
    assert {f["key_id"] for f in after[PROTECTED_FIELDS]} != {old_key}  # never the destroyed key again


def test_an_expired_actor_is_protected_again() -> None:
    keys = MemoryKeys()
    protector = Protector(keys, cache_ttl=0.0)  # type: ignore[arg-type]
    calls = []
    original = protector.protect
    protector.protect = lambda event: calls.append(1) or original(event)
    encode = protector.encoder(CODEC.encode)
    encode(_event()), encode(_event())
    assert len(calls) == 2


def test_encode_replacing_refuses_what_encode_would_refuse() -> None:
    native = CODEC.encode.__self__
    names = native.field_names()
    event = _event()
    replaced = tuple(native.encode_field(name, event[name]) if name == "actor" else None for name in names)
    assert native.encode_replacing(event, replaced) == CODEC.encode(event)
    assert native.encode_replacing({**event, "nickname": "x"}, replaced) is None  # unknown field
    assert native.encode_replacing({k: v for k, v in event.items() if k != "action"}, replaced) is None
    assert native.encode_replacing({**event, "action": 7}, replaced) is None
    assert native.encode_field("actor", {"id": 7}) is None and native.encode_field("no-such-field", 1) is None
    with pytest.raises(ValueError, match="one replacement"):
        native.encode_replacing(event, (None,))
