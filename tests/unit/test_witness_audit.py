"""verify --policy offline: heads no quorum cosigned, histories a cosigned head contradicts, cosigned heads the
archive lacks, bad cosignature records, and heads of a revoked key that no witness saw before its compromise."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.cli.main import main
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.cosignature import Cosigner, add_signatures
from pipeline.integrity.history_tree import HistoryTree, extended_by_chunks
from pipeline.integrity.keyring import Keyring, save_keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.note import NoteSignature, parse_note
from pipeline.integrity.policy import PolicyWitness, format_policy, parse_policy
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.verifier.archive import ArchiveVerifier, DirectorySource
from pipeline.verifier.witnessing import WitnessAudit, witnessed_head
from pipeline.wire.sealed import COSIGNATURE_KIND, HEAD_KIND, sealed_codecs
from tests.unit.test_tree_heads import CHAIN, KEY, ORIGIN, SECOND, START, _archive, _keyring, _seal

WITNESS = Cosigner("witness.test.auditseal.localhost", Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
POLICY_TEXT = format_policy([log_verifier(KEY.public_key, ORIGIN)],
                            [PolicyWitness("w1", WITNESS.verifier, "http://127.0.0.1:1")], "w1")
POLICY = parse_policy(POLICY_TEXT)
AS_OF = START + 100 * SECOND


def _cosign(head_value: bytes, at_s: int) -> bytes:
    """The cosignature record of a head record: what the sealer writes when the witness answered."""
    codecs = sealed_codecs()
    record = codecs.head.decode(head_value)
    note = parse_note(record["note"])
    cosigned = add_signatures(note, [WITNESS.cosign(note.text, (START // SECOND) + at_s)])
    return codecs.cosignature.encode({"chain_id": record["chain_id"], "tree_size": record["tree_size"],
                                      "root_hash": record["root_hash"], "received_at_micros": START + at_s * SECOND,
                                      "note": cosigned.to_bytes()})


def _heads(values: list[bytes]) -> list[bytes]:
    return [v for v in values if sealed_codecs().kind_of(v) == HEAD_KIND]


def _verify(tmp_path: Path, values: list[bytes], keyring: Keyring | None = None, external=()):
    root = tmp_path / "archive"
    _archive(root, values)
    keyring = keyring or _keyring()

    def audit(as_of: int, tolerance: int) -> WitnessAudit:
        return WitnessAudit(POLICY, keyring, as_of, 10 * SECOND, list(external))

    report = ArchiveVerifier(keyring, as_of_micros=AS_OF, head_tolerance_s=300,
                             witness_audit=audit).verify(DirectorySource(root))
    return report


def test_an_archive_whose_heads_are_all_cosigned_is_intact(tmp_path):
    values, _ = _seal([(5, 1), (5, 2), (5, 3)])
    values.append(_cosign(_heads(values)[-1], 4))  # the newest cosigned head covers every smaller one
    report = _verify(tmp_path, values)
    assert report.intact, report.violations


def test_heads_no_quorum_cosigned_are_unwitnessed(tmp_path):
    values, _ = _seal([(5, 1), (5, 2), (5, 3)])
    values.append(_cosign(_heads(values)[0], 4))  # only the first head was cosigned
    report = _verify(tmp_path, values)
    assert report.violation_counts == {"unwitnessed_head": 1}
    violation = report.violations[0]
    assert (violation.chain_id, violation.seq) == (CHAIN, 9) and "2 tree head(s) from size 10" in violation.detail
    assert violation.location.endswith("offset 12")


def test_a_cosignature_record_of_another_history_is_a_fork(tmp_path):
    honest, _ = _seal([(5, 1), (5, 2)])
    rewritten, _ = _seal([(5, 1), (5, 9)])  # the second batch's events differ: same sizes, other roots
    rewritten.append(_cosign(_heads(honest)[-1], 3))  # the honest chain's cosigned head, copied in
    report = _verify(tmp_path, rewritten)
    assert set(report.violation_counts) == {"witness_fork", "unwitnessed_head"}
    fork = next(v for v in report.violations if v.kind == "witness_fork")
    assert fork.seq == 9 and "another history" in fork.detail


def test_a_witnessed_head_held_elsewhere_catches_a_rewrite_and_a_truncation(tmp_path):
    honest, _ = _seal([(5, 1), (5, 2), (5, 3)])
    head = parse_note(sealed_codecs().cosignature.decode(_cosign(_heads(honest)[1], 4))["note"])
    kept = witnessed_head(head, POLICY, "kept-head.txt")
    rewritten, _ = _seal([(5, 1), (5, 8), (5, 9)])
    report = _verify(tmp_path / "rewritten", rewritten, external=[kept])
    assert "witness_fork" in report.violation_counts
    truncated, _ = _seal([(5, 1)])
    truncated.append(_cosign(_heads(truncated)[0], 2))
    report = _verify(tmp_path / "truncated", truncated, external=[kept])
    assert report.violation_counts == {"tail_truncated": 1}
    assert report.violations[0].location == "kept-head.txt" and "reaches size 5 only" in report.violations[0].detail
    assert _verify(tmp_path / "honest", [*honest, _cosign(_heads(honest)[-1], 5)], external=[kept]).intact
    other = witnessed_head(head, POLICY, "kept-head.txt")
    other_chain, _ = _seal([(5, 1)], sealer=ChainSealer("audit.raw/1", 1, KEY, ChainHead.genesis("audit.raw/1"),
                                                         origin="auditseal/test/audit.raw/1"))
    report = _verify(tmp_path / "gone", other_chain, external=[other])  # chain 0's objects all removed
    assert report.violation_counts.get("tail_truncated") == 1 and report.violations[0].chain_id == CHAIN


def test_a_forged_cosignature_is_reported(tmp_path):
    values, _ = _seal([(5, 1)])
    record = sealed_codecs().cosignature.decode(_cosign(_heads(values)[0], 2))
    note = parse_note(record["note"])
    line = note.signatures[-1]
    forged = NoteSignature(line.name, line.key_hash, line.signature[:8] + bytes(64))
    record["note"] = type(note)(note.text, (note.signatures[0], forged)).to_bytes()
    values.append(sealed_codecs().cosignature.encode(record))
    report = _verify(tmp_path, values)
    assert "bad_cosignature" in report.violation_counts


def test_a_revoked_key_s_heads_need_a_cosignature_from_before_the_compromise(tmp_path):
    values, _ = _seal([(5, 1), (5, 2), (5, 3)])
    compromised = START + 50 * SECOND
    keyring = _keyring().revoke(KEY.key_id, compromised)
    # the heads claim times 1..3 s, before the compromise at 50 s; the witness cosigned at 60 s: too late to tell
    late = [*values, _cosign(_heads(values)[-1], 60)]
    report = _verify(tmp_path / "late", late, keyring)
    assert report.violation_counts == {"compromised_key": 3}
    assert "may have been backdated" in report.violations[0].detail
    early = [*values, _cosign(_heads(values)[-1], 4)]
    assert _verify(tmp_path / "early", early, keyring).intact


def test_a_revoked_key_s_head_claimed_after_the_compromise_is_not_flagged_if_cosigned_before_it(tmp_path):
    # the signer's clock ran ahead: the heads claim 60..62 s, after the compromise at 50 s
    values, _ = _seal([(5, 60), (5, 61), (5, 62)])
    keyring = _keyring().revoke(KEY.key_id, START + 50 * SECOND)
    # the witness cosigned the newest head at 70 s: nothing shows they existed before 50 s, all are flagged
    late = _verify(tmp_path / "late", [*values, _cosign(_heads(values)[-1], 70)], keyring)
    heads = [v for v in late.violations if v.kind == "compromised_key" and v.detail.startswith("tree head")]
    assert len(heads) == 3 and all("after its compromise" in v.detail for v in heads)
    # cosigned at 40 s, before the compromise: the heads existed then, none of them is flagged; the checkpoints
    # are still judged by their own time
    early = _verify(tmp_path / "early", [*values, _cosign(_heads(values)[-1], 40)], keyring)
    assert not [v for v in early.violations if v.detail.startswith("tree head")]
    assert early.violation_counts == {"compromised_key": 3}  # the three checkpoints
    vouched = [n for n in early.notices if n.kind == "compromised_key_vouched"]
    assert len(vouched) == 3 and "existed before the compromise" in vouched[0].detail
    # a head the cosigned one does not cover (larger) stays flagged
    partly = _verify(tmp_path / "partly", [*values, _cosign(_heads(values)[1], 40)], keyring)
    flagged = [v for v in partly.violations if v.detail.startswith("tree head")]
    assert [v.seq for v in flagged] == [14]


def test_verify_policy_on_the_command_line(tmp_path, capsys):
    values, _ = _seal([(5, 1)])
    _archive(tmp_path / "archive", values)
    keyring = tmp_path / "keyring.json"
    save_keyring(_keyring(), keyring)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("this is not a policy\n")
    code = main(["verify", "--dir", str(tmp_path / "archive"), "--keyring", str(keyring), "--policy", str(garbage)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "line 1: unknown keyword 'this'" in err[0], err
    code = main(["verify", "--dir", str(tmp_path / "archive"), "--keyring", str(keyring),
                 "--witnessed-head", str(garbage)])
    assert code == 2 and "--witnessed-head needs --policy" in capsys.readouterr().err


@pytest.mark.parametrize("kind", [COSIGNATURE_KIND])
def test_cosignature_records_are_ignored_without_a_policy(tmp_path, kind):
    values, _ = _seal([(5, 1)])
    values.append(_cosign(_heads(values)[0], 2))
    root = tmp_path / "archive"
    _archive(root, values)
    report = ArchiveVerifier(_keyring(), as_of_micros=START + 2 * SECOND).verify(DirectorySource(root))
    assert report.intact and sealed_codecs().kind_of(values[-1]) == kind


def test_the_sealer_state_after_a_head_names_the_leaves_it_added():
    sealer = ChainSealer(CHAIN, 0, KEY, ChainHead.genesis(CHAIN), origin=ORIGIN)
    _seal([(3, 1)], sealer=sealer)
    # three entries from size 0: the aligned subtrees [0, 2) and [2, 3), the same the tree was extended by
    assert [width for width, _ in sealer.head_chunks] == [2, 1]
    assert extended_by_chunks(HistoryTree(), sealer.head_chunks) == sealer.history
    sealer.tree_head(START + 5 * SECOND, heartbeat=True)
    assert sealer.head_chunks == []


def test_a_head_of_a_rotated_out_key_counts_as_witnessed_with_the_keyring(tmp_path):
    # the policy names only the new key; the keyring still holds the old one with its window
    from pipeline.integrity.keyring import SigningKey

    values, _ = _seal([(5, 1)])
    values.append(_cosign(_heads(values)[0], 2))
    new = SigningKey.from_seed(bytes(range(5, 37)))
    rotated = parse_policy(format_policy([log_verifier(new.public_key, ORIGIN)],
                                         [PolicyWitness("w1", WITNESS.verifier, None)], "w1"))
    root = tmp_path / "archive"
    _archive(root, values)
    keyring = _keyring().rotate(new.public_key, START + 50 * SECOND)
    report = ArchiveVerifier(keyring, as_of_micros=AS_OF, witness_audit=lambda a, t: WitnessAudit(
        rotated, keyring, a, 10 * SECOND)).verify(DirectorySource(root))
    assert report.intact, report.violations
    report = ArchiveVerifier(keyring, as_of_micros=AS_OF, witness_audit=lambda a, t: WitnessAudit(
        rotated, Keyring().rotate(new.public_key, START - 1), a, 10 * SECOND)).verify(DirectorySource(root))
    assert "bad_cosignature" in report.violation_counts


def test_the_sealer_refuses_a_witness_policy_it_cannot_use(tmp_path, capsys):
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("log not-a-key\n")
    assert main(["seal", "--witness-policy", str(garbage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 1" in err[0], err
    policy = tmp_path / "policy.txt"
    policy.write_text(POLICY_TEXT)
    assert main(["seal", "--witness-policy", str(policy), "--heartbeat-interval", "0"]) == 2
    assert "needs tree heads" in capsys.readouterr().err
    no_url = tmp_path / "no-url.txt"
    no_url.write_text(format_policy([log_verifier(KEY.public_key, ORIGIN)], [PolicyWitness("w1", WITNESS.verifier, None)],
                                    "w1"))
    from pipeline.config import KafkaSettings
    from pipeline.errors import ConfigError
    from pipeline.sealer.app import SealerConfig, sealer_witnessing

    with pytest.raises(ConfigError, match="names no witness with a URL"):
        sealer_witnessing(KafkaSettings("localhost:1", "u", "p", None), SealerConfig(witness_policy=str(no_url)))
