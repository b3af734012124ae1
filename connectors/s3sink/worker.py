"""The sink's consume loop: ``audit.sealed`` (read_committed) -> locked objects -> committed offsets.

One thread consumes and cuts each partition's records into batches
(:mod:`connectors.s3sink.batching`); a small pool builds and writes them
(:mod:`pipeline.archive.container`, :mod:`connectors.s3sink.bucket`), one batch at a time per
partition, partitions in parallel. The consume thread commits a partition's offset (last + 1)
only after the batch's object and manifest are written, locked and read back, so a crash at any
moment loses nothing: uncommitted records are read again, and the objects already written for
them are found in the bucket and reproduced under the same keys with the same bytes.

While S3 is down the batch in flight is retried with backoff, nothing is committed, and once the
batches waiting exceed ``max_pending_bytes`` the partitions are paused (the consumer keeps
polling, so it stays in its group) until the backlog drains.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty, Queue

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from connectors.s3sink import metrics
from connectors.s3sink.batching import Batch, BatchLimits, PartitionBatcher
from connectors.s3sink.bucket import ArchiveBucket, WriteCancelled
from pipeline.archive.container import DEFAULT_DEFLATE_LEVEL, ArchiveObject, build_object
from pipeline.archive.encryption import KeyEncryptionKey
from pipeline.archive.retention import ComplianceProfile
from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError, ConfigError
from pipeline.wire.topics import SEALED_TOPIC

log = logging.getLogger(__name__)

GROUP_PREFIX = "auditseal-sink"
CONSUME_BATCH = 5000
REVOKE_WAIT_SECONDS = 30.0
SHUTDOWN_WAIT_SECONDS = 60.0
LAG_INTERVAL_SECONDS = 2.0
# how long an assignment retries its offset lookups while a leader or the group coordinator moves (a
# SIGKILLed broker stays leader in the metadata until the controller fences it, ~10 s, plus its restart);
# with the lookups' own 30 s, well inside max.poll.interval.ms
ASSIGN_WAIT_SECONDS = 180.0
_NOT_RETRIED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


class SinkError(AuditSealError):
    """The sink stopped on a failure retrying cannot fix; nothing after the last verified object was committed."""


@dataclass(frozen=True)
class SinkConfig:
    """What one sink process archives, where, and how (defaults documented in the README)."""

    profile: ComplianceProfile
    topic: str = SEALED_TOPIC
    group_id: str = GROUP_PREFIX
    prefix: str = ""
    codec: str = "deflate"
    deflate_level: int = DEFAULT_DEFLATE_LEVEL
    limits: BatchLimits = BatchLimits()
    workers: int = 4
    max_pending_bytes: int = 256 * 1024 * 1024
    master_key: KeyEncryptionKey | None = None
    instance_id: str | None = None
    """Kafka static membership (``group.instance.id``): a restarted sink gets its partitions back at once."""
    crash_before_commit: int | None = None
    """Fault injection for tests: SIGKILL this process just before committing its N-th object."""

    def __post_init__(self) -> None:
        if not self.group_id.startswith(GROUP_PREFIX):
            raise ConfigError(f"consumer group {self.group_id!r} must start with {GROUP_PREFIX!r} "
                              "(the sink role's ACLs cover only those groups)")
        if self.prefix and not self.prefix.endswith("/"):
            raise ConfigError(f"key prefix {self.prefix!r} must end with '/'")
        if self.codec not in ("null", "deflate"):
            raise ConfigError(f"codec {self.codec!r}: use null or deflate")


def consumer_config(settings: KafkaSettings, config: SinkConfig) -> dict[str, object]:
    """The sink's consumer: read_committed, offsets stored and committed only by the sink itself."""
    overrides: dict[str, object] = {
        "group.id": config.group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # a dead sink's partitions move after 10 s rather than librdkafka's default 45 s
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 2000,
        "max.poll.interval.ms": 300000,
    }
    if config.instance_id:
        overrides["group.instance.id"] = config.instance_id
    return settings.client_config(**overrides)


@dataclass
class _Partition:
    batcher: PartitionBatcher
    committed: int
    """The next offset to archive: the committed offset, or where consumption started."""
    queue: deque[Batch] = field(default_factory=deque)
    in_flight: Future | None = None
    in_flight_records: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    owned: bool = True


class S3Sink:
    """One sink process: a consumer group member archiving its partitions."""

    def __init__(self, settings: KafkaSettings, bucket: ArchiveBucket, config: SinkConfig) -> None:
        self.settings = settings
        self.bucket = bucket
        self.config = config
        self.partitions: dict[int, _Partition] = {}
        self.completions: Queue[tuple[_Partition, Batch, Future]] = Queue()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="sink-flush")
        self.pending_bytes = 0
        self.paused = False
        self.fatal: BaseException | None = None
        self.objects_committed = 0
        self.consumer: Consumer | None = None
        self._next_lag_update = 0.0

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Consume and archive until ``stop`` is set, then finish the batches in hand and leave the group."""
        consumer = self.consumer = Consumer(consumer_config(self.settings, self.config))
        consumer.subscribe([self.config.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_lost)
        try:
            while not stop.is_set():
                self._consume_once(consumer)
            self._shutdown()
        finally:
            for part in self.partitions.values():
                part.cancelled.set()  # writes still retrying give up; what is verified is committed on revoke
            try:
                consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)
            self.executor.shutdown(wait=False, cancel_futures=True)

    def _consume_once(self, consumer: Consumer) -> None:
        # while objects are being written, come back soon to commit them as they complete
        busy = any(part.in_flight is not None for part in self.partitions.values())
        messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.005 if busy else 0.1)
        now = time.monotonic()
        for message in messages:
            error = message.error()
            if error is not None:
                self._consumer_error(error)
                continue
            part = self.partitions.get(message.partition())
            if part is None:
                continue
            for batch in part.batcher.add(message.offset(), message.timestamp()[1], message.value() or b"", now):
                self._enqueue(part, batch)
        for part in list(self.partitions.values()):
            batch = part.batcher.expired(now)
            if batch is not None:
                self._enqueue(part, batch)
        self._process_completions(timeout=0)
        self._backpressure()
        if now >= self._next_lag_update:
            self._update_lag()
            self._next_lag_update = now + LAG_INTERVAL_SECONDS
        if self.fatal is not None:
            raise SinkError(str(self.fatal)) from self.fatal

    def _consumer_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                             KafkaError.GROUP_AUTHORIZATION_FAILED):
            raise SinkError(f"consuming {self.config.topic}: {error.str()}")
        log.warning("consuming %s: %s", self.config.topic, error.str())

    # ---- batches -----------------------------------------------------------------------------
    def _enqueue(self, part: _Partition, batch: Batch) -> None:
        batch.closed_at = time.monotonic()
        part.queue.append(batch)
        self.pending_bytes += batch.size_bytes
        self._start_next(part)

    def _start_next(self, part: _Partition) -> None:
        if part.in_flight is not None or not part.queue or not part.owned:
            return
        batch = part.queue.popleft()
        future = self.executor.submit(self._flush, batch, part.cancelled)
        part.in_flight, part.in_flight_records = future, len(batch.records)
        future.add_done_callback(lambda done: self.completions.put((part, batch, done)))

    def _flush(self, batch: Batch, cancelled: threading.Event) -> ArchiveObject:
        """Build, write, lock and read back one batch (pool thread)."""
        started = time.monotonic()
        archive = self._build(batch)
        built = time.monotonic()
        self.bucket.write(archive, cancelled)
        log.debug("%s: built in %.3f s, written and read back in %.3f s", archive.key, built - started,
                  time.monotonic() - built)
        return archive

    def _build(self, batch: Batch) -> ArchiveObject:
        """The archive object of one batch (pool thread)."""
        config = self.config
        return build_object(batch.topic, batch.partition, batch.records, profile=config.profile, prefix=config.prefix,
                            codec=config.codec, level=config.deflate_level, master_key=config.master_key)

    def _process_completions(self, timeout: float) -> None:
        """Commit the batches whose objects are verified (waiting up to ``timeout`` for the first)."""
        while True:
            try:
                part, batch, future = self.completions.get(timeout=timeout)
            except Empty:
                return
            timeout = 0
            self._complete(part, batch, future)

    def _complete(self, part: _Partition, batch: Batch, future: Future) -> None:
        if part.in_flight is future:
            part.in_flight, part.in_flight_records = None, 0
            self.pending_bytes -= batch.size_bytes
        if not part.owned:
            return  # revoked: settled in _on_revoke
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not isinstance(error, WriteCancelled):
                self.fatal = error
            return
        archive: ArchiveObject = future.result()
        if self._commit(part, archive):
            metrics.FLUSH_LATENCY.observe(time.monotonic() - batch.closed_at)
        self._start_next(part)

    def _commit(self, part: _Partition, archive: ArchiveObject) -> bool:
        manifest = archive.manifest
        if self.config.crash_before_commit is not None and self.objects_committed + 1 >= self.config.crash_before_commit:
            log.warning("fault injection: SIGKILL before committing %s", archive.key)
            os.kill(os.getpid(), signal.SIGKILL)
        assert self.consumer is not None
        try:
            self.consumer.commit(offsets=[TopicPartition(manifest.topic, manifest.partition, manifest.last_offset + 1)],
                                 asynchronous=False)
        except KafkaException as exc:
            # a rebalance under way: the next owner rewrites this object identically and commits it
            log.warning("commit after %s failed: %s", archive.key, exc.args[0].str())
            return False
        part.committed = manifest.last_offset + 1
        self.objects_committed += 1
        topic = manifest.topic
        metrics.OBJECTS.labels(topic).inc()
        metrics.BYTES.labels(topic).inc(manifest.size)
        metrics.RECORDS.labels(topic).inc(manifest.record_count)
        log.info("archived %s: %d records, %d bytes, locked until %s", archive.key, manifest.record_count,
                 manifest.size, manifest.retain_until)
        return True

    def _backpressure(self) -> None:
        if self.consumer is None or not self.partitions:
            return
        held = self.pending_bytes + sum(p.batcher.pending_bytes for p in self.partitions.values())
        assigned = [TopicPartition(self.config.topic, p) for p in self.partitions]
        if not self.paused and held > self.config.max_pending_bytes:
            self.consumer.pause(assigned)
            self.paused = True
            log.info("paused consumption: %d bytes waiting to be archived", held)
        elif self.paused and held < self.config.max_pending_bytes // 2:
            self.consumer.resume(assigned)
            self.paused = False
            log.info("resumed consumption")

    def _update_lag(self) -> None:
        """Records not yet archived per partition: not consumed yet (high watermark - position, which
        librdkafka moves past transaction markers, so an idle partition reads 0) plus consumed but
        not committed yet."""
        if self.consumer is None or not self.partitions:
            return
        topic = self.config.topic
        try:
            positions = {tp.partition: tp.offset
                         for tp in self.consumer.position([TopicPartition(topic, p) for p in self.partitions])}
        except KafkaException:
            return
        for number, part in list(self.partitions.items()):
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, number), cached=True)
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            position = positions.get(number, OFFSET_INVALID)
            held = (part.in_flight_records + sum(len(batch.records) for batch in part.queue)
                    + (len(part.batcher.open.records) if part.batcher.open is not None else 0))
            unread = high - (position if position >= 0 else part.committed)
            metrics.LAG.labels(topic, str(number)).set(max(0, unread) + held)

    # ---- rebalance ---------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, assigned: list[TopicPartition]) -> None:
        self.paused = False
        deadline = time.monotonic() + ASSIGN_WAIT_SECONDS  # one budget for the whole assignment
        try:
            committed = self._looked_up(consumer, deadline, "reading committed offsets",
                                        lambda client: client.committed(assigned, timeout=30))
            starts = []
            for tp in committed:
                start = tp.offset
                if start == OFFSET_INVALID or start < 0:
                    where = TopicPartition(tp.topic, tp.partition)
                    start, _ = self._looked_up(consumer, deadline,
                                               f"reading the first offset of {tp.topic}[{tp.partition}]",
                                               lambda client, where=where: client.get_watermark_offsets(where,
                                                                                                        timeout=30))
                starts.append(TopicPartition(tp.topic, tp.partition, start))
        except SinkError as exc:
            self.fatal = exc
            return
        for tp in starts:
            start = tp.offset
            planned = self.bucket.existing_ranges(tp.topic, tp.partition, self.config.prefix, start)
            batcher = PartitionBatcher(tp.topic, tp.partition, self.config.limits, planned)
            self.partitions[tp.partition] = _Partition(batcher, committed=start)
            if planned:
                log.info("%s[%d]: resuming at offset %d; %d object(s) written after it are reproduced as they "
                         "were: %s", tp.topic, tp.partition, start, len(planned),
                         ", ".join(f"{first}-{last}" for first, last in planned))
            else:
                log.info("%s[%d]: resuming at offset %d", tp.topic, tp.partition, start)
        # start exactly where the planned ranges were looked up (and skip librdkafka's offset reset)
        consumer.assign(starts)
        # librdkafka keeps a partition's pause (backpressure) across a revoke and a new assignment
        consumer.resume(starts)

    def _looked_up(self, consumer: Consumer, deadline: float, what: str, lookup):
        """``lookup(client)`` with the group's consumer, then retried until ``deadline`` (monotonic) while it
        fails (each failure logged), each time with a new client: its fresh metadata names the partition's
        new leader. (Not by refreshing the group consumer's metadata: a metadata call of the consumer
        inside its own rebalance callback aborts the process in confluent-kafka's CallState.)
        SinkError once the time runs out."""
        client = consumer
        while True:
            try:
                return lookup(client)
            except KafkaException as exc:
                error = exc.args[0]
                if error.fatal() or error.code() in _NOT_RETRIED or time.monotonic() > deadline:
                    raise SinkError(f"{what}: {error.str()}") from None
                log.warning("%s: %s; retrying", what, error.str())
            finally:
                if client is not consumer:
                    client.close()
            time.sleep(1)
            # the group's id, to read its committed offsets; never subscribed, so never a member
            client = Consumer(self.settings.client_config(**{"group.id": self.config.group_id,
                                                              "enable.auto.commit": False}))

    def _on_revoke(self, consumer: Consumer, revoked: list[TopicPartition]) -> None:
        self._release(revoked, commit=True)

    def _on_lost(self, consumer: Consumer, lost: list[TopicPartition]) -> None:
        self._release(lost, commit=False)

    def _release(self, partitions: list[TopicPartition], commit: bool) -> None:
        """Let partitions go: drop their unwritten batches and settle the one in flight, so the next owner
        finds its object in the bucket (and reproduces it) rather than cutting the range differently."""
        for tp in partitions:
            part = self.partitions.pop(tp.partition, None)
            if part is None:
                continue
            part.owned = False
            try:
                metrics.LAG.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass  # never measured
            self.pending_bytes -= sum(batch.size_bytes for batch in part.queue)
            part.queue.clear()
            part.batcher.open = None
            future = part.in_flight
            if future is None:
                continue
            try:
                error = future.exception(timeout=REVOKE_WAIT_SECONDS)
            except CancelledError:
                continue  # never started
            except TimeoutError:
                part.cancelled.set()
                log.warning("%s[%d]: revoked while its object was still being written; given up",
                            tp.topic, tp.partition)
                continue
            if error is None:
                if commit:
                    self._commit(part, future.result())
            elif not isinstance(error, WriteCancelled):
                self.fatal = error

    # ---- stopping ----------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Write and commit what was consumed (bounded wait), then return."""
        for part in self.partitions.values():
            batch = part.batcher.close()
            if batch is not None:
                self._enqueue(part, batch)
        deadline = time.monotonic() + SHUTDOWN_WAIT_SECONDS
        while any(p.in_flight is not None or p.queue for p in self.partitions.values()):
            if self.fatal is not None:
                raise SinkError(str(self.fatal)) from self.fatal
            if time.monotonic() > deadline:
                for part in self.partitions.values():
                    part.cancelled.set()
                log.warning("stopping with batches unwritten; they are read again at the next start")
                return
            self._process_completions(timeout=0.2)


def install_stop_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT end the loop gracefully (batches in hand are finished first)."""
    def handler(signum: int, _frame) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
