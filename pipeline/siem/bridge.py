"""``auditseal siem-bridge``: every record of ``audit.sealed`` published once as OCSF JSON on ``audit.ocsf``.

Consume-transform-produce with Kafka transactions (KIP-98, with KIP-447 group fencing): the worker
reads ``audit.sealed`` as the ``siem-bridge`` role (``read_committed``, group ``auditseal-ocsf-bridge``),
maps each partition's records in offset order (:class:`pipeline.siem.batches.PartitionMapper`: an
entry waits for the checkpoint that signs it), and writes the documents of every completed batch to
the same partition of ``audit.ocsf``, together with the consumer offsets, in one transaction. A
document is therefore visible to ``read_committed`` readers exactly once, in chain order per
partition; what a crash interrupts is aborted and read again from the committed offset (the first
record not yet published). The committed offset of a partition is its first held record, so entries
waiting for their checkpoint are read again after a restart, never lost.

Offsets are sent with the consumer's group metadata, so a worker fenced by a rebalance (a zombie)
cannot commit; a failed transaction stops the worker (exit 1) and whatever restarts it resumes from
the committed offsets. A transaction's commit (the wait for the broker's acknowledgements) runs in a
thread while the next batch is fetched and mapped; nothing is produced before it has completed, and a
rebalance waits for it, so transactions stay one at a time and in order. Faust hosts the worker as the sealer's does (:func:`pipeline.sealer.app.worker_app`:
lifecycle, signals, the agent that processes each fetched batch, the lag timer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError
from pipeline.siem import ocsf
from pipeline.siem.batches import PartitionMapper, mappers
from pipeline.wire.topics import OCSF_TOPIC, SEALED_TOPIC

log = logging.getLogger(__name__)

APP_ID = "auditseal-ocsf-bridge"

PUBLISHED = Counter("auditseal_siem_records_published_total", "OCSF records committed to the OCSF topic",
                    ["class_uid"])
UNMAPPED = Counter("auditseal_siem_unmapped_total", "Sealed records the bridge could not map, published as "
                   "OCSF Base Event 'unmapped' records", ["partition"])
UNVERIFIABLE = Counter("auditseal_siem_unsigned_entries_total", "Entries published without a covering signature "
                       "(evidence_error: incomplete or damaged batch)", ["partition"])
HELD = Gauge("auditseal_siem_held_records", "Sealed records read and waiting for their checkpoint", ["partition"])
LAG = Gauge("auditseal_siem_consumer_lag", "Sealed records not yet published (high watermark - position)",
            ["partition"])


class BridgeError(AuditSealError):
    """A transaction of the bridge failed (fenced, or the broker refused it): the worker stops."""


@dataclass(frozen=True)
class BridgeConfig:
    """Tunables of one bridge worker; defaults documented in docs/SIEM.md."""

    sealed_topic: str = SEALED_TOPIC
    ocsf_topic: str = OCSF_TOPIC
    app_id: str = APP_ID
    instance_id: str = "0"
    max_batch: int = 5000
    batch_interval: float = 0.1
    session_timeout_ms: int = 10_000


def _product_version() -> str | None:
    try:
        return version("auditseal")
    except PackageNotFoundError:
        return None


class OcsfBridge:
    """The fetch/publish loop (the BatchWorker :func:`pipeline.sealer.app.worker_app` drives)."""

    def __init__(self, settings: KafkaSettings, config: BridgeConfig = BridgeConfig()) -> None:
        self.config = config
        self._new_mapper = mappers(product_version=_product_version())
        self.mappers: dict[int, PartitionMapper] = {}
        self._closed = False
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="ocsf-commit")
        self._commit: Future[None] | None = None  # the transaction being committed, if any
        self.consumer = Consumer(settings.client_config(**{
            "group.id": config.app_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "session.timeout.ms": config.session_timeout_ms,
            "heartbeat.interval.ms": max(500, config.session_timeout_ms // 5),
            "fetch.wait.max.ms": 50,
        }))
        self.producer = Producer(settings.client_config(**{
            "transactional.id": f"{config.app_id}-{config.instance_id}",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "batch.size": 1048576,
            "transaction.timeout.ms": 60000,
            "queue.buffering.max.kbytes": 1048576,
        }))

    def start(self) -> None:
        """Fence older instances with this transactional id, then join the group on the sealed topic."""
        try:
            self.producer.init_transactions(60)
        except KafkaException as exc:
            raise BridgeError(f"init_transactions failed: {exc.args[0].str()}") from exc
        self.consumer.subscribe([self.config.sealed_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._settle()
        for tp in partitions:
            self.mappers[tp.partition] = self._new_mapper(self.config.sealed_topic, tp.partition)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # no transaction is open once the one committing has ended: forget what is held, the next owner
        # reads it again from the committed offset
        self._settle()
        for tp in partitions:
            self.mappers.pop(tp.partition, None)
            HELD.labels(str(tp.partition)).set(0)

    def fetch(self) -> list[Message]:
        """The next batch of sealed records (blocking; rebalance callbacks run in here)."""
        if self._closed:
            return []
        if self._commit is not None and self._commit.done():
            self._finish_commit()  # a failed commit stops the worker now, not at the next batch
        messages = self.consumer.consume(self.config.max_batch, self.config.batch_interval)
        for message in messages:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
        return [m for m in messages if m.error() is None]

    def seal_batch(self, messages: Sequence[Message]) -> int:
        """Map a fetched batch and publish what it completes, with the offsets, in one transaction."""
        if self._closed or not messages:
            return 0
        documents: dict[int, list[bytes]] = {}
        offsets: dict[int, int] = {}
        counts: dict[int, int] = {}
        unmapped: dict[int, int] = {}
        unsigned: dict[int, int] = {}
        last: dict[int, int] = {}  # each partition's last offset read in this batch
        for message in messages:
            partition = message.partition()
            mapper = self.mappers.get(partition)
            if mapper is None:
                continue  # revoked meanwhile: its next owner reads it
            offset = last[partition] = message.offset()
            released = mapper.add(offset, message.value(), message.timestamp()[1])
            if released:
                out = documents.setdefault(partition, [])
                for document in released:
                    out.append(document.json)
                    class_uid = document.class_uid
                    counts[class_uid] = counts.get(class_uid, 0) + 1
                    if class_uid == ocsf.BASE_EVENT:
                        unmapped[partition] = unmapped.get(partition, 0) + 1
                    elif document.unsigned:
                        unsigned[partition] = unsigned.get(partition, 0) + 1
        for partition, offset in last.items():
            held = self.mappers[partition].first_held_offset
            offsets[partition] = held if held is not None else offset + 1
        if not documents:
            self._report_held()
            return 0
        self._finish_commit()
        self._begin(documents, offsets)
        self._commit = self._committer.submit(self._end, counts, unmapped, unsigned)
        self._report_held()
        return sum(counts.values())

    def _settle(self) -> None:
        # wait for the transaction being committed (in a rebalance callback: its error, if any, is raised
        # by the next fetch or batch, outside librdkafka's callback)
        if self._commit is not None:
            self._commit.exception()

    def _finish_commit(self) -> None:
        """Wait for the transaction being committed; BridgeError if it failed."""
        commit, self._commit = self._commit, None
        if commit is not None:
            commit.result()

    def _begin(self, documents: dict[int, list[bytes]], offsets: dict[int, int]) -> None:
        producer, topic = self.producer, self.config.ocsf_topic
        try:
            producer.begin_transaction()
            for partition, values in documents.items():
                for value in values:
                    while True:
                        try:
                            producer.produce(topic, value, partition=partition)
                            break
                        except BufferError:
                            producer.poll(0.05)
            # only partitions that published: a partition still waiting for its checkpoint keeps its offset
            producer.send_offsets_to_transaction(
                [TopicPartition(self.config.sealed_topic, p, offsets[p]) for p in documents],
                self.consumer.consumer_group_metadata(), 30)
        except KafkaException as exc:
            self._failed(exc)

    def _end(self, counts: dict[int, int], unmapped: dict[int, int], unsigned: dict[int, int]) -> None:
        # in the committer thread: commit, then count what became visible
        try:
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            self._failed(exc)
        for class_uid, count in counts.items():
            PUBLISHED.labels(str(class_uid)).inc(count)
        for partition, count in unmapped.items():
            UNMAPPED.labels(str(partition)).inc(count)
            log.warning("audit.sealed[%d]: %d record(s) could not be mapped; published as unmapped records",
                        partition, count)
        for partition, count in unsigned.items():
            UNVERIFIABLE.labels(str(partition)).inc(count)

    def _failed(self, exc: KafkaException) -> None:
        error = exc.args[0]
        if error.txn_requires_abort():
            try:
                self.producer.abort_transaction(30)
            except KafkaException as abort_exc:
                log.warning("abort after a failed transaction failed too: %s", abort_exc)
        raise BridgeError(f"publishing to {self.config.ocsf_topic} failed: {error.str()}; restart the bridge, it "
                          "resumes from the committed offsets") from exc

    def _report_held(self) -> None:
        for partition, mapper in self.mappers.items():
            HELD.labels(str(partition)).set(mapper.held)

    def update_lag(self) -> None:
        """Refresh the lag gauge from the consumer's positions and cached high watermarks."""
        if self._closed:
            return
        for tp in self.consumer.position(self.consumer.assignment()):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                LAG.labels(str(tp.partition)).set(max(0, high - tp.offset))

    def close(self) -> None:
        """Leave the group once the transaction being committed has ended (nothing else is open)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._settle()
        finally:
            self._committer.shutdown(wait=True)
            self.consumer.close()
            self.producer.flush(10)


def run_bridge(*, config: BridgeConfig, metrics_port: int, metrics_addr: str | None = None,
               loglevel: str = "info") -> None:
    """Run one bridge worker (Faust) with its Prometheus endpoint until stopped."""
    from faust.worker import Worker

    from pipeline.metrics import serve_metrics
    from pipeline.sealer.app import worker_app

    settings = KafkaSettings.from_env()
    bridge = OcsfBridge(settings, config)
    app = worker_app(bridge, f"{config.app_id}-worker", settings.bootstrap)
    serve_metrics(metrics_port, metrics_addr)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
