"""AuditProducer behaviour that needs no broker: librdkafka itself runs, pointed at a closed port.

Nothing is ever delivered there, which is exactly what these tests need: every path by which an
event could be lost (queue full, delivery timeout, authentication failure, closing) must end in
an error the caller sees.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.producer.client import (
    PRODUCER_TUNING,
    AuditProducer,
    AuthenticationError,
    BrokerUnavailableError,
    DeliveryError,
    DeliveryResult,
    DeliveryTimeoutError,
    ProducerClosedError,
    ProducerFatalError,
    ProducerQueueFullError,
    UndeliveredEventsError,
)
from pipeline.wire.validation import InvalidEventError

EVENT = {
    "event_id": "0b0e7e6c-3f4a-4a8e-9d21-6c1f1f3a2b10",
    "occurred_at": 1735689600123456,
    "actor": {"id": "usr_42", "type": "USER"},
    "action": "document.read",
    "resource": {"type": "document", "id": "doc-1"},
    "outcome": {"status": "SUCCESS"},
    "source_service": "storage",
}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_producer(**config: object) -> AuditProducer:
    settings = KafkaSettings(f"127.0.0.1:{_closed_port()}", "producer", "secret", "/nonexistent/ca.pem")
    # PLAINTEXT only because there is no broker (nor CA) here; the TLS path is tested on the stack.
    options = {"security.protocol": "PLAINTEXT", "log_level": 0, **config}
    queue_full_timeout = float(options.pop("queue_full_timeout", 30.0))  # type: ignore[arg-type]
    return AuditProducer(settings, config=options, queue_full_timeout=queue_full_timeout)


@pytest.fixture
def producer() -> Iterator[AuditProducer]:
    instance = make_producer(**{"message.timeout.ms": 300})
    yield instance
    try:
        instance.close(timeout=5)
    except (UndeliveredEventsError, AuthenticationError, ProducerFatalError):
        pass


def test_tuning_is_durable_and_batched() -> None:
    assert PRODUCER_TUNING["enable.idempotence"] is True
    assert PRODUCER_TUNING["acks"] == "all"
    assert PRODUCER_TUNING["compression.type"] in ("lz4", "zstd")
    assert 5 <= int(PRODUCER_TUNING["linger.ms"]) <= 20  # type: ignore[call-overload]


def test_invalid_event_raises_and_nothing_is_queued(producer: AuditProducer) -> None:
    with pytest.raises(InvalidEventError, match=r"actor\.type"):
        producer.emit(dict(EVENT, actor={"id": "usr_42", "type": "ROBOT"}))
    # Had it been queued, it would have timed out (300 ms) and this flush would raise.
    producer.flush(5)


def test_failed_delivery_reaches_result_callback_and_flush(producer: AuditProducer) -> None:
    called: list[DeliveryResult] = []
    result = producer.emit(EVENT, on_delivery=called.append)
    assert not result.done()
    with pytest.raises(DeliveryError, match="not delivered to audit.raw: _MSG_TIMED_OUT") as caught:
        result.wait(10)
    assert caught.value.kafka_error.code() == KafkaError._MSG_TIMED_OUT
    assert caught.value.event_id == EVENT["event_id"]
    assert called == [result] and result.error is caught.value and result.done()
    with pytest.raises(UndeliveredEventsError, match="1 event") as flushed:
        producer.flush(5)
    assert (flushed.value.failed, flushed.value.pending, flushed.value.failures) == (1, 0, [result.error])
    producer.flush(5)  # each failure is reported once


def test_await_result_raises_the_delivery_error(producer: AuditProducer) -> None:
    async def emit_and_await() -> None:
        result = producer.emit(EVENT)
        await asyncio.wait_for(asyncio.shield(_await(result)), timeout=10)

    async def _await(result: DeliveryResult) -> DeliveryResult:
        return await result

    with pytest.raises(DeliveryError, match="_MSG_TIMED_OUT"):
        asyncio.run(emit_and_await())


def test_wait_times_out_while_pending() -> None:
    producer = make_producer(**{"message.timeout.ms": 60_000})
    result = producer.emit(EVENT)
    with pytest.raises(DeliveryTimeoutError, match="not acknowledged within 0.05s"):
        result.wait(0.05)
    with pytest.raises(UndeliveredEventsError, match="1 event\\(s\\) still unacknowledged") as caught:
        producer.close(timeout=0.1)
    assert caught.value.pending == 1
    with pytest.raises(ProducerClosedError):
        producer.emit(EVENT)


def test_full_queue_waits_then_raises_without_dropping() -> None:
    producer = make_producer(**{"queue.buffering.max.messages": 3, "message.timeout.ms": 60_000,
                                "queue_full_timeout": 0.3})
    queued = [producer.emit(EVENT) for _ in range(3)]
    started = time.monotonic()
    with pytest.raises(ProducerQueueFullError, match="not sent: the local queue stayed full for 0.3s"):
        producer.emit(EVENT)
    assert time.monotonic() - started >= 0.3
    assert not any(result.done() for result in queued)  # still waiting for the broker, not dropped
    with pytest.raises(UndeliveredEventsError):
        producer.close(timeout=0.1)


def test_full_queue_sends_once_there_is_room() -> None:
    # The three queued events time out after 0.5 s, freeing room: the fourth is then queued, not lost.
    producer = make_producer(**{"queue.buffering.max.messages": 3, "message.timeout.ms": 500,
                                "queue_full_timeout": 10})
    first = [producer.emit(EVENT) for _ in range(3)]
    fourth = producer.emit(EVENT)
    assert all(result.done() for result in first)
    with pytest.raises(DeliveryError):
        fourth.wait(10)
    with pytest.raises(UndeliveredEventsError) as caught:
        producer.close(timeout=5)
    assert caught.value.failed == 4


@pytest.mark.parametrize(
    ("kafka_error", "expected"),
    [
        (KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials"), AuthenticationError),
        (KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed"), AuthenticationError),
        (KafkaError(KafkaError._FENCED, "producer fenced", fatal=True), ProducerFatalError),
    ],
    ids=["sasl", "tls", "fatal"],
)
def test_authentication_and_fatal_errors_fail_fast(kafka_error: KafkaError, expected: type[Exception]) -> None:
    producer = make_producer(**{"message.timeout.ms": 60_000})
    pending = producer.emit(EVENT)
    started = time.monotonic()
    producer._on_client_error(kafka_error)  # what librdkafka's error_cb delivers
    with pytest.raises(DeliveryError) as caught:
        pending.wait(10)
    assert time.monotonic() - started < 5, "queued events must fail at once, not at message.timeout.ms"
    assert isinstance(caught.value.__cause__, expected)
    with pytest.raises(expected):
        producer.emit(EVENT)
    with pytest.raises(expected):
        producer.flush(5)
    with pytest.raises(expected):
        producer.close(5)


def test_authentication_error_names_the_principal_and_the_fix() -> None:
    producer = make_producer()
    producer._on_client_error(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    with pytest.raises(AuthenticationError, match="as 'producer' failed: SASL authentication error; check AUDITSEAL_SASL"):
        producer.check(timeout=5)
    with pytest.raises(AuthenticationError):
        producer.close(5)


def test_transient_errors_do_not_stop_the_producer(producer: AuditProducer) -> None:
    producer._on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    producer.emit(EVENT)  # still accepted; librdkafka keeps reconnecting


def test_check_fails_when_no_broker_answers(producer: AuditProducer) -> None:
    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match="no metadata from 127.0.0.1:"):
        producer.check(timeout=1)
    assert time.monotonic() - started < 3


def test_context_manager_flushes_and_reports(producer: AuditProducer) -> None:
    with pytest.raises(UndeliveredEventsError, match="1 event"):
        with make_producer(**{"message.timeout.ms": 200}) as scoped:
            scoped.emit(EVENT)
    with pytest.raises(ProducerClosedError):
        scoped.emit(EVENT)


def test_context_manager_does_not_mask_the_body_error() -> None:
    with pytest.raises(KeyError):
        with make_producer(**{"message.timeout.ms": 200}) as scoped:
            scoped.emit(EVENT)
            raise KeyError("from the body")


def test_bad_client_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot create the Kafka producer"):
        AuditProducer(KafkaSettings("127.0.0.1:9", "producer", "secret", "/nonexistent/ca.pem"))


def test_a_raising_callback_does_not_stop_other_reports(producer: AuditProducer) -> None:
    def broken(result: DeliveryResult) -> None:
        raise RuntimeError("bug in the caller's callback")

    first = producer.emit(EVENT, on_delivery=broken)
    second = producer.emit(copy.deepcopy(EVENT))
    for result in (first, second):
        with pytest.raises(DeliveryError):
            result.wait(10)


def test_many_threads_waiting_on_one_result(producer: AuditProducer) -> None:
    result = producer.emit(EVENT)
    outcomes: list[str] = []

    def wait() -> None:
        try:
            result.wait(10)
        except DeliveryError:
            outcomes.append("failed")

    threads = [threading.Thread(target=wait) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == ["failed"] * 8
