"""The audit of the reconciler's archived attestations (pipeline.verifier.attestations): which archived sealed
offsets no attestation covers, and how each attestation is judged, with events the reconciler's own code signs."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest

from pipeline.integrity.keyring import Keyring, generate_signing_key
from pipeline.reconciler.daemon import round_events
from pipeline.reconciler.matching import Mismatch
from pipeline.reconciler.reconciler import Round
from pipeline.verifier.attestations import AttestationAudit, _covered, uncovered


def test_contiguous_rounds_merge_into_one_range():
    # round n+1 starts where round n ended: [0, 9] and [10, 30] cover 0..30 without a hole
    assert _covered([(10, 30), (0, 9)]) == [(0, 30)]
    assert _covered([(0, 9), (5, 12), (20, 21)]) == [(0, 12), (20, 21)]
    assert _covered([]) == []


@pytest.mark.parametrize(("first", "last", "covered", "holes"), [
    (0, 30, [(0, 30)], []),
    (0, 30, [], [(0, 30)]),
    (0, 30, [(0, 9), (20, 40)], [(10, 19)]),
    (5, 8, [(0, 4), (9, 12)], [(5, 8)]),
    (0, 30, [(5, 9)], [(0, 4), (10, 30)]),
    (10, 20, [(0, 5), (12, 13), (25, 30)], [(10, 11), (14, 20)]),
    (3, 3, [(3, 3)], []),
])
def test_uncovered_names_every_hole(first, last, covered, holes):
    assert uncovered(first, last, covered) == holes


# --- the audit of attestations (AttestationAudit.judge/observe), with events the reconciler's own code signs ---

KEY = generate_signing_key()
NOW = 1_800_000_000_000_000


def _audit(keyring: Keyring | None = None, grace_s: float = 0.0) -> AttestationAudit:
    return AttestationAudit(keyring or Keyring().rotate(KEY.public_key, NOW - 3_600_000_000), NOW + 10**9, grace_s)


def _round(first: int, last: int, mismatches: int = 0) -> Round:
    found = [Mismatch("audit.raw/0", "substituted", 3 + n, first + n, "bytes differ") for n in range(mismatches)]
    return Round("audit.raw/0", "audit.sealed", 0, first, last, last - first, 0, 9, found, sealed_from=first)


def _events(round_: Round, signer=KEY) -> list[dict]:
    events = round_events(round_, signer, "User:reconciler")
    for event in events:  # as the codec gives them back: occurred_at an aware datetime, within the key's window
        event["occurred_at"] = datetime.datetime.fromtimestamp(NOW / 1e6, datetime.UTC)
    return events


def _judge(audit: AttestationAudit, events: list[dict]) -> None:
    for seq, event in enumerate(events):
        audit.judge(event, "audit.reconciliation/0", seq, f"obj offset {seq}")


def _archived(audit: AttestationAudit, first: int, last: int, newest: int = NOW) -> None:
    key = SimpleNamespace(prefix="", topic="audit.sealed", partition=0, first_offset=first, last_offset=last)
    audit.observe(SimpleNamespace(key=key, name=f"audit.sealed/000/{first}-{last}.avro"),
                  SimpleNamespace(last_timestamp_micros=newest), b"")


def _kinds(audit: AttestationAudit) -> list[str]:
    audit.finish()
    return sorted(v.kind for v in audit.violations)


def test_attested_ranges_and_a_mismatch_are_judged():
    audit = _audit()
    _judge(audit, _events(_round(0, 9)) + _events(_round(10, 20, mismatches=1)))
    _archived(audit, 0, 12)
    _archived(audit, 13, 20)
    assert _kinds(audit) == ["reconcile_mismatch"] and audit.attestations == 3
    (mismatch,) = audit.violations
    assert mismatch.chain_id == "audit.raw/0" and mismatch.location == "audit.sealed[0] sealed offset 10 (source offset 3)"


def test_a_missing_mismatch_record_and_an_unattested_range_are_reported():
    audit = _audit()
    _judge(audit, _events(_round(0, 9, mismatches=2))[:2])  # the attestation and one of its two mismatch records
    _archived(audit, 0, 15)
    assert _kinds(audit) == ["missing_attestation", "reconcile_mismatch", "unattested_range"]
    assert "sealed offsets 10..15 are covered by no reconciler attestation" in audit.violations[-1].detail
    # within the grace period the same hole is the reconciler's lag: a notice
    lagging = _audit(grace_s=3600 * 24)
    _judge(lagging, _events(_round(0, 9)))
    _archived(lagging, 0, 15, newest=NOW + 10**9)
    assert _kinds(lagging) == [] and [n.kind for n in lagging.notices] == ["not_yet_attested"]


def test_forged_altered_foreign_and_out_of_window_attestations_are_reported():
    audit = _audit()
    (genuine,) = _events(_round(0, 9))
    (foreign,) = _events(_round(0, 99), signer=generate_signing_key())
    altered = {**genuine, "attributes": {**genuine["attributes"], "sealed_last_offset": "99"}}
    other = {**genuine, "action": "archive.verify"}
    _judge(audit, [foreign, altered, other])
    details = [v.detail for v in audit.violations]
    assert _kinds(audit) == ["forged_attestation"] * 3 and audit.attestations == 0
    assert "not in the reconciler's keyring" in details[0] and "forged or altered" in details[1]
    assert "only the reconciler's attestations belong on its chain" in details[2]
    late = _audit(Keyring().rotate(KEY.public_key, NOW + 1))  # the key's window opens after the attestation
    _judge(late, [genuine])
    assert _kinds(late) == ["forged_attestation"] and "outside key" in late.violations[0].detail
