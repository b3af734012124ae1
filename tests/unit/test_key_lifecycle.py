"""Key lifecycle in the pure parts: retire/revoke windows, the version 2 keyring, compromised checkpoints,
the C2SP verifier key, and the schedule a running sealer follows across a rotation (key files here; the
same schedule over a PKCS#11 token is tested against SoftHSM2 in tests/integration/test_keys.py)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from pipeline.cli.keys import parse_time
from pipeline.errors import ConfigError
from pipeline.integrity.checkpoint import (
    build_checkpoint,
    check_key_not_compromised,
    sign_checkpoint,
    verify_checkpoint_signature,
)
from pipeline.integrity.errors import CompromisedKeyError, KeyFileError, KeyringError, MalformedInputError
from pipeline.integrity.keyring import (
    Keyring,
    KeySchedule,
    Signer,
    SigningKey,
    generate_signing_key,
    load_keyring,
    save_keyring,
    save_signing_key,
)
from pipeline.keys.errors import NoSigningKeyError
from pipeline.keys.export import c2sp_verifier_key, keyring_export
from pipeline.keys.schedule import KeyringSchedule
from pipeline.keys.store import SigningKeyStore, sealer_key_schedule

# golang.org/x/mod/sumdb/note's documented example verifier key
NOTE_EXAMPLE = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"


def test_c2sp_verifier_key_matches_the_note_package_example() -> None:
    public = base64.b64decode(NOTE_EXAMPLE.split("+")[2])[1:]
    assert c2sp_verifier_key("PeterNeumann", public) == NOTE_EXAMPLE
    with pytest.raises(MalformedInputError, match="no spaces or '\\+'"):
        c2sp_verifier_key("bad+name", public)
    with pytest.raises(MalformedInputError, match="32 bytes"):
        c2sp_verifier_key("name", public[:31])


def test_signing_keys_are_signers_and_their_own_schedule() -> None:
    key = generate_signing_key()
    assert isinstance(key, Signer) and isinstance(key, KeySchedule)
    assert key.signer_at(0) is key


def test_retire_closes_a_window_and_is_idempotent() -> None:
    old, new = generate_signing_key(), generate_signing_key()
    keyring = Keyring().rotate(old.public_key, 100).rotate(new.public_key, 200)
    retired = keyring.retire(new.key_id, 300)
    assert retired.active is None and retired.get(new.key_id).valid_until_micros == 300
    assert retired.retire(new.key_id, 400) == retired, "an earlier close stays"
    assert keyring.retire(old.key_id, 250) == keyring, "already closed at 200"
    with pytest.raises(KeyringError, match="expected a retirement time after that"):
        keyring.retire(new.key_id, 200)
    with pytest.raises(KeyringError, match="is not in the keyring"):
        keyring.retire("0000000000000000", 300)


def test_revoke_records_the_earliest_compromise_and_keeps_the_window() -> None:
    key = generate_signing_key()
    keyring = Keyring().rotate(key.public_key, 100)
    revoked = keyring.revoke(key.key_id, 500)
    entry = revoked.get(key.key_id)
    assert (entry.valid_until_micros, entry.compromised_since_micros) == (None, 500)
    assert revoked.revoke(key.key_id, 900).get(key.key_id).compromised_since_micros == 500, "never later"
    assert revoked.revoke(key.key_id, 300).get(key.key_id).compromised_since_micros == 300
    assert not entry.compromised_at(499) and entry.compromised_at(500)


def test_a_revoked_keyring_is_version_2_and_an_unrevoked_one_stays_version_1(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "keyring.json"
    keyring = Keyring().rotate(key.public_key, 100)
    save_keyring(keyring, path)
    assert json.loads(path.read_text())["version"] == 1
    save_keyring(keyring.revoke(key.key_id, 150), path)
    document = json.loads(path.read_text())
    assert document["version"] == 2 and document["keys"][0]["compromised_since_micros"] == 150
    assert load_keyring(path) == keyring.revoke(key.key_id, 150)
    document["version"] = 1
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match=r"unknown field\(s\) compromised_since_micros"):
        load_keyring(path)


def _checkpoint(key: SigningKey, issued_at: int):
    unsigned = build_checkpoint(chain_id="audit.raw/0", first_seq=0, record_hashes=[b"\x11" * 32],
                                prev_checkpoint_hash=b"\x00" * 32, issued_at_micros=issued_at)
    return sign_checkpoint(unsigned, key)


def test_a_checkpoint_signed_after_the_compromise_is_refused_and_one_before_is_not() -> None:
    key = generate_signing_key()
    keyring = Keyring().rotate(key.public_key, 100).revoke(key.key_id, 1_000)
    before, after = _checkpoint(key, 999), _checkpoint(key, 1_000)
    check_key_not_compromised(before, verify_checkpoint_signature(before, keyring))
    entry = verify_checkpoint_signature(after, keyring)
    with pytest.raises(CompromisedKeyError, match=f"signed by key {key.key_id} at 1000, after its compromise at 1000"):
        check_key_not_compromised(after, entry)


def test_export_lists_each_key_with_its_window_and_verifier_key() -> None:
    old, new = generate_signing_key(), generate_signing_key()
    keyring = Keyring().rotate(old.public_key, 100).rotate(new.public_key, 200).revoke(old.key_id, 150)
    exported = keyring_export(keyring, "example.org/log")["keys"]
    assert [(k["key_id"], k["valid_from_micros"], k["valid_until_micros"], k["compromised_since_micros"])
            for k in exported] == [(old.key_id, 100, 200, 150), (new.key_id, 200, None, None)]
    assert exported[1]["verifier_key"] == c2sp_verifier_key("example.org/log", new.public_key.public_bytes_raw())


def test_the_schedule_switches_keys_at_the_rotation_instant_and_reloads_the_keyring(tmp_path: Path) -> None:
    old, new = generate_signing_key(), generate_signing_key()
    path = tmp_path / "keyring.json"
    save_keyring(Keyring().rotate(old.public_key, 100), path)
    held = {old.key_id: old}
    schedule = KeyringSchedule(lambda: dict(held), str(path), "test store")
    assert schedule.signer_at(5_000) is old
    held[new.key_id] = new
    save_keyring(load_keyring(path).rotate(new.public_key, 10_000), path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1_000))  # a new mtime even on a coarse clock
    time.sleep(1.05)  # the store is asked again at most once a second
    assert schedule.signer_at(9_999) is old
    assert schedule.signer_at(10_000) is new


def test_the_schedule_refuses_a_compromised_key_an_unknown_key_and_no_key(tmp_path: Path) -> None:
    key, stranger = generate_signing_key(), generate_signing_key()
    path = tmp_path / "keyring.json"
    save_keyring(Keyring().rotate(key.public_key, 100).revoke(key.key_id, 500), path)
    schedule = KeyringSchedule(lambda: {key.key_id: key}, str(path), "test store")
    assert schedule.signer_at(499) is key
    with pytest.raises(NoSigningKeyError, match="revoked as compromised from 500: refusing to sign"):
        schedule.signer_at(500)
    with pytest.raises(NoSigningKeyError, match="has no key valid at 50"):
        schedule.signer_at(50)
    save_keyring(Keyring().rotate(stranger.public_key, 100), path)
    with pytest.raises(NoSigningKeyError, match=f"says key {stranger.key_id} signs at 600, but test store does not"):
        schedule.signer_at(600)


def test_a_key_directory_store_creates_keys_named_by_id_and_the_sealer_checks_them(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    store = SigningKeyStore({"AUDITSEAL_SIGNING_KEY": str(directory)})
    first = store.generate()
    assert (directory / f"{first.key_id}.pem").exists()
    assert set(store.signers()) == {first.key_id}
    keyring = tmp_path / "keyring.json"
    save_keyring(Keyring().rotate(generate_signing_key().public_key, 100), keyring)
    env = {"AUDITSEAL_SIGNING_KEY": str(directory), "AUDITSEAL_KEYRING": str(keyring)}
    with pytest.raises(ConfigError, match="does not hold it"):
        sealer_key_schedule(env=env)
    save_keyring(Keyring().rotate(first.public_key, 100), keyring)
    assert sealer_key_schedule(env=env).signer_at(time.time_ns() // 1000).key_id == first.key_id


def test_a_key_file_store_and_a_token_together_are_refused(tmp_path: Path) -> None:
    key = generate_signing_key()
    save_signing_key(key, tmp_path / "key.pem")
    with pytest.raises(ConfigError, match="set one"):
        SigningKeyStore({"AUDITSEAL_SIGNING_KEY": str(tmp_path / "key.pem"),
                         "AUDITSEAL_PKCS11_MODULE": "/x.so", "AUDITSEAL_PKCS11_TOKEN": "t",
                         "AUDITSEAL_PKCS11_PIN": "1"})
    with pytest.raises(ConfigError, match="no signing key"):
        SigningKeyStore({})


def test_times_parse_from_iso_8601_now_or_microseconds() -> None:
    assert parse_time("2026-12-01T19:00:00Z") == 1_796_151_600_000_000
    assert parse_time("2026-12-01T20:00:00+01:00") == 1_796_151_600_000_000
    assert parse_time("1796151600000000") == 1_796_151_600_000_000
    assert abs(parse_time("now") - time.time_ns() // 1000) < 5_000_000
    with pytest.raises(ConfigError, match="no time zone"):
        parse_time("2026-12-01T19:00:00")
    with pytest.raises(ConfigError, match="expected a time like"):
        parse_time("tomorrow")


def test_the_token_data_key_derivation_is_nist_sp800_108_counter_mode_over_aes_cmac() -> None:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms
    from cryptography.hazmat.primitives.kdf.kbkdf import CounterLocation, KBKDFCMAC, Mode

    from pipeline.archive.encryption import kbkdf_cmac_data_key

    master = bytes(range(32))

    def aes_cmac(message: bytes) -> bytes:
        mac = cmac.CMAC(algorithms.AES(master))
        mac.update(message)
        return mac.finalize()

    plaintext = b"object container bytes"
    context = b"audit.sealed/000/x.avro.enc" + b"\x00" + __import__("hashlib").sha256(plaintext).digest()
    reference = KBKDFCMAC(algorithm=algorithms.AES, mode=Mode.CounterMode, length=44, rlen=4, llen=4,
                          location=CounterLocation.BeforeFixed, label=b"auditseal/sink/data-key/kbkdf-cmac/v1",
                          context=context, fixed=None).derive(master)
    data_key, nonce = kbkdf_cmac_data_key(aes_cmac, "audit.sealed/000/x.avro.enc", plaintext)
    assert data_key + nonce == reference and len(data_key) == 32 and len(nonce) == 12
    assert kbkdf_cmac_data_key(aes_cmac, "audit.sealed/000/y.avro.enc", plaintext)[0] != data_key


def test_the_token_configuration_names_what_is_missing(tmp_path: Path) -> None:
    from pipeline.keys.errors import Pkcs11ModuleError, TokenNotFoundError, TokenPinError
    from pipeline.keys.pkcs11 import Pkcs11Config, open_token

    assert Pkcs11Config.from_env({}) is None, "no module: key files"
    module = {"AUDITSEAL_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so"}
    with pytest.raises(TokenNotFoundError, match="AUDITSEAL_PKCS11_TOKEN"):
        Pkcs11Config.from_env(module)
    token = {**module, "AUDITSEAL_PKCS11_TOKEN": "audit"}
    with pytest.raises(TokenPinError, match="no PIN for token 'audit'"):
        Pkcs11Config.from_env(token)
    with pytest.raises(TokenPinError, match="not both"):
        Pkcs11Config.from_env({**token, "AUDITSEAL_PKCS11_PIN": "1", "AUDITSEAL_PKCS11_PIN_FILE": "/x"})
    with pytest.raises(TokenPinError, match="cannot read the PIN file"):
        Pkcs11Config.from_env({**token, "AUDITSEAL_PKCS11_PIN_FILE": str(tmp_path / "missing")})
    (tmp_path / "pin").write_text("1234\n")
    config = Pkcs11Config.from_env({**token, "AUDITSEAL_PKCS11_PIN_FILE": str(tmp_path / "pin")})
    assert config.pin == "1234" and "1234" not in repr(config)
    with pytest.raises(Pkcs11ModuleError, match="no such file"):
        open_token(Pkcs11Config(str(tmp_path / "libnothing.so"), "audit", "1234"))
