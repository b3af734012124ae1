"""The Faust app of the sealer: ``auditseal seal`` runs one worker.

Faust hosts the worker: its lifecycle and signals, the ``seal`` agent, and the timer that reports lag.
The raw records reach the agent in batches (at most ``max_batch`` records, at most ``batch_interval``
seconds apart), fetched by librdkafka: Faust's own per-record stream path measured about 7,600
records/s forwarding nothing, a quarter of the target. For each chain in a batch the agent queues
the records in the chain's own lane (one thread per chain), which seals them and writes them with
their checkpoint in one transaction (:mod:`pipeline.sealer.output`). A chain's batches are sealed
and committed in order, one transaction at a time; the chains' lanes run side by side, and the next
fetch does not wait for the last commit (at most ``_IN_FLIGHT`` batches per chain are queued).

Correctness never depends on a consumer offset: a chain is opened when its partition is assigned
(fencing any older writer), resumes from its own last checkpoint, and the consumer is positioned
there. Faust's ``processing_guarantee="exactly_once"`` is not used: it is known to duplicate records
after a kill and to crash on rebalance (faust-streaming issues #517, #323, #177).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import faust
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from faust.app.base import BootStrategy
from mode import CrashingSupervisor
from prometheus_client import Counter, Gauge

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.integrity.errors import MalformedNoteError
from pipeline.integrity.keyring import KeySchedule
from pipeline.integrity.log_identity import chain_origin
from pipeline.metrics import BatchHistogram
from pipeline.sealer.chain_sealer import ChainSealer, SealedRecord
from pipeline.sealer.output import (
    RECORD_FRAMING_BYTES,
    SEALED_MAX_MESSAGE_BYTES,
    TRANSACTIONAL_PREFIX,
    ChainFencedError,
    ChainWriter,
    RecordTooLargeError,
)
from pipeline.sealer.witnessing import SealerWitnessing, reread_history
from pipeline.wire.sealed import GAP_LOST, GAP_SKIPPED, REJECTION_KIND, chain_id_for
from pipeline.wire.topics import RAW_TOPIC, SEALED_TOPIC

log = logging.getLogger(__name__)

SEALED = Counter("auditseal_sealer_events_sealed_total", "Raw records sealed into a chain (events and rejections)",
                 ["chain"])
REJECTED = Counter("auditseal_sealer_rejections_total", "Raw records sealed as rejections", ["chain"])
HEADS = Counter("auditseal_sealer_tree_heads_total", "Signed tree heads written (heartbeat: while idle)",
                ["chain", "heartbeat"])
CHECKPOINTS = Counter("auditseal_sealer_checkpoints_total", "Signed checkpoints written", ["chain"])
FENCED = Counter("auditseal_sealer_chain_fenced_total", "Chains given up after a fenced or failed transaction",
                 ["chain"])
STRAYS = Counter("auditseal_sealer_stray_records_total",
                 "Records on the sealed topic no valid checkpoint of the chain backs (another writer's), skipped "
                 "when the chain was opened", ["chain"])
GAP_OFFSETS = Counter("auditseal_sealer_gap_offsets_total",
                      "Raw offsets sealed as gap entries: lost (below the low watermark: expired or deleted before "
                      "they were sealed) or skipped (transaction markers, aborted records)", ["chain", "cause"])
LAG = Gauge("auditseal_sealer_consumer_lag", "Raw records not yet sealed (high watermark - next offset)", ["chain"])
LATENCY = BatchHistogram("auditseal_sealer_seal_latency_seconds", "Raw record timestamp to committed seal",
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# after a failed transaction, give a rebalance the time to move the chain before taking it back
_REOPEN_AFTER_S = 15.0
# batches a chain's lane may hold (one committing, one waiting) before the fetch loop waits for it
_IN_FLIGHT = 2


@dataclass(frozen=True)
class SealerConfig:
    """Tunables of one worker; defaults documented in the README."""

    app_id: str = "auditseal-sealer"
    raw_topic: str = RAW_TOPIC
    sealed_topic: str = SEALED_TOPIC
    max_batch: int = 2000
    batch_interval: float = 0.1
    session_timeout_ms: int = 10_000
    # the sealed topic's max.message.bytes: a larger sealed event is sealed as a rejection
    max_message_bytes: int = SEALED_MAX_MESSAGE_BYTES
    # the log name in every checkpoint's origin (<log name>/<chain id>); None: auditseal/<Kafka cluster id>
    log_name: str | None = None
    # every chain signs a tree head at least this often (seconds), alone if idle; 0: no tree heads at all
    heartbeat_interval: float = 60.0
    # a C2SP tlog-policy file: its witnesses cosign the heads of the chains it lists (None: no witnessing)
    witness_policy: str | None = None
    # a chain's newest head goes to the witnesses at most this often (seconds)
    witness_interval: float = 10.0

    def __post_init__(self) -> None:
        # checked before anything starts: a bad value fails in one line, not at the first fetch
        if self.max_batch < 1:
            raise ConfigError(f"--checkpoint-records {self.max_batch}: must be at least 1")
        if not 0 < self.batch_interval <= 3600:
            raise ConfigError(f"--checkpoint-ms {self.batch_interval * 1000:g}: must be between 1 and 3600000")
        if self.max_message_bytes < 4 * RECORD_FRAMING_BYTES:
            raise ConfigError(f"--sealed-max-message-bytes {self.max_message_bytes}: must be at least "
                              f"{4 * RECORD_FRAMING_BYTES}")
        for option, topic in (("--raw-topic", self.raw_topic), ("--sealed-topic", self.sealed_topic)):
            if not topic:
                raise ConfigError(f"{option}: empty topic name")
        if not 0 <= self.heartbeat_interval <= 86400:
            raise ConfigError(f"--heartbeat-interval {self.heartbeat_interval:g}: must be 0 (no heads) to 86400 s")
        if self.witness_policy is not None and not self.heartbeat_interval:
            raise ConfigError("--witness-policy needs tree heads: --heartbeat-interval 0 writes none")
        if not 0 < self.witness_interval <= 86400:
            raise ConfigError(f"--witness-interval {self.witness_interval:g}: must be more than 0 and at most 86400 s")
        if self.witness_policy is not None:
            from pipeline.integrity.policy import load_policy

            load_policy(self.witness_policy)  # a policy that does not parse stops here: one line, exit 2
        if self.log_name is not None:
            try:
                chain_origin(self.log_name, chain_id_for(self.raw_topic, 0))
            except MalformedNoteError as exc:
                raise ConfigError(f"--log-name {self.log_name!r}: {exc}") from None
        if not self.app_id.startswith(TRANSACTIONAL_PREFIX):
            raise ConfigError(f"--app-id {self.app_id!r}: must start with {TRANSACTIONAL_PREFIX} (the sealer role's "
                              "group ACL is prefixed)")


@dataclass
class _Chain:
    writer: ChainWriter
    sealer: ChainSealer
    # one thread: the chain's batches are sealed and committed in the order they were fetched
    lane: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="chain"))
    pending: deque[Future[int]] = field(default_factory=deque)
    last_head: float = field(default_factory=time.monotonic)  # when the chain last wrote a tree head


@dataclass
class _Batch:
    messages: list[Message]
    done: asyncio.Future = field(repr=False)


class Sealer:
    """The chains this worker owns, opened when their partition is assigned and dropped when it is revoked."""

    def __init__(self, settings: KafkaSettings, signing_key: KeySchedule, config: SealerConfig,
                 witnessing: SealerWitnessing | None = None) -> None:
        self.settings = settings
        # cosigning of the chains' heads by the policy's witnesses, in a thread of its own (pipeline.sealer.witnessing)
        self.witnessing = witnessing
        self.signing_key = signing_key
        self.config = config
        self.chains: dict[int, _Chain] = {}
        self.paused: dict[int, float] = {}  # partition -> when its chain was given up
        # partition -> the next raw offset after the chain's last committed checkpoint (the lag is
        # counted from it, also while the chain is given up: records waiting are never shown as 0)
        self.committed: dict[int, int] = {}
        # partition -> a lower record limit learned from a broker that refused a batch for its size
        self.record_limits: dict[int, int] = {}
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="open")  # opens chains in parallel
        self._consumer_lock = threading.Lock()  # close() must not race a consume() in another thread
        self._closed = False
        self.consumer = Consumer(settings.client_config(**{
            "group.id": config.app_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": max(500, config.session_timeout_ms // 5),
            "max.poll.interval.ms": 300_000,
            "fetch.wait.max.ms": 50,
        }))

    # ---- group membership (callbacks run inside consume(), between batches) ------------------------
    def start(self) -> None:
        """Join the consumer group on the raw topic."""
        self.consumer.subscribe([self.config.raw_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        opened = list(self.executor.map(lambda tp: (tp, self._try_open(tp.partition)), partitions))
        for tp, chain in opened:
            if chain is not None:
                tp.offset = chain.sealer.next_source_offset
        consumer.assign([tp for tp, _ in opened])
        # librdkafka keeps a partition's pause across a revoke and a new assignment: a chain given up
        # (paused) before a rebalance would be opened again and never read (a stall of minutes after
        # a broker restart)
        consumer.resume([tp for tp, chain in opened if chain is not None])
        waiting = [tp for tp, chain in opened if chain is None]
        if waiting:
            consumer.pause(waiting)

    def _try_open(self, partition: int) -> _Chain | None:
        # a chain that cannot be opened now (fenced, or no sealed partition yet) waits, paused, and is
        # retried every _REOPEN_AFTER_S; its lag grows meanwhile (and alerts), the other chains go on
        try:
            return self._open(partition)
        except ChainFencedError as exc:
            log.error("%s", exc)
            self.paused[partition] = time.monotonic()
            self.committed.setdefault(partition, 0)
            return None

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._drop(tp.partition)
            self._forget(tp.partition)

    def _forget(self, partition: int) -> None:
        # the chain is no longer this worker's: its owner reports its lag
        if self.committed.pop(partition, None) is not None:
            try:
                LAG.remove(chain_id_for(self.config.raw_topic, partition))
            except KeyError:
                pass  # never reported yet

    def _open(self, partition: int) -> _Chain:
        writer = ChainWriter(self.settings, raw_topic=self.config.raw_topic, sealed_topic=self.config.sealed_topic,
                             partition=partition, signing_key=self.signing_key, group_prefix=self.config.app_id,
                             max_message_bytes=self.config.max_message_bytes,
                             max_record_bytes=self.record_limits.get(partition), log_name=self.config.log_name)
        sealer = writer.open()
        if sealer.next_source_offset is None:
            # a new chain accounts for its partition from Kafka's first offset: records already gone
            # (expired, deleted) before it started are sealed as a lost gap, not silently skipped
            sealer.next_source_offset = 0
            if writer.raw_low_watermark > 0:
                log.warning("%s: a new chain on a raw partition whose records below offset %d are gone: they are "
                            "sealed as a lost gap", sealer.chain_id, writer.raw_low_watermark)
        self.committed[partition] = sealer.next_source_offset
        for offset, why in writer.strays:
            log.warning("%s: stray record at %s[%d] offset %d skipped: %s", sealer.chain_id, self.config.sealed_topic,
                        partition, offset, why)
        STRAYS.labels(sealer.chain_id).inc(len(writer.strays))
        chain = self.chains[partition] = _Chain(writer, sealer)
        if self.witnessing is not None:
            self.witnessing.open_chain(sealer.chain_id, partition, sealer.origin, sealer.history)
        self.paused.pop(partition, None)
        log.info("%s: opened at seq %d, next raw offset %d", sealer.chain_id, sealer.head.seq,
                 sealer.next_source_offset)
        return chain

    def _drop(self, partition: int) -> None:
        chain = self.chains.pop(partition, None)
        self.paused.pop(partition, None)
        if chain is None:
            return
        if self.witnessing is not None:
            self.witnessing.close_chain(chain.sealer.origin)
        # Batches not started are dropped (whoever owns the chain next resumes from its last
        # checkpoint and reads them again); a transaction under way completes or fails first.
        for job in chain.pending:
            job.cancel()
        chain.lane.shutdown(wait=True)
        chain.writer.close()
        for job in chain.pending:
            if not job.cancelled() and not isinstance(job.exception(), (ChainFencedError, type(None))):
                raise job.exception()  # a bug, not a fenced chain: stop the worker (CrashingSupervisor)

    # ---- the batch loop ------------------------------------------------------------------------------
    def fetch(self) -> list[Message]:
        """The next batch of raw records (blocking; rebalance callbacks run in here)."""
        with self._consumer_lock:
            if self._closed:
                return []
            self._settle_finished()
            self._retake_paused()
            messages = self.consumer.consume(self.config.max_batch, self.config.batch_interval)
        for message in messages:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
        return [m for m in messages if m.error() is None]

    def _retake_paused(self) -> None:
        now = time.monotonic()
        for partition, since in list(self.paused.items()):
            if now - since < _REOPEN_AFTER_S:
                continue
            tp = TopicPartition(self.config.raw_topic, partition)
            if tp not in self.consumer.assignment():
                self.paused.pop(partition)
                self._forget(partition)
                continue
            chain = self._try_open(partition)
            if chain is None:
                continue
            self.consumer.seek(TopicPartition(self.config.raw_topic, partition, chain.sealer.next_source_offset))
            self.consumer.resume([tp])

    def seal_batch(self, messages: list[Message]) -> int:
        """Queue one batch in the lanes of its chains; returns the records sealed by the batches that
        finished meanwhile. Waits only for a chain that already has ``_IN_FLIGHT`` batches queued."""
        by_partition: dict[int, list[Message]] = {}
        for message in messages:
            by_partition.setdefault(message.partition(), []).append(message)
        with self._consumer_lock:  # not while close() releases the chains
            if self._closed:
                return 0  # released: whoever owns the chains next reads these records again
            sealed = self._settle_finished()
            for partition, batch in by_partition.items():
                chain = self.chains.get(partition)
                while chain is not None and len(chain.pending) >= _IN_FLIGHT:
                    sealed += self._settle(partition, chain)
                    chain = self.chains.get(partition)  # None if it was given up
                if chain is not None:
                    chain.pending.append(chain.lane.submit(self._seal_and_write, chain, batch))
        return sealed

    def _settle_finished(self) -> int:
        sealed = 0
        for partition, chain in list(self.chains.items()):
            while chain.pending and chain.pending[0].done() and self.chains.get(partition) is chain:
                sealed += self._settle(partition, chain)
        return sealed

    def _settle(self, partition: int, chain: _Chain) -> int:
        # the outcome of the chain's oldest queued batch (waiting for it); a failed transaction gives
        # the chain up, and the batches queued after it are dropped with it
        try:
            return chain.pending[0].result()
        except RecordTooLargeError as exc:
            # the topic takes less than configured: the next opening seals the batch's largest record
            # (and any as large) as a rejection instead of failing on it again
            limit = min(self.record_limits.get(partition, exc.largest), exc.largest - 1)
            self.record_limits[partition] = limit
            log.warning("%s; sealing records over %d bytes as rejections from now on (is --sealed-max-message-bytes "
                        "above the topic's max.message.bytes?)", exc, limit)
            self._give_up(partition)
            return 0
        except ChainFencedError as exc:
            log.warning("%s", exc)
            self._give_up(partition)
            return 0
        finally:
            if chain.pending:
                chain.pending.popleft()

    def drain(self) -> None:
        """Wait until every queued batch is sealed and committed (or its chain given up).
        Call with the consumer lock held (close() does)."""
        for partition, chain in list(self.chains.items()):
            while chain.pending and self.chains.get(partition) is chain:
                self._settle(partition, chain)

    def _give_up(self, partition: int) -> None:
        # fenced: most likely a rebalance gave the chain to another worker; stop reading it and let the
        # group settle. If it is still ours after _REOPEN_AFTER_S, it is reopened (fencing the other).
        self._drop(partition)
        tp = TopicPartition(self.config.raw_topic, partition)
        self.consumer.pause([tp])
        self.paused[partition] = time.monotonic()

    def _seal_and_write(self, chain: _Chain, messages: list[Message]) -> int:
        # runs in the chain's lane
        sealer = chain.sealer
        label = sealer.chain_id
        records: list[SealedRecord] = []
        seal, append = sealer.seal, records.append
        for message in messages:
            offset = message.offset()
            if offset < sealer.next_source_offset:
                continue  # fetched before a seek back; sealed already
            if offset > sealer.next_source_offset:
                records.extend(self._seal_gap(sealer, offset))
            append(seal(message.value(), offset, message.timestamp()[1] * 1000))
        if not records:
            return 0
        rejected = sum(1 for r in records if r.kind == REJECTION_KIND)
        now = time.time_ns() // 1000
        head = sealer.tree_head(now) if self.config.heartbeat_interval else None
        entries = len(records)
        if head is not None:
            records.append(head)
        records.append(sealer.checkpoint(now))
        witnessing = self.witnessing
        if witnessing is not None:
            records.extend(witnessing.take(sealer.origin))  # cosigned earlier heads ride along
        try:
            chain.writer.write(records)
        except ChainFencedError:
            FENCED.labels(label).inc()
            raise
        if witnessing is not None and head is not None:
            witnessing.head_written(sealer.origin, head, sealer.head_chunks)
        now_micros = time.time() * 1_000_000
        LATENCY.observe_many([max(0.0, now_micros - record.source_timestamp_micros) / 1_000_000
                              for record in records[:entries]])
        self.committed[sealer.source_partition] = sealer.next_source_offset
        SEALED.labels(label).inc(entries)
        REJECTED.labels(label).inc(rejected)
        CHECKPOINTS.labels(label).inc()
        if head is not None:
            chain.last_head = time.monotonic()
            HEADS.labels(label, "false").inc()
        return entries

    def heartbeat(self) -> None:
        """Queue a tree head, alone, in every chain that wrote none for the heartbeat interval and has no
        batch queued: an idle chain still proves, at least every interval, that it is alive and how long it is."""
        interval = self.config.heartbeat_interval
        if not interval:
            return
        now = time.monotonic()
        with self._consumer_lock:
            if self._closed:
                return
            for chain in self.chains.values():
                if not chain.pending and now - chain.last_head >= interval:
                    chain.last_head = now
                    chain.pending.append(chain.lane.submit(self._write_heartbeat, chain))
                elif not chain.pending and self.witnessing is not None and self.witnessing.waiting(chain.sealer.origin):
                    # an idle chain's cosignatures are sealed within a second of the witnesses' answer
                    chain.pending.append(chain.lane.submit(self._write_cosignatures, chain))

    def _write_heartbeat(self, chain: _Chain) -> int:
        # runs in the chain's lane, between its batches
        head = chain.sealer.tree_head(time.time_ns() // 1000, heartbeat=True)
        if head is None:
            return 0
        witnessing = self.witnessing
        cosigned = witnessing.take(chain.sealer.origin) if witnessing is not None else []
        try:
            chain.writer.write([head, *cosigned])
        except ChainFencedError:
            FENCED.labels(chain.sealer.chain_id).inc()
            raise
        HEADS.labels(chain.sealer.chain_id, "true").inc()
        if witnessing is not None:
            witnessing.head_written(chain.sealer.origin, head, chain.sealer.head_chunks)
        return 0

    def _write_cosignatures(self, chain: _Chain) -> int:
        # runs in the chain's lane, between its batches: the witnesses' cosignatures of an idle chain's head
        assert self.witnessing is not None
        cosigned = self.witnessing.take(chain.sealer.origin)
        if cosigned:
            try:
                chain.writer.write(cosigned)
            except ChainFencedError:
                FENCED.labels(chain.sealer.chain_id).inc()
                raise
        return 0

    def _seal_gap(self, sealer: ChainSealer, offset: int) -> list[SealedRecord]:
        # raw offsets next_source_offset..offset-1 never arrived: the part below the partition's low
        # watermark is lost (expired or deleted; the consumer's offset reset jumped over it), the rest the
        # broker skipped (transaction markers, aborted records). Never a silent jump.
        expected = sealer.next_source_offset
        tp = TopicPartition(self.config.raw_topic, sealer.source_partition)
        try:
            low, _ = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            known = f"the partition's low watermark is {low}"
        except KafkaException as exc:
            # not knowing is not "benign": the whole range is claimed lost, and says why
            low, known = offset, f"the low watermark could not be read ({exc.args[0].str()})"
        now = time.time_ns() // 1000
        records = []
        lost_end = min(offset, low) - 1
        if expected <= lost_end:
            reason = (f"raw offsets {expected}..{lost_end} were never delivered: {known}, so they expired or were "
                      f"deleted before they were sealed")
            log.error("%s: %s", sealer.chain_id, reason)
            records.append(sealer.seal_gap(lost_end, GAP_LOST, reason, now))
            GAP_OFFSETS.labels(sealer.chain_id, GAP_LOST).inc(lost_end - expected + 1)
        first = sealer.next_source_offset
        if first < offset:
            reason = (f"raw offsets {first}..{offset - 1} hold no record to deliver ({known}): transaction "
                      f"markers or aborted records")
            log.info("%s: %s", sealer.chain_id, reason)
            records.append(sealer.seal_gap(offset - 1, GAP_SKIPPED, reason, now))
            GAP_OFFSETS.labels(sealer.chain_id, GAP_SKIPPED).inc(offset - first)
        return records

    def update_lag(self) -> None:
        """Refresh the lag gauge: raw records past each chain's last committed checkpoint. A chain
        being read takes the consumer's cached high watermark; one given up (nothing fetched for it)
        asks the broker, so its lag keeps growing while records wait."""
        for partition, committed in list(self.committed.items()):
            if self._closed:
                return
            tp = TopicPartition(self.config.raw_topic, partition)
            try:
                _, high = self.consumer.get_watermark_offsets(tp, cached=partition in self.chains, timeout=5)
            except KafkaException as exc:
                log.info("lag of %s[%d] not refreshed: %s", self.config.raw_topic, partition, exc)
                continue
            except RuntimeError:
                # "Consumer closed": the worker is stopping and close() won the race with this timer (it
                # runs in a thread; on a busy machine it overlapped the shutdown and crashed it)
                if self._closed:
                    return
                raise
            if high is not None and high >= 0:
                LAG.labels(chain_id_for(self.config.raw_topic, partition)).set(max(0, high - committed))

    def close(self) -> None:
        """Leave the group and release every chain."""
        with self._consumer_lock:
            if self._closed:
                return
            self._closed = True
            self.drain()  # what was fetched is committed before the chains are released
            self.consumer.close()  # revokes: every chain is dropped in _on_revoke
            for partition in list(self.chains):
                self._drop(partition)
        self.executor.shutdown(wait=True)
        if self.witnessing is not None:
            self.witnessing.stop()


class _ChainsDoTheirOwnKafkaIO(BootStrategy):
    # the agent reads a channel fed by the Sealer's consumer, and chains write through their own
    # transactional producers: Faust's Kafka consumer and producer would only be idle connections
    enable_kafka_consumer = False
    enable_kafka_producer = False


class SealerApp(faust.App):
    """A Faust app that hosts the sealer's agent, task and timer without Kafka clients of its own."""

    BootStrategy = _ChainsDoTheirOwnKafkaIO


class BatchWorker(Protocol):
    """What :func:`worker_app` drives: the Sealer, or a benchmark's forward-only twin of it."""

    def start(self) -> None: ...
    def fetch(self) -> list[Message]: ...
    def seal_batch(self, messages: list[Message]) -> int: ...
    def update_lag(self) -> None: ...
    def close(self) -> None: ...


def create_app(settings: KafkaSettings, signing_key: KeySchedule, config: SealerConfig = SealerConfig(),
               datadir: str | None = None) -> faust.App:
    """The Faust app of one sealer worker, authenticated as ``settings`` (the sealer role); Faust's
    data folder is ``datadir`` (default: Faust's, ``<app id>-data`` in the working directory)."""
    witnessing = None
    if config.witness_policy is not None:
        witnessing = sealer_witnessing(settings, config)
    sealer = Sealer(settings, signing_key, config, witnessing)
    app = worker_app(sealer, f"{config.app_id}-worker", settings.bootstrap, datadir)
    if witnessing is not None:
        witnessing.start()
    return app


def sealer_witnessing(settings: KafkaSettings, config: SealerConfig) -> SealerWitnessing:
    """The witnessing of a worker's chains under ``config.witness_policy`` (PolicyError, exit 2, if it does not
    parse or names no witness URL); a chain's history is re-read from its sealed partition when a witness holds
    an older size than the worker's."""
    from pipeline.integrity.policy import load_policy

    policy = load_policy(config.witness_policy)  # type: ignore[arg-type]

    def reread(chain_id: str, partition: int, old: int, size: int):
        return reread_history(settings, config.sealed_topic, partition, chain_id, f"{config.app_id}-recovery")(old, size)

    return SealerWitnessing(policy, interval_s=config.witness_interval, reread=reread)


def worker_app(worker: BatchWorker, app_id: str, bootstrap: str, datadir: str | None = None) -> faust.App:
    """A Faust app whose ``seal`` agent processes the batches ``worker`` fetches, one at a time."""
    app = SealerApp(
        app_id,
        broker=f"kafka://{bootstrap}",
        **({"datadir": datadir} if datadir else {}),
        topic_disable_leader=True,
        topic_allow_declare=False,
        web_enabled=False,
        store="memory://",
        autodiscover=False,
        # an error we did not plan for stops the worker (non-zero exit) instead of leaving it idle;
        # whatever restarts it resumes every chain from its last checkpoint
        agent_supervisor=CrashingSupervisor,
    )
    app.sealer = worker  # type: ignore[attr-defined]
    batches = app.channel()

    @app.agent(batches, name="seal")
    async def seal(stream: faust.StreamT) -> None:
        loop = asyncio.get_running_loop()
        async for batch in stream:
            try:
                await loop.run_in_executor(None, worker.seal_batch, batch.messages)
            except BaseException as exc:
                batch.done.set_exception(exc)
                raise
            batch.done.set_result(None)

    @app.task
    async def fetch_raw() -> None:
        # one batch handed over at a time; a rebalance (inside fetch) waits for the transaction
        # under way in each revoked chain's lane (Sealer._drop)
        loop = asyncio.get_running_loop()
        # Faust lets streams flow once its own consumer has recovered; this app has none
        app.flow_control.resume()
        await loop.run_in_executor(None, worker.start)
        while not app.should_stop:
            messages = await loop.run_in_executor(None, worker.fetch)
            if messages:
                batch = _Batch(messages, loop.create_future())
                await batches.send(value=batch)
                await batch.done

    heartbeat = getattr(worker, "heartbeat", None)
    if heartbeat is not None:
        @app.timer(interval=1.0)
        async def heartbeats() -> None:
            await asyncio.get_running_loop().run_in_executor(None, heartbeat)

    @app.timer(interval=5.0)
    async def report_lag() -> None:
        # in a thread: a chain given up asks the broker for its high watermark
        await asyncio.get_running_loop().run_in_executor(None, worker.update_lag)

    @app.on_before_shutdown.connect
    async def release(app: faust.App, **kwargs) -> None:
        await asyncio.get_running_loop().run_in_executor(None, worker.close)

    return app
