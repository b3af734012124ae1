"""The Faust app of the sealer: ``auditseal seal`` runs one worker.

The agent takes raw events in batches (at most ``max_batch`` events, at most ``batch_interval``
seconds apart), groups them by partition, and for each chain seals the batch and writes it with its
checkpoint in one transaction (:mod:`pipeline.sealer.output`). Faust owns consumption and the
consumer group; correctness never depends on Faust's committed offsets: a chain resumes from its
own last checkpoint, skipping raw records it already sealed and seeking back if Faust is ahead.

Faust's own ``processing_guarantee="exactly_once"`` is not used: it is known to duplicate records
after a kill and to crash on rebalance (faust-streaming issues #517, #323, #177).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faust
from mode import CrashingSupervisor
from faust.types import TP
from prometheus_client import Counter, Gauge, Histogram

from pipeline.config import KafkaSettings
from pipeline.integrity.keyring import SigningKey
from pipeline.sealer.chain_sealer import ChainSealer, SealedRecord
from pipeline.sealer.output import ChainFencedError, ChainWriter
from pipeline.topology import RAW_TOPIC, SEALED_TOPIC

log = logging.getLogger(__name__)

SEALED = Counter("auditseal_sealer_events_sealed_total", "Raw records sealed into a chain (events and rejections)",
                 ["chain"])
REJECTED = Counter("auditseal_sealer_rejections_total", "Raw records sealed as rejections", ["chain"])
CHECKPOINTS = Counter("auditseal_sealer_checkpoints_total", "Signed checkpoints written", ["chain"])
SKIPPED = Counter("auditseal_sealer_redelivered_skipped_total",
                  "Raw records seen again after a restart or rebalance and skipped (already sealed)", ["chain"])
FENCED = Counter("auditseal_sealer_chain_fenced_total", "Chains given up after a fenced or failed transaction",
                 ["chain"])
LAG = Gauge("auditseal_sealer_consumer_lag", "Raw records not yet sealed (high watermark - next offset)", ["chain"])
LATENCY = Histogram("auditseal_sealer_seal_latency_seconds", "Raw record timestamp to committed seal",
                    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


@dataclass(frozen=True)
class SealerConfig:
    """Tunables of one worker; defaults documented in the README."""

    app_id: str = "auditseal-sealer"
    raw_topic: str = RAW_TOPIC
    sealed_topic: str = SEALED_TOPIC
    max_batch: int = 2000
    batch_interval: float = 0.2


@dataclass
class _Chain:
    writer: ChainWriter
    sealer: ChainSealer
    resync_from: int | None = None


class Sealer:
    """The chains this worker owns, opened lazily on their first raw event and dropped on revocation."""

    def __init__(self, app: faust.App, settings: KafkaSettings, signing_key: SigningKey, config: SealerConfig) -> None:
        self.app = app
        self.settings = settings
        self.signing_key = signing_key
        self.config = config
        self.chains: dict[int, _Chain] = {}
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="chain")

    async def seal_batch(self, events: list) -> None:
        """Seal one batch of Faust events, one transaction per chain, chains in parallel."""
        by_partition: dict[int, list] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event.message)
        loop = asyncio.get_running_loop()
        jobs = []
        for partition, messages in by_partition.items():
            chain = self.chains.get(partition)
            if chain is None:
                if TP(self.config.raw_topic, partition) not in self.app.consumer.assignment():
                    continue  # revoked while buffered: the new owner seals these
                chain = await self._open(partition, messages[0].offset)
            jobs.append(loop.run_in_executor(self.executor, self._seal_and_write, partition, chain, messages))
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for result in results:
            if isinstance(result, ChainFencedError):
                log.warning("%s", result)
            elif isinstance(result, BaseException):
                raise result

    async def _open(self, partition: int, first_offset: int) -> _Chain:
        writer = ChainWriter(self.settings, raw_topic=self.config.raw_topic, sealed_topic=self.config.sealed_topic,
                             partition=partition, signing_key=self.signing_key,
                             group_prefix=self.config.app_id)
        sealer = await asyncio.get_running_loop().run_in_executor(self.executor, writer.open)
        chain = _Chain(writer, sealer)
        if sealer.next_source_offset is None:
            sealer.next_source_offset = writer.raw_low_watermark
        if first_offset > sealer.next_source_offset:
            # Faust resumed past what is sealed (an offset committed after a crash): go back
            log.info("%s: resuming at raw offset %d, Faust was at %d", sealer.chain_id,
                     sealer.next_source_offset, first_offset)
            chain.resync_from = sealer.next_source_offset
            await self.app.consumer.seek(TP(self.config.raw_topic, partition), sealer.next_source_offset)
        self.chains[partition] = chain
        log.info("%s: opened at seq %d, next raw offset %d", sealer.chain_id, sealer.head.seq,
                 sealer.next_source_offset)
        return chain

    def _seal_and_write(self, partition: int, chain: _Chain, messages: list) -> None:
        sealer = chain.sealer
        label = sealer.chain_id
        records: list[SealedRecord] = []
        skipped = 0
        for message in messages:
            offset = message.offset
            expected = sealer.next_source_offset
            if chain.resync_from is not None:
                if offset != chain.resync_from:
                    skipped += 1  # buffered before the seek; it comes again from the seek position
                    continue
                chain.resync_from = None
            if expected is not None and offset < expected:
                skipped += 1
                continue
            records.append(sealer.seal(message.value, offset, int(message.timestamp * 1_000_000)))
        if skipped:
            SKIPPED.labels(label).inc(skipped)
        if not records:
            return
        rejected = sum(1 for r in records if r.kind == b"rejection")
        records.append(sealer.checkpoint(time.time_ns() // 1000))
        try:
            chain.writer.write(records)
        except ChainFencedError:
            self.chains.pop(partition, None)
            FENCED.labels(label).inc()
            raise
        now = time.time()
        for record in records[:-1]:
            LATENCY.observe(max(0.0, now - record.source_timestamp_micros / 1_000_000))
        SEALED.labels(label).inc(len(records) - 1)
        REJECTED.labels(label).inc(rejected)
        CHECKPOINTS.labels(label).inc()

    async def drop(self, partitions) -> None:
        """Let chains go (revoked partitions); their producers are closed off the event loop."""
        loop = asyncio.get_running_loop()
        for tp in partitions:
            if tp.topic == self.config.raw_topic:
                chain = self.chains.pop(tp.partition, None)
                if chain is not None:
                    await loop.run_in_executor(self.executor, chain.writer.close)

    def update_lag(self) -> None:
        """Refresh the lag gauge from the consumer's high watermarks."""
        for partition, chain in list(self.chains.items()):
            highwater = self.app.consumer.highwater(TP(self.config.raw_topic, partition))
            if highwater is not None and chain.sealer.next_source_offset is not None:
                LAG.labels(chain.sealer.chain_id).set(max(0, highwater - chain.sealer.next_source_offset))


def create_app(settings: KafkaSettings, signing_key: SigningKey, config: SealerConfig = SealerConfig()) -> faust.App:
    """The Faust app of one sealer worker, authenticated as ``settings`` (the sealer role)."""
    ssl_context = ssl.create_default_context(cafile=settings.ca_file)
    app = faust.App(
        config.app_id,
        broker=f"kafka://{settings.bootstrap}",
        broker_credentials=faust.SASLCredentials(
            username=settings.username, password=settings.password, ssl_context=ssl_context,
            mechanism="SCRAM-SHA-512"),
        topic_disable_leader=True,
        topic_allow_declare=False,
        web_enabled=False,
        store="memory://",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # a dead worker's chains move after 10 s rather than Faust's default 60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        stream_buffer_maxsize=config.max_batch * 2,
        autodiscover=False,
        # an error we did not plan for stops the worker (non-zero exit) instead of leaving it idle;
        # whatever restarts it resumes every chain from its last checkpoint
        agent_supervisor=CrashingSupervisor,
    )
    raw = app.topic(config.raw_topic, value_serializer="raw", key_serializer="raw", internal=False)
    sealer = Sealer(app, settings, signing_key, config)
    app.sealer = sealer  # type: ignore[attr-defined]

    @app.agent(raw, name="seal")
    async def seal(stream: faust.StreamT) -> None:
        async for events in stream.take_events(config.max_batch, within=config.batch_interval):
            await sealer.seal_batch(events)

    @app.timer(interval=5.0)
    async def report_lag() -> None:
        sealer.update_lag()

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked, **kwargs) -> None:
        await sealer.drop(revoked)

    return app
