"""Ed25519 signing keys, the public keyring, rotation and the two file formats."""

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipeline.errors import ConfigError
from pipeline.integrity.errors import KeyFileError, KeyringError, MalformedInputError
from pipeline.integrity.keyring import (
    Keyring,
    KeyringEntry,
    SigningKey,
    generate_signing_key,
    key_id_for,
    load_keyring,
    load_signing_key,
    save_keyring,
    save_signing_key,
)

# RFC 8032 section 7.1, TEST 1: the empty message.
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# hex(SHA-256(RFC8032_PUBLIC))[:16], computed once and frozen.
RFC8032_KEY_ID = "21fe31dfa154a261"


def rfc_key() -> SigningKey:
    return SigningKey.from_seed(RFC8032_SECRET)


def test_signing_matches_rfc8032_test_1() -> None:
    key = rfc_key()
    assert key.public_key.public_bytes_raw() == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIGNATURE
    Ed25519PublicKey.from_public_bytes(RFC8032_PUBLIC).verify(key.sign(b""), b"")


def test_key_id_is_the_first_16_hex_of_sha256_of_the_raw_public_key() -> None:
    assert rfc_key().key_id == RFC8032_KEY_ID
    assert key_id_for(rfc_key().public_key) == hashlib.sha256(RFC8032_PUBLIC).hexdigest()[:16]


def test_generated_keys_are_distinct_ed25519_keys() -> None:
    first, second = generate_signing_key(), generate_signing_key()
    assert first.key_id != second.key_id
    assert len(first.key_id) == 16 and int(first.key_id, 16) >= 0
    first.public_key.verify(first.sign(b"message"), b"message")


def test_a_signing_key_does_not_print_its_secret() -> None:
    assert RFC8032_SECRET.hex() not in repr(rfc_key())
    assert "private_key" not in repr(rfc_key())


def test_seed_must_be_32_bytes() -> None:
    with pytest.raises(MalformedInputError, match="seed must be 32 bytes, found 31 bytes"):
        SigningKey.from_seed(RFC8032_SECRET[:31])


def entry(key: SigningKey, start: int, until: int | None = None) -> KeyringEntry:
    return KeyringEntry(key.key_id, key.public_key, start, until)


def test_validity_window_is_half_open() -> None:
    window = entry(rfc_key(), 100, 200)
    assert [window.valid_at(t) for t in (99, 100, 199, 200)] == [False, True, True, False]
    assert entry(rfc_key(), 100).valid_at(10**18)


def test_rotation_closes_the_active_key_at_the_rotation_time() -> None:
    old, new = rfc_key(), generate_signing_key()
    keyring = Keyring().rotate(old.public_key, 1_000)
    assert keyring.active == entry(old, 1_000)
    rotated = keyring.rotate(new.public_key, 5_000)
    assert rotated.entries == (entry(old, 1_000, 5_000), entry(new, 5_000))
    assert rotated.active == entry(new, 5_000)
    retired = rotated.get(old.key_id)
    assert retired is not None
    assert retired.valid_at(4_999)
    assert not retired.valid_at(5_000)
    assert keyring.entries == (entry(old, 1_000),), "rotate must not change the original"


def test_rotation_must_move_forward_and_to_a_new_key() -> None:
    old, new = rfc_key(), generate_signing_key()
    keyring = Keyring().rotate(old.public_key, 1_000)
    with pytest.raises(KeyringError, match=r"expected a rotation time after 1000, .* found 1000$"):
        keyring.rotate(new.public_key, 1_000)
    with pytest.raises(KeyringError, match=f"key {old.key_id} is already in the keyring"):
        keyring.rotate(old.public_key, 2_000)


def test_a_keyring_rejects_overlaps_duplicates_and_mislabelled_keys() -> None:
    a, b = rfc_key(), generate_signing_key()
    with pytest.raises(KeyringError, match="overlaps"):
        Keyring((entry(a, 0, 200), entry(b, 100)))
    with pytest.raises(KeyringError, match="overlaps"):
        Keyring((entry(a, 0), entry(b, 100)))
    with pytest.raises(KeyringError, match="appears more than once"):
        Keyring((entry(a, 0, 100), entry(a, 100)))
    with pytest.raises(
        KeyringError, match=f"does not match its public key, whose key id is '{a.key_id}'"
    ):
        KeyringEntry(b.key_id, a.public_key, 0)
    with pytest.raises(
        KeyringError, match="expected valid_until_micros after valid_from_micros 5, found 5"
    ):
        entry(a, 5, 5)
    assert Keyring((entry(b, 100), entry(a, 0, 100))).entries == (entry(a, 0, 100), entry(b, 100))


def test_keyring_errors_are_config_errors() -> None:
    # A bad keyring at the command line is a configuration problem: exit code 2, not 1.
    assert issubclass(KeyringError, ConfigError)
    assert issubclass(KeyFileError, ConfigError)


def test_signing_key_file_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sealer.pem"
    old_umask = os.umask(0)
    try:
        save_signing_key(rfc_key(), path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = load_signing_key(path)
    assert loaded.key_id == RFC8032_KEY_ID
    assert loaded.sign(b"") == RFC8032_SIGNATURE


def test_saving_never_overwrites_a_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "sealer.pem"
    save_signing_key(rfc_key(), path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite a signing key") as caught:
        save_signing_key(generate_signing_key(), path)
    assert caught.value.path == str(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_loading_refuses_a_key_group_or_others_can_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "sealer.pem"
    save_signing_key(rfc_key(), path)
    path.chmod(mode)
    with pytest.raises(
        KeyFileError, match=rf"expected mode 0600 .* found {mode:04o}; run chmod 600"
    ) as caught:
        load_signing_key(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_an_owner_read_only_key_loads(tmp_path: Path) -> None:
    path = tmp_path / "sealer.pem"
    save_signing_key(rfc_key(), path)
    path.chmod(0o400)
    assert load_signing_key(path).key_id == RFC8032_KEY_ID


def write_private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_bad_signing_key_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=f"^{tmp_path}/missing.pem: no such signing key file$"):
        load_signing_key(tmp_path / "missing.pem")
    garbage = write_private(tmp_path / "garbage.pem", b"not a key\n")
    with pytest.raises(KeyFileError, match=r"garbage\.pem: expected a PKCS#8 PEM private key"):
        load_signing_key(garbage)
    encrypted = write_private(
        tmp_path / "encrypted.pem",
        rfc_key().private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        ),
    )
    with pytest.raises(KeyFileError, match=r"encrypted\.pem: the private key is encrypted"):
        load_signing_key(encrypted)
    ecdsa = write_private(
        tmp_path / "ecdsa.pem",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with pytest.raises(KeyFileError, match=r"ecdsa\.pem: expected an Ed25519 private key, found"):
        load_signing_key(ecdsa)
    with pytest.raises(KeyFileError, match="expected a signing key file, found a directory"):
        load_signing_key(tmp_path)


def test_keyring_file_round_trips_in_the_documented_format(tmp_path: Path) -> None:
    old, new = rfc_key(), generate_signing_key()
    keyring = Keyring().rotate(old.public_key, 1_000).rotate(new.public_key, 5_000)
    path = tmp_path / "keyring.json"
    save_keyring(keyring, path)
    assert json.loads(path.read_text()) == {
        "version": 1,
        "keys": [
            {
                "key_id": RFC8032_KEY_ID,
                "public_key": base64.b64encode(RFC8032_PUBLIC).decode(),
                "valid_from_micros": 1_000,
                "valid_until_micros": 5_000,
            },
            {
                "key_id": new.key_id,
                "public_key": base64.b64encode(new.public_key.public_bytes_raw()).decode(),
                "valid_from_micros": 5_000,
                "valid_until_micros": None,
            },
        ],
    }
    assert load_keyring(path) == keyring
    assert sorted(os.listdir(tmp_path)) == ["keyring.json"], "no temporary file may be left behind"


def test_saving_a_keyring_replaces_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    first = Keyring().rotate(rfc_key().public_key, 0)
    save_keyring(first, path)
    second = first.rotate(generate_signing_key().public_key, 10)
    save_keyring(second, path)
    assert load_keyring(path) == second


def keyring_document(**overrides: object) -> dict[str, Any]:
    item = {
        "key_id": RFC8032_KEY_ID,
        "public_key": base64.b64encode(RFC8032_PUBLIC).decode(),
        "valid_from_micros": 0,
        "valid_until_micros": None,
    }
    item.update(overrides)
    return {"version": 1, "keys": [item]}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "expected a JSON keyring, found invalid JSON"),
        ("[]", "expected a JSON object at top level, found list"),
        (json.dumps({"version": 3, "keys": []}), "expected keyring version 1 or 2, found 3"),
        (json.dumps({"version": 1, "keys": {}}), 'expected "keys" to be a list, found dict'),
        (json.dumps({"version": 1, "keys": ["k"]}), r"keys\[0\]: expected an object, found str"),
        (
            json.dumps({"version": 1, "keys": [{"key_id": RFC8032_KEY_ID}]}),
            r"keys\[0\]: missing field\(s\) public_key, valid_from_micros, valid_until_micros",
        ),
        (json.dumps(keyring_document(comment="x")), r"keys\[0\]: unknown field\(s\) comment"),
        (json.dumps(keyring_document(public_key="@@@")), r"keys\[0\].public_key: expected base64"),
        (
            json.dumps(keyring_document(public_key=base64.b64encode(b"short").decode())),
            r"keys\[0\].public_key: expected 32 raw bytes, found 5 bytes",
        ),
        (
            json.dumps(keyring_document(key_id="0000000000000000")),
            r"keys\[0\]: key id '0000000000000000' does not match its public key",
        ),
        (
            json.dumps(keyring_document(valid_from_micros=True)),
            r"keys\[0\].valid_from_micros: expected an integer, found true",
        ),
        (
            json.dumps(keyring_document(valid_until_micros="soon")),
            r'keys\[0\].valid_until_micros: expected an integer, found "soon"',
        ),
        (
            json.dumps(keyring_document(valid_from_micros=-1)),
            r"keys\[0\]: key 21fe31dfa154a261: valid_from_micros: expected microseconds",
        ),
    ],
)
def test_bad_keyring_files_name_the_file_and_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=problem) as caught:
        load_keyring(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_an_inconsistent_keyring_file_is_rejected(tmp_path: Path) -> None:
    other = generate_signing_key()
    document = keyring_document()
    document["keys"].append(
        {
            "key_id": other.key_id,
            "public_key": base64.b64encode(other.public_key.public_bytes_raw()).decode(),
            "valid_from_micros": 10,
            "valid_until_micros": None,
        }
    )
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="overlaps"):
        load_keyring(path)


def test_a_missing_keyring_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"nothere\.json: no such keyring file"):
        load_keyring(tmp_path / "nothere.json")
