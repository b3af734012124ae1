"""The event-level protection (pipeline/privacy/protector.py) and the compiled paths over protected events.

The keys come from an in-memory key source with the key store's interface; the real key store
(Kafka) is exercised in tests/integration/test_privacy.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from pipeline.detector.rules import access_from_event, judge, parse_detector_config
from pipeline.privacy.crypto import FieldCipher, PseudonymKey, SubjectKey, new_subject_key
from pipeline.privacy.keystore import SubjectErasedError, UnknownSubjectError
from pipeline.privacy.protector import PROTECTED_FIELDS, PROTECTED_SUBJECTS, Protector, personal_fields, reveal
from pipeline.privacy.records import Erasure
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
    groups = protected[PROTECTED_SUBJECTS]
    assert PROTECTED_FIELDS not in protected  # the per-value encoding is no longer written
    assert [(g["subject"], g["fields"]) for g in groups] == [
        (alice, ["actor.id", "actor.source_ip", "actor.user_agent", "actor.session_id"]),
        (bob, ["attributes.patient_email"])]  # one ciphertext per subject, each under its own key
    assert keys.created == 2 and groups[0]["key_id"] != groups[1]["key_id"]
    revealed = reveal(CODEC.decode(data), keys)  # type: ignore[arg-type]
    assert {name: r["value"] for name, r in revealed.items()} == {
        "actor.id": "alice@example.org", "actor.source_ip": "203.0.113.7", "actor.user_agent": "Mozilla/5.0 (X11)",
        "actor.session_id": "sess-81", "attributes.patient_email": "bob@example.org"}


def test_one_actor_is_protected_once_per_cache_lifetime_and_again_after_an_erasure() -> None:
    keys = MemoryKeys()
    protector = Protector(keys)  # type: ignore[arg-type]
    first, second = protector.protect(_event()), protector.protect(_event())
    assert first[PROTECTED_SUBJECTS] == second[PROTECTED_SUBJECTS] and keys.created == 1
    subject = protector.subject_pseudonym("alice@example.org")
    del keys.keys[subject]
    keys.listener(subject)  # the key store saw the erasure: cached ciphertexts of the old key must go
    third = protector.protect(_event())
    assert third[PROTECTED_SUBJECTS][0]["key_id"] != first[PROTECTED_SUBJECTS][0]["key_id"] and keys.created == 2


def test_workloads_are_not_data_subjects_and_absent_fields_carry_nothing() -> None:
    protector = Protector(MemoryKeys())  # type: ignore[arg-type]
    service = _event(actor={"id": "User:svc-billing", "type": "SERVICE"})
    assert protector.protect(service) is service
    human = protector.protect(_event(actor={"id": "carol", "type": "USER"}))
    assert [g["fields"] for g in human[PROTECTED_SUBJECTS]] == [["actor.id"]]
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
    assert len(protected[PROTECTED_SUBJECTS][0]["fields"]) == sum(
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


@pytest.mark.parametrize("rebuild", [
    lambda actor: dict(reversed(list(actor.items()))),  # the same items in another order
    lambda actor: {"".join(k): "".join(v) if isinstance(v, str) else v for k, v in actor.items()},  # equal copies
])
def test_an_actor_equal_to_a_cached_one_takes_the_cached_bytes(rebuild) -> None:
    keys = MemoryKeys()
    protector = Protector(keys)  # type: ignore[arg-type]
    calls = []
    protector.protect = lambda event: calls.append(event) or Protector.protect(protector, event)
    encode = protector.encoder(CODEC.encode)
    valid = _event()
    encode(valid)
    same = _event(actor=rebuild(valid["actor"]))
    assert same["actor"] == valid["actor"]
    assert encode(same) == CODEC.encode(Protector.protect(protector, same)) and len(calls) == 1


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
    assert {g["key_id"] for g in after[PROTECTED_SUBJECTS]} != {old_key}  # never the destroyed key again


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


# An event sealed by a producer of audit_event.v2 (the per-value encoding, one AES-SIV ciphertext per field):
# alice acts, an attribute is about bob. Fixed bytes, as archives hold them; written with the v2 writer and
# FieldCipher.encrypt under the keys below (pseudonym key bytes(range(32))).
OLD_FORMAT_EVENT = bytes.fromhex(
    'c301e45ee069157e19604830623763346135322d356433652d346630612d396135372d3363316532643462366138308080dd'
    '9095b6a2063270312e3079465a4d656f484e6f4c6b37795f5558794f6c654100023270312e524c6733733462484a5a5f7373'
    '725578566661465567023270312e5f625655595a366831786c543868516c3061554e7377023270312e43665878767455696f'
    '737a556d6c642d4947445a71512670617469656e742e7265636f72642e726561640c7265636f726406722d3900000c636c69'
    '6e69630000041a70617469656e745f656d61696c3270312e346872394a49475555434c77303462547a5966356b7708776172'
    '640233000a106163746f722e69643270312e3079465a4d656f484e6f4c6b37795f5558794f6c654120303031313232333334'
    '3435353636666658513846464b6668654d574753704f4831366b7644414737333655616c536b4f6947372d333764554f5761'
    '50491e6163746f722e736f757263655f69703270312e3079465a4d656f484e6f4c6b37795f5558794f6c6541203030313132'
    '3233333434353536366666483345743879664e4772784463746e793749694a486a324471437a6f764977583974364a562061'
    '63746f722e757365725f6167656e743270312e3079465a4d656f484e6f4c6b37795f5558794f6c6541203030313132323333'
    '3434353536366666585870373364344d646d6e69786d536b726e706c4b47414d78307a756b58305f7565494566534a455a56'
    '464346206163746f722e73657373696f6e5f69643270312e3079465a4d656f484e6f4c6b37795f5558794f6c654120303031'
    '313232333334343535363666663e454d6545327351306357756f6132505868747463516a4c46596d314c7050413061747472'
    '6962757465732e70617469656e745f656d61696c3270312e73544e6f317150627841566d6d706244486f4555725120383839'
    '3961616262636364646565666654563356446f395149706e6d314a744f576b2d2d6347596133466246527166635451455542'
    '4441546d495100')
OLD_KEYS = {"alice@example.org": SubjectKey("00112233445566ff", bytes(range(64))),
            "bob": SubjectKey("8899aabbccddeeff", bytes(range(64, 128)))}


class ErasableKeys(MemoryKeys):
    """MemoryKeys that remembers erasures and answers them as the key store does."""

    def __init__(self, keys: dict[str, SubjectKey]) -> None:
        super().__init__()
        pseudonyms = self.pseudonym_key()
        self.keys = {pseudonyms.subject_pseudonym(subject): {key.key_id: key} for subject, key in keys.items()}
        self.erased: set[str] = set()

    def erase(self, subject_id: str) -> None:
        pseudonym = self.pseudonym_key().subject_pseudonym(subject_id)
        del self.keys[pseudonym]
        self.erased.add(pseudonym)

    def cipher(self, pseudonym: str, key_id: str) -> FieldCipher:
        if pseudonym in self.erased:
            erasure = Erasure(pseudonym, "2026-12-01T00:00:00Z", "User:privacy", (key_id,), "e-1")
            raise SubjectErasedError(erasure, f"subject {pseudonym} was erased on {erasure.erased_at}")
        return super().cipher(pseudonym, key_id)


def test_an_event_archived_in_the_per_value_encoding_still_reveals_and_erases_one_subject_only() -> None:
    v2 = next(v for v in CODEC.catalog.versions(CODEC.family) if v.version == 2)
    assert OLD_FORMAT_EVENT[2:10] == v2.fingerprint  # written by the v2 writer, read by the newest reader
    event = CODEC.decode(OLD_FORMAT_EVENT)
    assert event[PROTECTED_SUBJECTS] == [] and len(event[PROTECTED_FIELDS]) == 5
    keys = ErasableKeys(OLD_KEYS)
    assert {name: r["value"] for name, r in reveal(event, keys).items()} == {  # type: ignore[arg-type]
        "actor.id": "alice@example.org", "actor.source_ip": "203.0.113.7", "actor.user_agent": "Mozilla/5.0 (X11)",
        "actor.session_id": "sess-81", "attributes.patient_email": "bob@example.org"}
    keys.erase("alice@example.org")
    after = reveal(event, keys)  # type: ignore[arg-type]
    assert all("was erased on 2026-12-01" in after[f"actor.{name}"]["erased"]
               for name in ("id", "source_ip", "user_agent", "session_id"))
    assert after["attributes.patient_email"]["value"] == "bob@example.org"  # bob's key is untouched


def test_erasing_one_subject_of_a_new_format_event_leaves_the_other_readable() -> None:
    keys = ErasableKeys({})
    protector = Protector(keys)  # type: ignore[arg-type]
    data = protector.encoder(CODEC.encode)(_event(personal_attributes={"patient_email": "bob"}))
    assert data[2:10] == CODEC.schema.fingerprint
    keys.erase("alice@example.org")
    after = reveal(CODEC.decode(data), keys)  # type: ignore[arg-type]
    assert sorted(name for name, r in after.items() if "erased" in r) == [
        "actor.id", "actor.session_id", "actor.source_ip", "actor.user_agent"]
    assert after["attributes.patient_email"]["value"] == "bob@example.org"


def test_a_new_format_event_is_smaller_than_the_per_value_encoding_of_the_same_values() -> None:
    protector = Protector(ErasableKeys(OLD_KEYS))  # type: ignore[arg-type]
    event = CODEC.decode(OLD_FORMAT_EVENT)
    plain = _event(event_id=event["event_id"], occurred_at=event["occurred_at"], personal_attributes={"patient_email": "bob"})
    data = CODEC.encode(protector.protect(plain))
    assert len(data) < len(OLD_FORMAT_EVENT) - 200  # 4 synthetic IVs, 3 subjects and key ids, base64 saved
