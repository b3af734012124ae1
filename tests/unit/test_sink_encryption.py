"""Envelope encryption: AES-256-GCM under a derived data key, wrapped by the master key (RFC 3394)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from pipeline.archive.encryption import (
    DecryptionError,
    MasterKey,
    decrypt_object,
    encrypt_object,
    generate_master_key,
    load_master_key,
)
from pipeline.errors import ConfigError

MASTER = MasterKey("mk-a", bytes(range(32)))
KEY = "audit.sealed/000/00000000000000000000-00000000000000000009.avro.enc"


def test_round_trip_with_the_standard_primitives():
    ciphertext, encryption = encrypt_object(b"ocf bytes", KEY, MASTER)
    data_key = aes_key_unwrap(MASTER.key, encryption.wrapped_key)  # any RFC 3394 implementation
    assert AESGCM(data_key).decrypt(encryption.nonce, ciphertext, KEY.encode()) == b"ocf bytes"
    assert decrypt_object(ciphertext, KEY, encryption, {"mk-a": MASTER}) == b"ocf bytes"
    assert (len(encryption.wrapped_key), len(encryption.nonce), len(ciphertext)) == (40, 12, len(b"ocf bytes") + 16)


def test_a_retry_is_byte_identical_and_other_content_gets_another_key_and_nonce():
    first = encrypt_object(b"batch", KEY, MASTER)
    assert encrypt_object(b"batch", KEY, MASTER) == first
    other = encrypt_object(b"batcH", KEY, MASTER)  # e.g. a recreated topic reusing offsets
    assert other[1].nonce != first[1].nonce and other[1].wrapped_key != first[1].wrapped_key
    elsewhere = encrypt_object(b"batch", KEY.replace("000/", "001/"), MASTER)
    assert elsewhere[1].nonce != first[1].nonce


def test_tampering_wrong_key_and_moved_objects_fail_to_decrypt():
    ciphertext, encryption = encrypt_object(b"batch", KEY, MASTER)
    flipped = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    with pytest.raises(DecryptionError, match="authentication failed"):
        decrypt_object(flipped, KEY, encryption, MASTER)
    with pytest.raises(DecryptionError, match="authentication failed"):
        decrypt_object(ciphertext, KEY.replace("000/", "001/"), encryption, MASTER)
    with pytest.raises(DecryptionError, match="does not unwrap with master key 'mk-a'"):
        decrypt_object(ciphertext, KEY, encryption, MasterKey("mk-a", bytes(32)))
    with pytest.raises(DecryptionError, match="master key 'mk-a', which was not given"):
        decrypt_object(ciphertext, KEY, encryption, {"mk-b": MASTER})
    with pytest.raises(DecryptionError, match="unsupported"):
        decrypt_object(ciphertext, KEY, dataclasses.replace(encryption, algorithm="AES-128-CBC"), MASTER)


def test_master_key_files(tmp_path):
    path = tmp_path / "master.json"
    created = generate_master_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_master_key(path) == created and created.key_id.startswith("mk-") and "key=" not in repr(created)
    with pytest.raises(ConfigError, match="never overwritten"):
        generate_master_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by its owner only"):
        load_master_key(path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "key_id": "k", "key": "c2hvcnQ="}))
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="32 bytes"):
        load_master_key(bad)
    with pytest.raises(ConfigError, match="cannot read master key"):
        load_master_key(tmp_path / "missing.json")
