"""Exactly-once reading of a rotated authorizer log across restarts: positions, rotation, gaps, replays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.access.auditor import AccessAuditor
from pipeline.access.record import record_access
from pipeline.access.tail import RotatingLog, load_positions
from pipeline.errors import AuditSealError
from pipeline.wire.topics import AUDIT_TOPICS

AUDITOR = "User:access-auditor"


def decision(n: int, principal: str = "User:producer", topic: str = "audit.raw") -> str:
    return (f"[2026-11-26T05:36:{n // 1000 % 60:02d}.{n % 1000:03d}Z] INFO Principal = {principal} is Denied "
            f"operation = READ from host = 127.0.0.1 on resource = Topic:LITERAL:{topic} for request = Fetch with "
            f"resourceRefCount = 1 based on rule DefaultDeny (kafka.authorizer.logger)\n")


def append(path: Path, *lines: str) -> None:
    with open(path, "a") as handle:
        handle.write("".join(lines))


def rotate(path: Path, keep: int = 10) -> None:
    """What log4j2's DefaultRolloverStrategy does: shift name.i to name.i+1, drop the oldest, name -> name.1."""
    oldest = path.with_name(f"{path.name}.{keep}")
    oldest.unlink(missing_ok=True)
    for index in range(keep - 1, 0, -1):
        rotated = path.with_name(f"{path.name}.{index}")
        if rotated.exists():
            rotated.rename(path.with_name(f"{path.name}.{index + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))
    path.touch()


class FakeProducer:
    """Records what was emitted; ``fail_next_flush`` makes the next flush raise like a failed delivery."""

    def __init__(self) -> None:
        self.pending: list[dict] = []
        self.delivered: list[dict] = []
        self.fail_next_flush = False

    def emit(self, event, *, key=None):
        self.pending.append(event)

    def flush(self, timeout=None):
        if self.fail_next_flush:
            self.fail_next_flush = False
            self.pending.clear()
            raise AuditSealError("1 event(s) failed delivery")
        self.delivered.extend(self.pending)
        self.pending.clear()


@pytest.fixture()
def log_dir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


def auditor(tmp_path: Path, producer: FakeProducer, **kwargs) -> AccessAuditor:
    """A fresh auditor, as after a restart: only the state file carries over."""
    return AccessAuditor(producer, authorizer_log=tmp_path / "logs" / "kafka-authorizer.log",
                         spool=tmp_path / "spool.jsonl", state_file=tmp_path / "state.json",
                         own_principal=AUDITOR, audit_topics=AUDIT_TOPICS, **kwargs)


def forwarded(producer: FakeProducer) -> list[int]:
    """The entry numbers forwarded (decoded from the events' millisecond timestamps)."""
    return [event["occurred_at"] // 1000 % 60_000 for event in producer.delivered
            if event["source_service"] == "kafka-broker"]


def test_restarts_and_rotations_neither_lose_nor_repeat(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    producer = FakeProducer()
    append(log, *(decision(n) for n in range(0, 5)))
    auditor(tmp_path, producer).run(once=True)
    # while the auditor is down: more entries, two rotations, and entries in the new file
    append(log, *(decision(n) for n in range(5, 8)))
    rotate(log)
    append(log, *(decision(n) for n in range(8, 10)))
    rotate(log)
    append(log, decision(10))
    auditor(tmp_path, producer).run(once=True)
    # running: a rotation between two reads, with entries on both sides of it
    running = auditor(tmp_path, producer)
    append(log, decision(11))
    running.step()
    append(log, decision(12))
    rotate(log)
    append(log, decision(13))
    running.run(once=True)
    auditor(tmp_path, producer).run(once=True)  # a restart with nothing new forwards nothing
    assert forwarded(producer) == list(range(14))
    assert len({e["event_id"] for e in producer.delivered}) == 14


def test_a_line_still_being_written_waits_for_its_newline(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    producer = FakeProducer()
    whole = decision(1)
    append(log, decision(0), whole[:40])
    auditor(tmp_path, producer).run(once=True)
    assert forwarded(producer) == [0]
    append(log, whole[40:])
    auditor(tmp_path, producer).run(once=True)
    assert forwarded(producer) == [0, 1]


def test_failed_delivery_does_not_advance_and_the_replay_keeps_event_ids(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    producer = FakeProducer()
    append(log, decision(0), decision(1))
    producer.fail_next_flush = True
    first = auditor(tmp_path, producer)
    with pytest.raises(AuditSealError):
        first.step()
    assert load_positions(tmp_path / "state.json") == {}
    auditor(tmp_path, producer).run(once=True)
    assert forwarded(producer) == [0, 1]
    # a crash after delivery but before the position was saved replays: same ids, so detectable
    replayer = FakeProducer()
    (tmp_path / "state.json").unlink()
    auditor(tmp_path, replayer).run(once=True)
    assert [e["event_id"] for e in replayer.delivered] == [e["event_id"] for e in producer.delivered]


def test_own_and_broker_routine_traffic_and_other_topics_are_not_forwarded(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    allowed = [decision(n, principal=p).replace("is Denied", "is Allowed")
               for n, p in ((0, AUDITOR), (1, "Cert:broker"))]
    append(log, *allowed, decision(2, topic="orders"), "some unrelated line\n", decision(3),
           decision(4, principal=AUDITOR))
    producer = FakeProducer()
    auditor(tmp_path, producer).run(once=True)
    assert forwarded(producer) == [3, 4]  # a denial is never routine, not even the auditor's own


def test_a_file_rotated_away_unread_is_reported_as_a_gap(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    producer = FakeProducer()
    append(log, decision(0))
    auditor(tmp_path, producer).run(once=True)
    append(log, decision(1))  # never read: its file is dropped by three rotations keeping two
    for n in (2, 3, 4):
        rotate(log, keep=2)
        append(log, decision(n))
    auditor(tmp_path, producer).run(once=True)
    assert forwarded(producer) == [0, 2, 3, 4]  # entry 1 went with its file
    gaps = [e for e in producer.delivered if e["action"] == "authorizer_log.gap"]
    assert len(gaps) == 1 and gaps[0]["outcome"]["status"] == "FAILURE"
    assert "may be lost" in gaps[0]["outcome"]["reason"]


def test_a_rewritten_file_with_the_same_inode_is_not_trusted(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    producer = FakeProducer()
    append(log, decision(0), decision(1))
    auditor(tmp_path, producer).run(once=True)
    log.write_text(decision(7) + decision(8) + decision(9))  # truncated and rewritten in place
    auditor(tmp_path, producer).run(once=True)
    assert forwarded(producer) == [0, 1, 7, 8, 9]
    assert [e["action"] for e in producer.delivered].count("authorizer_log.gap") == 1


def test_start_at_end_skips_history_but_not_what_follows(tmp_path, log_dir):
    log = log_dir / "kafka-authorizer.log"
    append(log, decision(0), decision(1))
    producer = FakeProducer()
    auditor(tmp_path, producer, start_at_end=True).run(once=True)
    append(log, decision(2))
    auditor(tmp_path, producer, start_at_end=True).run(once=True)  # a saved position wins
    assert forwarded(producer) == [2]


def test_spooled_access_records_are_forwarded_once_and_bad_ones_recorded(tmp_path, log_dir):
    spool = tmp_path / "spool.jsonl"
    recorded = record_access(action="topic.consume", resource={"type": "kafka.topic", "id": "audit.sealed"},
                             principal="User:siem", spool=spool)
    append(spool, "{not json\n")
    producer = FakeProducer()
    auditor(tmp_path, producer).run(once=True)
    auditor(tmp_path, producer).run(once=True)
    assert [e["action"] for e in producer.delivered] == ["topic.consume", "access_record.reject"]
    assert producer.delivered[0]["event_id"] == recorded["event_id"]
    assert producer.delivered[0]["attributes"]["os_user"]
    assert json.loads(spool.read_text().splitlines()[0])["actor"]["id"] == "User:siem"


def test_rotated_files_are_listed_oldest_first(log_dir):
    log = log_dir / "kafka-authorizer.log"
    for name in ("kafka-authorizer.log", "kafka-authorizer.log.2", "kafka-authorizer.log.10",
                 "kafka-authorizer.log.1", "kafka-authorizer.log.tmp"):
        (log_dir / name).touch()
    assert [p.name for p, _st in RotatingLog(log).files()] == [
        "kafka-authorizer.log.10", "kafka-authorizer.log.2", "kafka-authorizer.log.1", "kafka-authorizer.log"]
