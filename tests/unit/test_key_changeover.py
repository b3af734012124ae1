"""A log key change-over, in the pure parts: a tlog-policy listing two keys for one log, the policy file gaining
the new key beside the old one (``keys rotate``), the schedule's announced key, tree heads co-signed by both keys
and opened under either, omniwitness's log list, and a revoked key's head that a witness saw before the compromise.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from pipeline.dev.witness import logs_from_yaml, logs_yaml, set_log_keys
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.errors import NoteVerificationError, PolicyError
from pipeline.integrity.keyring import Keyring, SigningKey, save_keyring
from pipeline.integrity.log_identity import log_signer, log_verifier
from pipeline.integrity.note import NoteVerifier, parse_note, verified_signatures
from pipeline.integrity.policy import parse_policy, with_log_key_added
from pipeline.integrity.tree_head import TreeHead, open_tree_head, sign_tree_head
from pipeline.keys.schedule import KeyringSchedule
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.sealed import sealed_codecs

OLD = SigningKey.from_seed(bytes(range(32)))
NEW = SigningKey.from_seed(bytes(range(32, 64)))
ORIGIN = "auditseal/test/audit.raw/0"
OLD_VKEY = log_verifier(OLD.public_key, ORIGIN).vkey
NEW_VKEY = log_verifier(NEW.public_key, ORIGIN).vkey
WITNESS_VKEY = "witness.example+595ee5d0+BBdFU7RW3d/GkI7KscEB/mqyHiuqBhd5W31DpjSCmT/V"


def test_fixed_vectors_of_the_two_keys() -> None:
    # the note key names and key hashes the policy lines and the witness's log list carry
    assert OLD_VKEY == "auditseal/test/audit.raw/0+cf1582ba+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
    assert NEW_VKEY == "auditseal/test/audit.raw/0+60a15d76+ASmsuuFBvMrwsi4alNNNC8c2HlJtC/4SyJeUvJMilm3X"


def test_a_policy_may_list_two_keys_for_one_log_never_one_key_twice() -> None:
    policy = parse_policy(f"log {OLD_VKEY}\nlog {NEW_VKEY}\nquorum none\n")
    assert [k.vkey for k in policy.keys_of(ORIGIN)] == [OLD_VKEY, NEW_VKEY]
    assert policy.logs[ORIGIN].vkey == OLD_VKEY  # the first, as before
    head = TreeHead(ORIGIN, 3, bytes(32), ("auditseal-time 1",))
    for key in (OLD, NEW):
        checked, cosigners = policy.check(parse_note(sign_tree_head(head, log_signer(key.private_key, ORIGIN))))
        assert checked == head and cosigners == []
    with pytest.raises(PolicyError, match="line 2: duplicate log key"):
        parse_policy(f"log {OLD_VKEY}\nlog {OLD_VKEY}\nquorum none\n")
    stranger = SigningKey.from_seed(bytes(range(64, 96)))
    note = parse_note(sign_tree_head(head, log_signer(stranger.private_key, ORIGIN)))
    with pytest.raises(NoteVerificationError, match=re.escape(f"expected a signature of log key {OLD_VKEY} or {NEW_VKEY}")):
        policy.check(note)


def test_the_policy_gains_the_new_key_beside_the_old_one() -> None:
    other = log_verifier(OLD.public_key, "auditseal/test/audit.raw/1").vkey
    text = (f"# the stack's policy\nlog {OLD_VKEY} http://log.example\nlog {other}\n"
            f"witness w1 {WITNESS_VKEY} http://127.0.0.1:1\nquorum w1\n")
    updated, added = with_log_key_added(text, OLD.public_key.public_bytes_raw(), NEW.public_key.public_bytes_raw())
    assert added == 2
    assert updated == (f"# the stack's policy\nlog {OLD_VKEY} http://log.example\nlog {NEW_VKEY} http://log.example\n"
                       f"log {other}\nlog {log_verifier(NEW.public_key, 'auditseal/test/audit.raw/1').vkey}\n"
                       f"witness w1 {WITNESS_VKEY} http://127.0.0.1:1\nquorum w1\n")
    # a second run adds nothing; a policy without the old key is left as it is
    assert with_log_key_added(updated, OLD.public_key.public_bytes_raw(), NEW.public_key.public_bytes_raw()) == (
        updated, 0)
    with pytest.raises(PolicyError, match="line 1"):
        with_log_key_added("log nonsense\nquorum none\n", OLD.public_key.public_bytes_raw(),
                           NEW.public_key.public_bytes_raw(), "p.txt")


def test_the_schedule_announces_the_next_key_until_its_switch(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    save_keyring(Keyring().rotate(OLD.public_key, 100).rotate(NEW.public_key, 10_000), path)
    schedule = KeyringSchedule(lambda: {OLD.key_id: OLD, NEW.key_id: NEW}, str(path), "test store")
    assert schedule.announced_at(9_999) == [NEW] and schedule.signer_at(9_999) is OLD
    assert schedule.announced_at(10_000) == [] and schedule.signer_at(10_000) is NEW
    # a revoked next key, or one the store does not hold, co-signs nothing
    save_keyring(Keyring().rotate(OLD.public_key, 100).rotate(NEW.public_key, 10_000).revoke(NEW.key_id, 10_000), path)
    assert KeyringSchedule(lambda: {OLD.key_id: OLD, NEW.key_id: NEW}, str(path), "s").announced_at(5_000) == []
    save_keyring(Keyring().rotate(OLD.public_key, 100).rotate(NEW.public_key, 10_000), path)
    assert KeyringSchedule(lambda: {OLD.key_id: OLD}, str(path), "s").announced_at(5_000) == []


def test_heads_before_the_switch_carry_both_signatures_and_open_under_either_key(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    save_keyring(Keyring().rotate(OLD.public_key, 100).rotate(NEW.public_key, 10_000), path)
    schedule = KeyringSchedule(lambda: {OLD.key_id: OLD, NEW.key_id: NEW}, str(path), "test store")
    sealer = ChainSealer("audit.raw/0", 0, schedule, ChainHead.genesis("audit.raw/0"), origin=ORIGIN)
    codecs = sealed_codecs()
    for at, key_id, signers in ((5_000, OLD.key_id, 2), (10_000, NEW.key_id, 1)):
        record = codecs.head.decode(sealer.tree_head(at).value)
        note = parse_note(record["note"])
        assert record["key_id"] == key_id and len(note.signatures) == signers
        # before the switch the head opens under either key (a witness on the old or on the new key), after it
        # under the new key only
        assert open_tree_head(record["note"], log_verifier(NEW.public_key, ORIGIN))[0].size == 0
        old = verified_signatures(note, [log_verifier(OLD.public_key, ORIGIN)])
        assert len(old) == (1 if at < 10_000 else 0)


def test_omniwitness_log_list_and_its_log_key_swapped_in_its_table(tmp_path: Path) -> None:
    assert logs_yaml({ORIGIN: OLD_VKEY}) == f'Logs:\n  - Origin: "{ORIGIN}"\n    PublicKey: "{OLD_VKEY}"\n'
    (tmp_path / "logs.yaml").write_text(logs_yaml({ORIGIN: OLD_VKEY, "other/log": NEW_VKEY}))
    assert logs_from_yaml(tmp_path / "logs.yaml") == {ORIGIN: OLD_VKEY, "other/log": NEW_VKEY}
    # omniwitness's SQLite logs table (persistence/sqlite/sql.go), as it creates it
    with sqlite3.connect(tmp_path / "witness.db") as db:
        db.execute("CREATE TABLE logs (logID BLOB PRIMARY KEY, origin STRING, vkey STRING, contact STRING, "
                   "qpd REAL, disabled BOOLEAN)")
        db.execute("INSERT INTO logs VALUES (x'01', ?, ?, '', 0, FALSE)", (ORIGIN, OLD_VKEY))
    db.close()
    assert set_log_keys(tmp_path, {ORIGIN: NEW_VKEY}) == [ORIGIN]
    assert set_log_keys(tmp_path, {ORIGIN: NEW_VKEY}) == []  # already so
    with sqlite3.connect(tmp_path / "witness.db") as db:
        assert db.execute("SELECT vkey FROM logs WHERE origin = ?", (ORIGIN,)).fetchone() == (NEW_VKEY,)
    db.close()
    assert logs_from_yaml(tmp_path / "logs.yaml") == {ORIGIN: NEW_VKEY, "other/log": NEW_VKEY}
    assert NoteVerifier.from_vkey(NEW_VKEY).public_key_bytes == NEW.public_key.public_bytes_raw()
