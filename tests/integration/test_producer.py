"""AuditProducer and ``auditseal emit`` against the real secured broker.

What a consumer of ``audit.raw`` reads is checked by reading it back as the ``sealer`` role (the
only one allowed to read the raw topic), by exact partition and offset, so other writers on the
shared topic do not matter.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.producer.client import (
    AuditProducer,
    AuthenticationError,
    AuthorizationError,
    DeliveryError,
    DeliveryResult,
    ProducerQueueFullError,
)
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from pipeline.wire.topics import RAW_TOPIC, SEALED_TOPIC
from pipeline.wire.validation import InvalidEventError
from tests.unit.test_validation import CASES, VALID, changed

pytestmark = pytest.mark.stack

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
OPTIONAL_DEFAULTS = {"request_id": None, "trace_id": None, "attributes": {}, "protected_fields": [],
                     "protected_subjects": []}
ACTOR_DEFAULTS = {"source_ip": None, "user_agent": None, "session_id": None}


@pytest.fixture()
def producer(role_env) -> Iterator[AuditProducer]:
    with AuditProducer(KafkaSettings.from_env(role_env("producer"))) as instance:
        instance.check()
        yield instance


def as_decoded(event: Mapping[str, Any]) -> dict[str, Any]:
    """What a consumer decodes for ``event``: defaults filled in, UUID and timestamp as objects."""
    occurred_at = event["occurred_at"]
    if isinstance(occurred_at, int):
        occurred_at = EPOCH + timedelta(microseconds=occurred_at)
    return {
        **OPTIONAL_DEFAULTS,
        **event,
        "event_id": uuid.UUID(str(event["event_id"])),
        "occurred_at": occurred_at.astimezone(UTC),
        "actor": {**ACTOR_DEFAULTS, **event["actor"]},
        "outcome": {"reason": None, **event["outcome"]},
    }


def read_raw(env: Mapping[str, str], ranges: Mapping[int, tuple[int, int]], timeout: float = 60) -> list[Message]:
    """The records of ``audit.raw`` in [start, end) of each partition, read as the sealer role."""
    wanted = {partition: span for partition, span in ranges.items() if span[0] < span[1]}
    consumer = Consumer(KafkaSettings.from_env(env).client_config(**{
        "group.id": f"auditseal-sealer-test-{secrets.token_hex(4)}",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
    }))
    records: list[Message] = []
    try:
        consumer.assign([TopicPartition(RAW_TOPIC, partition, start) for partition, (start, _) in wanted.items()])
        deadline = time.monotonic() + timeout
        while wanted:
            assert time.monotonic() < deadline, f"records not read back within {timeout}s: {wanted}"
            for message in consumer.consume(1000, timeout=1.0):
                assert message.error() is None, message.error()
                span = wanted.get(message.partition())
                if span is None or message.offset() >= span[1]:
                    continue
                records.append(message)
                if message.offset() == span[1] - 1:
                    del wanted[message.partition()]
    finally:
        consumer.close()
    return records


def read_positions(env: Mapping[str, str], results: Iterable[DeliveryResult]) -> dict[tuple[int, int], Message]:
    """The records at the partitions and offsets the delivery results report."""
    positions = {(result.partition, result.offset) for result in results}
    ranges: dict[int, tuple[int, int]] = {}
    for partition, offset in positions:
        start, end = ranges.get(partition, (offset, offset + 1))
        ranges[partition] = (min(start, offset), max(end, offset + 1))
    return {(m.partition(), m.offset()): m for m in read_raw(env, ranges) if (m.partition(), m.offset()) in positions}


def end_offsets(env: Mapping[str, str]) -> dict[int, int]:
    """The current end (high watermark) of every ``audit.raw`` partition."""
    consumer = Consumer(KafkaSettings.from_env(env).client_config(
        **{"group.id": f"auditseal-sealer-test-{secrets.token_hex(4)}", "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(RAW_TOPIC, timeout=10).topics[RAW_TOPIC].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(RAW_TOPIC, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def event_ids_written_during(env: Mapping[str, str], action: Callable[[], None]) -> set[uuid.UUID]:
    """Run ``action`` and return the event ids of every record appended to ``audit.raw`` meanwhile."""
    before = end_offsets(env)
    action()
    after = end_offsets(env)
    codec = default_codec()
    ids = set()
    for message in read_raw(env, {p: (before[p], after[p]) for p in after}):
        try:
            ids.add(codec.decode(message.value())["event_id"])
        except Exception:  # another writer's record that is not an event does not concern this test
            continue
    return ids


# -- the library --------------------------------------------------------------------------------


def test_what_a_consumer_decodes_is_what_was_emitted(producer: AuditProducer, role_env) -> None:
    def fresh(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
        return changed(lambda e: (e.update(event_id=str(uuid.uuid4())), edit(e)))

    handmade = [
        fresh(lambda e: None),
        fresh(lambda e: e.update(action="dokument.läsa ✓", attributes={"note": "naïve café", "empty": ""})),
        fresh(lambda e: e.update(event_id=uuid.uuid4(), occurred_at=datetime.now(timezone(timedelta(hours=2))))),
        fresh(lambda e: [e.pop(name) for name in ("request_id", "trace_id", "attributes")]),
        fresh(lambda e: [e["actor"].pop(name) for name in ("source_ip", "user_agent", "session_id")]),
        fresh(lambda e: e.update(outcome={"status": "DENIED", "reason": "policy"}, attributes={"k": "v" * 5000})),
    ]
    events = handmade + list(synthetic_events(300, seed=secrets.randbits(32)))
    delivered: list[DeliveryResult] = []
    results = [producer.emit(event, key=f"k{i % 7}", on_delivery=delivered.append) for i, event in enumerate(events)]
    producer.flush(60)
    for result in results:
        result.wait(0)  # raises if it failed
        assert result.partition is not None and result.offset is not None and result.latency is not None
    assert sorted(map(id, delivered)) == sorted(map(id, results))  # one callback per event

    records = read_positions(role_env("sealer"), results)
    codec = default_codec()
    for i, (event, result) in enumerate(zip(events, results, strict=False)):
        record = records[(result.partition, result.offset)]
        assert record.key() == f"k{i % 7}".encode()
        assert record.value() == codec.encode(event)
        assert codec.decode(record.value()) == as_decoded(event), f"event {i}"


def test_results_complete_while_the_application_is_idle(producer: AuditProducer) -> None:
    # No flush, no further emit: the background thread serves the reports emit() did not.
    import asyncio

    first = producer.emit(next(iter(synthetic_events(1, seed=secrets.randbits(32)))))
    assert first.wait(10).offset is not None

    async def emit_and_await() -> DeliveryResult:
        return await producer.emit(next(iter(synthetic_events(1, seed=secrets.randbits(32)))))

    assert asyncio.run(asyncio.wait_for(emit_and_await(), 10)).offset is not None


def test_every_kind_of_invalid_event_is_refused_and_nothing_is_sent(producer: AuditProducer, role_env) -> None:
    # Bracket the attempts between two valid events with a key of our own: the producer keeps one
    # key's events in order on one partition, so anything sent in between would lie between them.
    key = f"invalid-{secrets.token_hex(8)}"
    before = producer.emit(dict(VALID, event_id=str(uuid.uuid4())), key=key)
    for name, edit, path, fragment in CASES:
        with pytest.raises(InvalidEventError) as caught:
            producer.emit(changed(edit), key=key)
        assert (caught.value.path, fragment in caught.value.problem) == (path, True), f"{name}: {caught.value}"
    with pytest.raises(InvalidEventError, match="expected AuditEvent record"):
        producer.emit([("action", "document.read")], key=key)  # type: ignore[arg-type]
    after = producer.emit(dict(VALID, event_id=str(uuid.uuid4())), key=key)
    producer.flush(30)
    assert before.partition == after.partition
    between = read_raw(role_env("sealer"), {before.partition: (before.offset, after.offset + 1)})
    assert [m.offset() for m in between if m.key() == key.encode()] == [before.offset, after.offset]


def test_wrong_password_fails_fast_with_authentication_error(role_env) -> None:
    env = dict(role_env("producer"), AUDITSEAL_SASL_PASSWORD="not-the-password")
    started = time.monotonic()
    producer = AuditProducer(KafkaSettings.from_env(env), config={"log_level": 0})
    with pytest.raises(AuthenticationError, match="as 'producer' failed: .*invalid credentials"):
        producer.check(timeout=30)
    assert time.monotonic() - started < 5
    with pytest.raises(AuthenticationError):
        producer.emit(dict(VALID))
    with pytest.raises(AuthenticationError):
        producer.close(5)


def test_wrong_password_fails_queued_events_fast(role_env) -> None:
    env = dict(role_env("producer"), AUDITSEAL_SASL_PASSWORD="not-the-password")
    producer = AuditProducer(KafkaSettings.from_env(env), config={"log_level": 0})
    started = time.monotonic()
    result = producer.emit(dict(VALID))  # before any connection: queued, then failed with the cause
    with pytest.raises(DeliveryError) as caught:
        result.wait(30)
    assert time.monotonic() - started < 5
    assert isinstance(caught.value.__cause__, AuthenticationError)
    with pytest.raises(AuthenticationError):
        producer.close(5)


def test_producer_role_cannot_write_the_sealed_topic(role_env) -> None:
    settings = KafkaSettings.from_env(role_env("producer"))
    with pytest.raises(AuthorizationError, match="'producer' may not write to topic 'audit.sealed'"):
        AuditProducer(settings, topic=SEALED_TOPIC, config={"log_level": 0}).check()

    # Without check(): refused at emit once the client knows, else by the delivery report.
    producer = AuditProducer(settings, topic=SEALED_TOPIC, config={"log_level": 0})
    try:
        result = producer.emit(dict(VALID))
    except AuthorizationError:
        return
    with pytest.raises(DeliveryError) as caught:
        result.wait(30)
    assert caught.value.kafka_error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_full_queue_waits_then_refuses_without_dropping(role_env) -> None:
    # A long linger keeps the two queued events in librdkafka's queue for 3 s, so the queue is
    # deterministically full while the broker is reachable.
    producer = AuditProducer(KafkaSettings.from_env(role_env("producer")), queue_full_timeout=0.5,
                             config={"queue.buffering.max.messages": 2, "linger.ms": 3000})
    producer.check()
    first, second, third = (dict(VALID, event_id=str(uuid.uuid4())) for _ in range(3))
    queued = [producer.emit(first), producer.emit(second)]
    started = time.monotonic()
    with pytest.raises(ProducerQueueFullError, match="not sent: the local queue stayed full for 0.5s"):
        producer.emit(third)
    assert 0.5 <= time.monotonic() - started < 2
    assert not any(result.done() for result in queued)
    for result in queued:
        result.wait(30)  # delivered, not dropped
    retried = producer.emit(third)  # room again: the refused event can be sent
    producer.close(30)
    records = read_positions(role_env("sealer"), [*queued, retried])
    decoded = [default_codec().decode(records[(r.partition, r.offset)].value())["event_id"] for r in [*queued, retried]]
    assert decoded == [uuid.UUID(e["event_id"]) for e in (first, second, third)]


# -- auditseal emit -----------------------------------------------------------------------------


def run_emit(env: Mapping[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "emit", *args],
        input=stdin, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )


def test_emit_generate_sends_every_event(role_env) -> None:
    seed = secrets.randbits(32)
    runs: list[subprocess.CompletedProcess[str]] = []
    written = event_ids_written_during(role_env("sealer"),
                                       lambda: runs.append(run_emit(role_env("producer"), "--generate", "50",
                                                                    "--seed", str(seed))))
    assert runs[0].returncode == 0, runs[0].stderr
    assert "sent 50, invalid 0, delivered 50 to audit.raw" in runs[0].stderr
    assert {uuid.UUID(e["event_id"]) for e in synthetic_events(50, seed=seed)} <= written


def test_emit_stdin_reports_the_bad_line_and_sends_the_good_ones(role_env) -> None:
    good = [dict(VALID, event_id=str(uuid.uuid4()), occurred_at="2025-06-01T12:00:00Z") for _ in range(2)]
    lines = [json.dumps(good[0]), json.dumps(dict(VALID, outcome={"status": "MAYBE"})), json.dumps(good[1])]
    runs: list[subprocess.CompletedProcess[str]] = []
    written = event_ids_written_during(role_env("sealer"),
                                       lambda: runs.append(run_emit(role_env("producer"), "-",
                                                                    stdin="\n".join(lines) + "\n")))
    run = runs[0]
    assert run.returncode == 1, run.stderr
    assert ("line 2: outcome.status: 'MAYBE' is not a symbol of OutcomeStatus; "
            "allowed: SUCCESS, FAILURE, DENIED, UNKNOWN") in run.stderr
    assert "sent 2, invalid 1, delivered 2" in run.stderr
    assert {uuid.UUID(e["event_id"]) for e in good} <= written


def test_emit_one_event_from_options(role_env) -> None:
    runs: list[subprocess.CompletedProcess[str]] = []
    options = ["--actor-id", "alice", "--actor-type", "USER", "--action", "document.share",
               "--resource-type", "document", "--resource-id", "doc-42", "--outcome", "DENIED",
               "--reason", "external sharing disabled", "--source-service", "storage",
               "--attr", "with=usr_7", "--attr", "query=a=b"]
    written = event_ids_written_during(role_env("sealer"),
                                       lambda: runs.append(run_emit(role_env("producer"), *options)))
    run = runs[0]
    assert run.returncode == 0, run.stderr
    event_id = uuid.UUID(run.stdout.strip())
    assert event_id in written
    assert "sent 1, invalid 0, delivered 1" in run.stderr


def test_emit_invalid_option_value_and_missing_configuration(role_env) -> None:
    run = run_emit(role_env("producer"), "--actor-id", "a", "--action", "x.y", "--resource-type", "d",
                   "--resource-id", "1", "--source-service", "s", "--actor-type", "ROBOT")
    assert run.returncode == 1
    assert "invalid event: actor.type: 'ROBOT' is not a symbol of ActorType" in run.stderr
    missing = {name: "" for name in ("AUDITSEAL_BOOTSTRAP",)}
    run = run_emit({**role_env("producer"), **missing}, "--generate", "1")
    assert run.returncode == 2
    assert "missing environment variable(s) AUDITSEAL_BOOTSTRAP" in run.stderr


def test_emit_with_a_wrong_password_exits_fast(role_env) -> None:
    started = time.monotonic()
    run = run_emit(dict(role_env("producer"), AUDITSEAL_SASL_PASSWORD="not-the-password"), "--generate", "1")
    assert time.monotonic() - started < 10
    assert run.returncode == 1
    assert "authentication to" in run.stderr and "check AUDITSEAL_SASL_USERNAME" in run.stderr
