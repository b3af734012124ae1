"""The report's continuity of logging comes from verify's own tree-head checks: the intervals behind
``logging_gap`` and ``stale_head`` (pipeline.verifier.continuity), listed when they meet the period, over
archives built in-process with the sealer's ChainSealer and the sink's build_object."""

from __future__ import annotations

from pathlib import Path

from pipeline.archive.retention import load_profiles
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.chain_state import ViolationKind
from pipeline.producer.synthetic import synthetic_events
from pipeline.report.evidence import FAIL, NOT_RUN, PASS, EvidenceInputs, Period, gather
from pipeline.report.frameworks import framework
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.verifier.archive import DirectorySource
from pipeline.verifier.continuity import LoggingRecord, SilentInterval
from pipeline.wire.codec import default_codec
from tests.unit.test_tree_heads import CHAIN, KEY, SECOND, START, _archive, _keyring, _seal, _verify

SCOPE = "audit.sealed:"


def _continuity(root: Path, start_s: int, end_s: int, now_s: int, tolerance_s: float = 300) -> dict:
    inputs = EvidenceInputs(DirectorySource(root), _keyring(), Period(START + start_s * SECOND, START + end_s * SECOND),
                            framework("soc2"), load_profiles(None), env={}, head_tolerance_s=tolerance_s,
                            now_micros=START + now_s * SECOND)
    checks = {check.id: check for check in gather(inputs).checks}
    return checks["continuity"].as_dict()


def test_the_verifier_notes_the_interval_of_a_logging_gap_and_of_a_stale_head(tmp_path):
    values, _ = _seal([(5, 0), (4, 30), (3, 1000)])
    _archive(tmp_path, values)
    report = _verify(tmp_path, as_of_s=2000)
    assert set(report.violation_counts) == {ViolationKind.LOGGING_GAP, ViolationKind.STALE_HEAD}
    gap, stale = report.logging.intervals
    assert (gap.kind, gap.chain_id, gap.start_micros, gap.end_micros) == (
        ViolationKind.LOGGING_GAP, SCOPE + CHAIN, START + 30 * SECOND, START + 1000 * SECOND)
    assert (stale.kind, stale.start_micros, stale.end_micros) == (
        ViolationKind.STALE_HEAD, START + 1000 * SECOND, START + 2000 * SECOND)
    assert report.logging.first_head == {SCOPE + CHAIN: START}
    assert report.logging.newest_head == {SCOPE + CHAIN: START + 1000 * SECOND}


def test_an_interval_meets_a_period_only_where_they_overlap():
    interval = SilentInterval("logging_gap", "c", 100, 200, "x")
    assert interval.overlaps(150, 160) and interval.overlaps(0, 101) and interval.overlaps(199, 300)
    assert not interval.overlaps(0, 100) and not interval.overlaps(200, 300)
    record = LoggingRecord()
    record.head("c", 5)
    record.head("c", 3)
    record.head("c", 9)
    assert (record.first_head, record.newest_head) == ({"c": 3}, {"c": 9})


def test_a_period_with_a_logging_gap_fails_continuity_with_the_gap_listed(tmp_path):
    values, _ = _seal([(5, 0), (4, 30), (3, 1000)], heartbeats=(1010, 1020))
    _archive(tmp_path, values)
    check = _continuity(tmp_path, 0, 1030, now_s=1030)
    assert check["status"] == FAIL
    (silent,) = check["evidence"]["silent_intervals"]
    assert (silent["kind"], silent["start"], silent["end"], silent["seconds"]) == (
        "logging_gap", "2026-01-01T00:00:30Z", "2026-01-01T00:16:40Z", 970.0)
    assert "2026-01-01T00:00:30Z to 2026-01-01T00:16:40Z (logging_gap, 970 s)" in check["summary"]


def test_a_period_after_the_gap_is_continuous(tmp_path):
    values, _ = _seal([(5, 0), (4, 30), (3, 1000)], heartbeats=(1010, 1020))
    _archive(tmp_path, values)
    check = _continuity(tmp_path, 1001, 1025, now_s=1030)
    assert check["status"] == PASS, check["summary"]
    assert check["evidence"]["silent_intervals"] == []


def test_a_period_whose_end_the_heads_do_not_reach_is_a_stale_head(tmp_path):
    values, _ = _seal([(5, 0), (4, 30)], heartbeats=(60, 90))
    _archive(tmp_path, values)
    check = _continuity(tmp_path, 0, 3600, now_s=7200)  # as of the period's end: an hour without a head
    assert check["status"] == FAIL
    assert [(i["kind"], i["start"], i["end"]) for i in check["evidence"]["silent_intervals"]] == [
        ("stale_head", "2026-01-01T00:01:30Z", "2026-01-01T01:00:00Z")]
    assert _continuity(tmp_path, 0, 3600, now_s=7200, tolerance_s=4000)["status"] == PASS


def test_chains_without_heads_cannot_show_continuity(tmp_path):
    sealer = ChainSealer(CHAIN, 0, KEY, ChainHead.genesis(CHAIN))  # a v1 sealer: no origin, no tree heads
    codec = default_codec()
    values = [sealer.seal(codec.encode(event), n, START).value for n, event in enumerate(synthetic_events(5, seed=1))]
    _archive(tmp_path, [*values, sealer.checkpoint(START).value])
    check = _continuity(tmp_path, 0, 60, now_s=60)
    assert check["status"] == NOT_RUN and check["evidence"]["chains_without_heads"] == [SCOPE + CHAIN]
