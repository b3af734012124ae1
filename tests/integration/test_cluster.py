"""A three-node KRaft cluster (``auditseal dev up --brokers 3``): the leader of a raw partition and then the
leader of a sealed partition are killed with SIGKILL in the middle of a stream and restarted; every event the
producer had acknowledged is sealed exactly once and archived exactly once, and every chain verifies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from pipeline.config import KafkaSettings
from pipeline.dev.cluster import CLUSTER_MIN_INSYNC, CLUSTER_REPLICATION, NODE_PORT_OFFSET
from pipeline.dev.stack import LocalStack
from pipeline.producer.client import AuditProducer, UndeliveredEventsError
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import EVENT_KIND
from pipeline.wire.topics import RAW_TOPIC
from tests.support.archive import check_archive, wait_for_archive
from tests.support.sealing import (
    REPO,
    audit,
    create_topics,
    sealed_source_offsets,
    start_sealer,
    start_sink,
    wait_until_sealed,
)

pytestmark = [pytest.mark.stack, pytest.mark.cluster]


def _free_base(start: int = 29400) -> int:
    """A port base whose 4 stack ports and 6 node ports (base+10..) are all free."""
    for base in range(start, start + 600, 20):
        ports = [*range(base, base + 4), *range(base + NODE_PORT_OFFSET, base + NODE_PORT_OFFSET + 6)]
        free = True
        for port in ports:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise RuntimeError("no free port range for the cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster") / "stack"
    env = dict(os.environ, AUDITSEAL_STACK_DIR=str(root), AUDITSEAL_DEV_PORT_BASE=str(_free_base()))
    up = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "dev", "up", "--brokers", "3", "--no-check"],
                        env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    stack = LocalStack(root=root)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield stack
    finally:
        subprocess.run([sys.executable, "-m", "pipeline.cli.main", "dev", "down", "--purge"], env=env, cwd=REPO,
                       capture_output=True, timeout=300)


def _leader(stack, topic: str, partition: int) -> int:
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    return admin.list_topics(topic, timeout=30).topics[topic].partitions[partition].leader


def _kill_and_restart(stack, node_id: int, down_for: float) -> None:
    node = next(n for n in stack.kafka_nodes() if n.node_id == node_id)
    pid = node.process.pid()
    assert pid is not None, f"node {node_id} is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while node.process.pid() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(down_for)
    environment = dict(os.environ, AUDITSEAL_STACK_DIR=str(stack.root))
    restart = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "dev", "up", "--no-check"], env=environment,
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stdout + restart.stderr


class Stream:
    """Emits synthetic events in batches until stopped; remembers the ids of the acknowledged ones."""

    def __init__(self, stack, topic: str) -> None:
        self.producer = AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topic)
        self.acknowledged: list[str] = []
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        events = synthetic_events(10 ** 6, seed=14)
        while not self.stop.is_set():
            batch = [next(events) for _ in range(50)]
            results = [self.producer.emit(event) for event in batch]
            try:
                self.producer.flush(60)
            except UndeliveredEventsError:
                pass  # counted below, event by event
            for event, result in zip(batch, results):
                if result.done() and result.error is None:
                    self.acknowledged.append(str(event["event_id"]))
                else:
                    self.failed += 1
            time.sleep(0.1)

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(120)
        self.producer.close()


def test_leaders_killed_mid_stream_lose_and_duplicate_nothing(cluster, tmp_path):
    stack = cluster
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    raw = admin.list_topics(RAW_TOPIC, timeout=30).topics[RAW_TOPIC]
    assert len(stack.kafka_nodes()) == 3 and all(len(p.replicas) == CLUSTER_REPLICATION for p in raw.partitions.values())
    configs = admin.describe_configs([ConfigResource(ResourceType.TOPIC, RAW_TOPIC)])
    assert next(iter(configs.values())).result(timeout=30)["min.insync.replicas"].value == str(CLUSTER_MIN_INSYNC)

    topics = create_topics(stack, partitions=2, replication_factor=3)
    sealer = start_sealer(stack, topics, log=tmp_path / "sealer.log")
    sink = start_sink(stack, topics, "--max-records", "200", "--max-age-ms", "1000", "--metrics-port", "0",
                      group=f"auditseal-sink-{topics.app_id}", log=tmp_path / "sink.log")
    try:
        with Stream(stack, topics.raw) as stream:
            time.sleep(8)
            _kill_and_restart(stack, _leader(stack, topics.raw, 0), down_for=3)
            time.sleep(5)
            _kill_and_restart(stack, _leader(stack, topics.sealed, 0), down_for=3)
            time.sleep(5)
        assert sealer.poll() is None, (tmp_path / "sealer.log").read_text()[-3000:]
        assert sink.poll() is None, (tmp_path / "sink.log").read_text()[-3000:]
        assert len(stream.acknowledged) > 500, (len(stream.acknowledged), stream.failed)

        sealed = wait_until_sealed(stack, topics, timeout=120)
        auditor = audit(stack, sealed)
        assert not auditor.violations, auditor.violations[:5]
        for partition, offsets in sealed_source_offsets(sealed).items():
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"raw[{partition}] gap or repeat"
        codec = default_codec()
        sealed_ids = [str(codec.decode(record["event"])["event_id"])
                      for entries in sealed.values() for _, kind, record in entries if kind == EVENT_KIND]
        assert len(sealed_ids) == len(set(sealed_ids)), "an event was sealed twice"
        assert set(stream.acknowledged) <= set(sealed_ids), "an acknowledged event was not sealed"

        expected = {p: [offset for offset, _, _ in entries] for p, entries in sealed.items()}
        archive = wait_for_archive(stack, topics.sealed, expected, timeout=120)
        archived = check_archive(stack, archive, sealed)  # every sealed record in exactly one object
        assert not archived.violations, archived.violations[:5]
    finally:
        for process in (sealer, sink):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
