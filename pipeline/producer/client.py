"""The producer library services use to emit audit events to ``audit.raw``.

``AuditProducer.emit(event)`` validates and encodes the event synchronously (an invalid event
raises :class:`~pipeline.wire.validation.InvalidEventError` and nothing is sent), then hands the bytes
to librdkafka, which batches, compresses and delivers them with ``acks=all`` and idempotence:
no duplicates from retries, no reordering within a partition. Nothing is dropped silently:

- a full local queue makes ``emit`` wait (serving delivery reports) up to ``queue_full_timeout``
  seconds, then raise :class:`ProducerQueueFullError` for that event;
- every event's :class:`DeliveryResult` ends either delivered (partition, offset) or with a
  :class:`DeliveryError`; await it, ``wait()`` on it, or pass ``on_delivery``;
- ``flush()`` (and leaving the ``with`` block) raises :class:`UndeliveredEventsError` if any event
  emitted since the previous flush failed or is still in flight when the timeout expires;
- authentication failures and fatal idempotence errors stop the producer at once: queued events
  fail with the cause, later ``emit`` calls raise it (:class:`AuthenticationError`,
  :class:`ProducerFatalError`) instead of retrying until the message timeout.

Delivery reports are served by ``emit`` itself (``poll(0)`` after every 16th produce; one poll
serves every report that has arrived) and, every 10 ms in which no ``emit`` served them, by one
background thread per producer, so results also complete while the application is not emitting.
Serving them on the emitting thread matters: left to the background thread alone, reports wait
for the GIL behind the emit loop, and under load the produce-to-result latency grew from ~10 ms
to ~800 ms in ``bench/producer.py``.
``on_delivery`` callbacks therefore run on whichever thread serves the report (inside ``emit``,
``flush``, or the background thread): keep them short and do not call ``emit`` from them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from pipeline.wire.codec import EventCodec, default_codec
from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError, ConfigError
from pipeline.native.producer_core import DeliveryCore, ProducerCore
from pipeline.wire.topics import RAW_TOPIC

DEFAULT_TOPIC = RAW_TOPIC

PRODUCER_TUNING: dict[str, object] = {
    # Durability: every in-sync replica has the event before it counts as delivered, and the
    # idempotent producer turns retries into exactly-once, in-order appends per partition.
    "enable.idempotence": True,
    "acks": "all",
    # Throughput: one Python process must sustain >= 100k events/s. Small events compress
    # well in batches; lz4 costs the least CPU on librdkafka's threads.
    "compression.type": "lz4",
    "linger.ms": 10,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    # Room for bursts (several seconds at full rate) before emit() has to wait.
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    # An event not acknowledged within 2 minutes fails visibly rather than waiting 5 (default).
    "message.timeout.ms": 120_000,
    "client.id": "auditseal-producer",
    # Audit topics are created by the admin role with their retention; a mistyped topic name
    # must fail, not silently create a new topic.
    "allow.auto.create.topics": False,
}

_log = logging.getLogger(__name__)
_POLL_INTERVAL = 0.01  # the background thread's tick: at most this long between a report and its result
_ANY_PARTITION = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the configured partitioner picks
_MAX_REMEMBERED_FAILURES = 100
# Taken only by the slow paths (a caller starting to wait on a result), never per event.
_WAITER_LOCK = threading.Lock()


class AuthenticationError(AuditSealError):
    """The cluster refused our credentials or TLS could not verify it; retrying will not help."""


class AuthorizationError(AuditSealError):
    """We authenticated, but the principal may not write to (or describe) the topic."""


class BrokerUnavailableError(AuditSealError):
    """No broker answered within the timeout."""


class ProducerFatalError(AuditSealError):
    """librdkafka reported a fatal error (e.g. idempotence state lost); build a new producer."""


class ProducerQueueFullError(AuditSealError):
    """The local queue stayed full for ``queue_full_timeout`` seconds; this event was not sent."""


class ProducerClosedError(AuditSealError):
    """``emit`` was called after ``close``."""


class DeliveryError(AuditSealError):
    """One event was not delivered; ``kafka_error`` says why (``cause`` when the producer stopped)."""

    def __init__(self, event_id: object, topic: str, kafka_error: KafkaError | None, message: str) -> None:
        self.event_id = event_id
        self.topic = topic
        self.kafka_error = kafka_error
        super().__init__(message)


class DeliveryTimeoutError(AuditSealError, TimeoutError):
    """``DeliveryResult.wait(timeout)`` returned before the delivery report arrived."""


class UndeliveredEventsError(AuditSealError):
    """Raised by ``flush``: events emitted since the last flush failed, or are still in flight.

    ``failures`` holds the first 100 :class:`DeliveryError`; ``failed`` and ``pending`` are counts.
    """

    def __init__(self, failures: list[DeliveryError], failed: int, pending: int, message: str) -> None:
        self.failures = failures
        self.failed = failed
        self.pending = pending
        super().__init__(message)


class DeliveryResult(DeliveryCore):
    """The outcome of one ``emit``: pending, then delivered (``partition``, ``offset``) or failed (``error``).

    ``await result`` and ``result.wait(timeout)`` return the result once delivered and raise
    its :class:`DeliveryError` if delivery failed. ``latency`` is the seconds from ``emit`` to
    the broker's acknowledgement, as measured by librdkafka.
    """

    # The per-event part (state, and __call__, the delivery report) is compiled in
    # DeliveryCore, whose C fields hold event_id, _callback, _producer, _outcome and _waiting.
    __slots__ = ()

    def _wake(self) -> None:
        # called by the delivery report once the outcome is set, if anyone waits
        for waiter in tuple(self._waiting):
            if isinstance(waiter, threading.Event):
                waiter.set()
                continue
            loop, future = waiter
            try:
                loop.call_soon_threadsafe(_settle, future)
            except RuntimeError:  # that event loop is closed; nobody is awaiting any more
                pass

    @property
    def partition(self) -> int | None:
        """The partition the event was written to; None until delivered."""
        return None if self._outcome is None else self._outcome[0]

    @property
    def offset(self) -> int | None:
        """The event's offset in its partition; None until delivered."""
        return None if self._outcome is None else self._outcome[1]

    @property
    def latency(self) -> float | None:
        """Seconds from ``emit`` to the broker's acknowledgement (librdkafka's figure); None until delivered."""
        return None if self._outcome is None else self._outcome[2]

    @property
    def error(self) -> DeliveryError | None:
        """Why the event was not delivered; None while pending or once delivered."""
        return None if self._outcome is None else self._outcome[3]

    def done(self) -> bool:
        """True once the event was delivered or failed."""
        return self._outcome is not None

    def _register(self, waiter: Any) -> None:
        with _WAITER_LOCK:
            if self._waiting is None:
                self._waiting = []
            self._waiting.append(waiter)

    def wait(self, timeout: float | None = None) -> DeliveryResult:
        """Block until delivered (return self) or failed (raise DeliveryError); DeliveryTimeoutError after ``timeout``."""
        if self._outcome is None:
            waiter = threading.Event()
            self._register(waiter)
            if self._outcome is None and not waiter.wait(timeout):
                raise DeliveryTimeoutError(f"event {self.event_id} not acknowledged within {timeout}s")
        error = self.error
        if error is not None:
            raise error
        return self

    def __await__(self) -> Generator[Any, None, DeliveryResult]:
        """``await result``: like :meth:`wait` without blocking the event loop."""
        if self._outcome is None:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._register((loop, future))
            if self._outcome is not None:  # delivered while we registered: the report may have missed us
                _settle(future)
            yield from future
        error = self.error
        if error is not None:
            raise error
        return self

    def __repr__(self) -> str:
        state = "pending" if self._outcome is None else ("failed" if self.error else "delivered")
        return f"<DeliveryResult event_id={self.event_id} {state} partition={self.partition} offset={self.offset}>"


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AuditProducer(ProducerCore):
    """Validates, encodes and durably produces audit events to one topic (default ``audit.raw``).

    ``emit(event, *, key=None, on_delivery=None)`` is compiled, in
    :class:`pipeline.native.producer_core.ProducerCore`; the rest is here.
    Use as a context manager, or call :meth:`close`: both flush, and raise
    :class:`UndeliveredEventsError` if any event could not be delivered.
    """

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        *,
        topic: str = DEFAULT_TOPIC,
        codec: EventCodec | None = None,
        queue_full_timeout: float = 30.0,
        config: Mapping[str, object] | None = None,
        protector: Any = None,
    ) -> None:
        """Connect lazily with ``settings`` (default: ``KafkaSettings.from_env()``).

        ``config`` overrides librdkafka properties on top of :data:`PRODUCER_TUNING`. No network
        I/O happens here; call :meth:`check` to fail fast on bad credentials or a missing topic.
        ``protector`` (a :class:`pipeline.privacy.protector.Protector`, needs ``cryptography`` and
        ``cachetools``) encrypts each event's personal fields before it is validated and encoded.
        """
        self.settings = KafkaSettings.from_env() if settings is None else settings
        self.topic = topic
        self.codec = default_codec() if codec is None else codec
        self.queue_full_timeout = queue_full_timeout
        client_config = self.settings.client_config(**{**PRODUCER_TUNING, **(config or {})})
        client_config["error_cb"] = self._on_client_error
        try:
            self._producer = Producer(client_config)
        except KafkaException as exc:  # e.g. an unreadable CA file, a misspelt property
            raise ConfigError(f"cannot create the Kafka producer: {exc.args[0].str()}") from exc
        # Bound once: emit() is the hot path.
        self._produce = self._producer.produce
        self._poll = self._producer.poll
        self._encode = self.codec.encode if protector is None else protector.encoder(self.codec.encode)
        self._result_type = DeliveryResult
        self._stopped = None  # set once: fatal error, auth failure or close()
        self._purge_requested = False
        self._reports_served = False  # emit() polled since the background thread's last tick
        self._failure_lock = threading.Lock()
        self._failures: list[DeliveryError] = []
        self._failed_count = 0
        self._purged_without_cause = False  # librdkafka purged for a fatal error not yet reported to us
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._serve_delivery_reports, name="auditseal-producer-poll",
                                        daemon=True)
        self._poller.start()

    # -- emitting -------------------------------------------------------------------------------

    def _produce_when_queue_has_room(self, value: bytes, key: str | bytes | None, result: DeliveryResult) -> None:
        deadline = time.monotonic() + self.queue_full_timeout
        while True:
            # Serving delivery reports is what frees queue space; the poll thread does too, this
            # just avoids sleeping while there is work.
            self._producer.poll(0.05)
            if self._stopped is not None:
                raise self._stopped
            try:
                self._produce(self.topic, value, key, _ANY_PARTITION, result)
                return
            except KafkaException as exc:
                raise self._producer_error(exc) from exc
            except BufferError:
                if time.monotonic() >= deadline:
                    raise ProducerQueueFullError(
                        f"event {result.event_id} not sent: the local queue stayed full for "
                        f"{self.queue_full_timeout}s ({len(self._producer)} events and reports waiting on "
                        f"{self.settings.bootstrap}); is the cluster reachable and keeping up?"
                    ) from None

    # -- waiting --------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event emitted so far is delivered or failed.

        Raises the error that stopped the producer (e.g. AuthenticationError) if there is one;
        otherwise UndeliveredEventsError if any event emitted since the last flush failed, or
        some are still in flight after ``timeout`` seconds (None: wait as long as it takes,
        bounded by ``message.timeout.ms``). Each failure is reported by one flush only.
        """
        try:
            pending = self._producer.flush(-1 if timeout is None else timeout)
        except (KafkaException, SystemError) as exc:
            if not self._fatal_raised(exc):
                raise
            pending = len(self._producer)
        # librdkafka purges the queue when it hits a fatal error, and the error itself may still be
        # on its way to us (on the poll thread): wait for it briefly, so the cause is what is raised
        deadline = time.monotonic() + 1.0
        while self._purged_without_cause and self._stopped is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if isinstance(self._stopped, (AuthenticationError, AuthorizationError, ProducerFatalError)):
            raise self._stopped
        with self._failure_lock:
            failures, failed = self._failures, self._failed_count
            self._failures, self._failed_count = [], 0
        if failed or pending:
            parts = []
            if failed:
                parts.append(f"{failed} event(s) failed delivery since the last flush (first: {failures[0]})")
            if pending:
                parts.append(f"{pending} event(s) still unacknowledged after {timeout}s")
            raise UndeliveredEventsError(failures, failed, pending, "; ".join(parts))

    def check(self, timeout: float = 10.0) -> None:
        """Fail fast unless the cluster answers, accepts our credentials and has the topic.

        Requests the topic's metadata. Raises AuthenticationError, AuthorizationError,
        BrokerUnavailableError (nothing answered within ``timeout``) or ConfigError (no such topic).
        """
        deadline = time.monotonic() + timeout
        last: KafkaException | None = None
        while True:
            if self._stopped is not None:
                raise self._stopped
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerUnavailableError(
                    f"no metadata from {self.settings.bootstrap} within {timeout}s"
                    + (f" ({last.args[0].str()})" if last is not None else "")
                )
            try:
                # Short requests in a loop: an authentication failure arrives through error_cb
                # and must end the wait now, not when the full timeout expires.
                metadata = self._producer.list_topics(self.topic, timeout=min(remaining, 0.5))
                break
            except KafkaException as exc:
                last = exc
        topic = metadata.topics.get(self.topic)
        error = topic.error if topic is not None else None
        if topic is None or (error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise ConfigError(f"topic {self.topic!r} does not exist on {self.settings.bootstrap}")
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise AuthorizationError(f"principal {self.settings.username!r} may not write to topic {self.topic!r}")
        if error is not None:
            raise BrokerUnavailableError(f"metadata for {self.topic!r}: {error.name()}: {error.str()}")

    def __len__(self) -> int:
        """librdkafka's count of events in flight plus reports not yet served; 0 once all is settled."""
        return len(self._producer)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush (raising like :meth:`flush`), then stop the poll thread; later emits raise ProducerClosedError."""
        try:
            self.flush(timeout)
        finally:
            if self._stopped is None:
                self._stopped = ProducerClosedError(f"producer for {self.topic!r} is closed")
            self._closing.set()
            self._poller.join()

    def __enter__(self) -> AuditProducer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # Still deliver what was emitted, but never mask the exception that ended the block.
        try:
            self.close()
        except AuditSealError:
            _log.exception("while closing the producer after an error")

    # -- librdkafka callbacks (poll thread) -----------------------------------------------------

    def _serve_delivery_reports(self) -> None:
        # Every _POLL_INTERVAL, serve the reports that no emit() served meanwhile. While the
        # application emits, emit's own poll(0) serves them and this thread stays off the GIL:
        # blocked in poll() instead, it woke for every report and the GIL hand-offs between the
        # two threads cost ~0.5 µs per event in bench/producer.py.
        while not self._closing.wait(_POLL_INTERVAL):
            if self._reports_served:
                self._reports_served = False
            else:
                try:
                    self._producer.poll(0)
                except (KafkaException, SystemError) as exc:
                    if not self._fatal_raised(exc):
                        _log.exception("serving delivery reports")
                except Exception:
                    # This thread must outlive any one bad report, or idle results never complete.
                    _log.exception("serving delivery reports")
            if self._purge_requested:
                self._purge_requested = False
                # Fail what is queued now, with the cause, instead of letting it retry until
                # message.timeout.ms; the purged events' reports arrive on the next poll.
                self._producer.purge(in_queue=True, in_flight=True, blocking=False)
        self._producer.poll(0)

    def _fatal_raised(self, exc: BaseException) -> bool:
        # confluent-kafka raises a fatal error from poll()/flush() instead of passing it to error_cb
        # (and if a delivery report is served while it is pending, the report's Python code fails
        # with a SystemError caused by it); route it to error_cb's handler (True), or leave any
        # other exception to the caller (False)
        if isinstance(exc, SystemError):
            exc = exc.__cause__  # type: ignore[assignment]
        if not isinstance(exc, KafkaException):
            return False
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.fatal():
            self._on_client_error(error)
            return True
        return False

    def _on_client_error(self, error: KafkaError) -> None:
        code = error.code()
        if code == KafkaError._AUTHENTICATION:
            self._stop(
                AuthenticationError(
                    f"authentication to {self.settings.bootstrap} as {self.settings.username!r} failed: "
                    f"{error.str()}; check AUDITSEAL_SASL_USERNAME and AUDITSEAL_SASL_PASSWORD "
                    "(SASL/SCRAM-SHA-512)"
                )
            )
        elif code == KafkaError._SSL:
            self._stop(
                AuthenticationError(
                    f"TLS with {self.settings.bootstrap} failed: {error.str()}; check that "
                    f"AUDITSEAL_CA_FILE ({self.settings.ca_file}) is the CA that signed the broker certificate"
                )
            )
        elif error.fatal() and code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            # the idempotent producer's id is refused to a principal without WRITE on any topic
            self._stop(
                AuthorizationError(
                    f"principal {self.settings.username!r} may not write to topic {self.topic!r}: the broker "
                    f"refused it a producer id ({error.str()})"
                )
            )
        elif error.fatal():
            self._stop(ProducerFatalError(f"fatal producer error, create a new producer: {error.name()}: {error.str()}"))
        else:
            # Transient (broker down, connection reset): librdkafka reconnects and retries, and
            # reports each attempt; only "all brokers down" deserves a warning.
            level = logging.WARNING if code == KafkaError._ALL_BROKERS_DOWN else logging.INFO
            _log.log(level, "kafka client: %s: %s", error.name(), error.str())

    def _stop(self, error: AuditSealError) -> None:
        if self._stopped is None:
            _log.error("%s", error)
            self._stopped = error
            self._purge_requested = True

    def _delivery_failed(self, result: DeliveryResult, kafka_error: KafkaError) -> DeliveryError:
        code = kafka_error.code()
        stopped = self._stopped
        if stopped is None and code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            self._purged_without_cause = True
        if stopped is not None and code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
            error = DeliveryError(result.event_id, self.topic, kafka_error,
                                  f"event {result.event_id} not delivered to {self.topic}: {stopped}")
            error.__cause__ = stopped
        else:
            hint = ""
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                hint = f" (principal {self.settings.username!r} lacks WRITE on {self.topic!r})"
            error = DeliveryError(result.event_id, self.topic, kafka_error,
                                  f"event {result.event_id} not delivered to {self.topic}: "
                                  f"{kafka_error.name()}: {kafka_error.str()}{hint}")
        with self._failure_lock:
            self._failed_count += 1
            if len(self._failures) < _MAX_REMEMBERED_FAILURES:
                self._failures.append(error)
        return error

    def _producer_error(self, exc: KafkaException) -> AuditSealError:
        # produce() fails synchronously once librdkafka knows the topic is off limits or absent.
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is None:
            return AuditSealError(f"cannot produce to {self.topic!r}: {exc}")
        code = error.code()
        if error.fatal():
            self._stop(ProducerFatalError(f"fatal producer error, create a new producer: {error.name()}: {error.str()}"))
            return self._stopped  # type: ignore[return-value]
        if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            return AuthorizationError(f"principal {self.settings.username!r} may not write to topic {self.topic!r}")
        if code in (KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART):
            return ConfigError(f"topic {self.topic!r} does not exist on {self.settings.bootstrap}")
        return AuditSealError(f"cannot produce to {self.topic!r}: {error.name()}: {error.str()}")
