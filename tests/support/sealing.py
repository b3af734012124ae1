"""Helpers for tests that run real sealer workers on topics of their own."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AclBinding, AclBindingFilter, AdminClient, NewTopic

from pipeline.config import KafkaSettings
from pipeline.dev.processes import terminate
from pipeline.dev.provision import acl_binding
from pipeline.integrity.keyring import load_keyring
from pipeline.permissions.topology import Grant
from pipeline.verifier.chains import ChainAuditor
from pipeline.wire.sealed import CHECKPOINT_KIND, COSIGNATURE_KIND, ENTRY_KINDS, HEAD_KIND, sealed_codecs

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Topics:
    """A raw/sealed topic pair made for one test, with the roles' grants on them."""

    raw: str
    sealed: str
    partitions: int
    app_id: str


def create_topics(stack, partitions: int = 3, replication_factor: int = 1) -> Topics:
    """Fresh raw and sealed topics, and ACLs for producer, sealer, verifier and sink on them; with more
    than one replica (a cluster) ``min.insync.replicas`` is one less, as for the audit topics."""
    suffix = secrets.token_hex(4)
    topics = Topics(f"test.raw.{suffix}", f"test.sealed.{suffix}", partitions, f"auditseal-sealer-test-{suffix}")
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    config = {"min.insync.replicas": str(replication_factor - 1)} if replication_factor > 1 else {}
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                                            config=config) for name in (topics.raw, topics.sealed)])
    for future in futures.values():
        future.result(timeout=30)
    grants = [
        ("User:producer", Grant("topic", topics.raw, "write")),
        ("User:producer", Grant("topic", topics.raw, "describe")),
        ("User:sealer", Grant("topic", topics.raw, "read")),
        ("User:sealer", Grant("topic", topics.raw, "describe")),
        ("User:sealer", Grant("topic", topics.sealed, "write")),
        ("User:sealer", Grant("topic", topics.sealed, "read")),
        ("User:sealer", Grant("topic", topics.sealed, "describe")),
        ("User:verifier", Grant("topic", topics.sealed, "read")),
        ("User:verifier", Grant("topic", topics.sealed, "describe")),
        ("User:sink", Grant("topic", topics.sealed, "read")),
        ("User:sink", Grant("topic", topics.sealed, "describe")),
    ]
    create_acls(stack, grants)
    return topics


def create_acls(stack, grants: list[tuple[str, Grant]], timeout: float = 60.0) -> None:
    """Create the ACLs of ``grants`` ((principal, grant) pairs) as the setup user and wait until every
    broker's authorizer serves them.

    An ACL reaches each broker's authorizer through the metadata log some time after CreateAcls returns;
    on a loaded machine a producer started right away was refused (TOPIC_AUTHORIZATION_FAILED). So each
    broker is asked in turn (DescribeAcls is answered from that broker's authorizer) until all show them.
    """
    setup = KafkaSettings.from_env(stack.setup_env("kafka"))
    admin = AdminClient(setup.client_config())
    bindings = [acl_binding(p, g) for p, g in grants]
    for future in admin.create_acls(bindings).values():
        future.result(timeout=30)
    brokers = sorted(admin.list_topics(timeout=30).brokers.values(), key=lambda b: b.id)
    deadline = time.monotonic() + timeout
    for broker in brokers:
        # one client per broker: bootstrap.servers naming that broker alone
        one = AdminClient(setup.client_config(**{"bootstrap.servers": f"{broker.host}:{broker.port}"}))
        while True:
            pending = [b for b in bindings if not _visible(one, b)]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker {broker.id} did not serve {len(pending)} new ACL(s) within {timeout}s, "
                                   f"first: {pending[0]}")
            time.sleep(0.2)


def _visible(admin: AdminClient, binding: AclBinding) -> bool:
    found = admin.describe_acls(AclBindingFilter(binding.restype, binding.name, binding.resource_pattern_type,
                                                 binding.principal, binding.host, binding.operation,
                                                 binding.permission_type)).result(timeout=30)
    return bool(found)


def delete_topics(stack, topics: Topics) -> None:
    """Remove a test's topics and their ACLs."""
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.delete_topics([topics.raw, topics.sealed]).values():
        future.result(timeout=30)
    filters = []
    for name in (topics.raw, topics.sealed):
        binding: AclBinding = acl_binding("User:sealer", Grant("topic", name, "read"))
        filters.append(AclBindingFilter(binding.restype, name, binding.resource_pattern_type, None, None,
                                        _any_operation(), _any_permission()))
    for future in admin.delete_acls(filters).values():
        future.result(timeout=30)


def _any_operation():
    from confluent_kafka.admin import AclOperation

    return AclOperation.ANY


def _any_permission():
    from confluent_kafka.admin import AclPermissionType

    return AclPermissionType.ANY


def free_port() -> int:
    """A TCP port nothing listens on now (for a process's metrics endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metric_samples(port: int, name: str) -> list[float]:
    """The values of every sample whose name starts with ``name`` on ``127.0.0.1:port/metrics``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]


def start_sealer(stack, topics: Topics, *, checkpoint_records: int = 2000, checkpoint_ms: int = 200,
                 log: Path | None = None, metrics_port: int = 0, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """A real sealer worker process (``auditseal seal``) as the sealer role, on the test's topics (``extra``:
    more options)."""
    env = dict(os.environ, **stack.env("sealer"))
    argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw, "--sealed-topic",
            topics.sealed, "--app-id", topics.app_id, "--metrics-port", str(metrics_port),
            "--checkpoint-records", str(checkpoint_records), "--checkpoint-ms", str(checkpoint_ms), *extra]
    output = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)


def stop_worker(worker: subprocess.Popen, timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL if the worker has not exited within ``timeout``."""
    terminate(worker, timeout)


def start_sink(stack, topics: Topics, *args: str, group: str, log: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen:
    """A real S3 sink process (``auditseal sink``) as the sink role on the test's sealed topic;
    ``args`` are more options (``--prefix``, ``--max-records``, ...); the group must start with auditseal-sink."""
    environment = dict(os.environ, **stack.env("sink"), **(env or {}))
    argv = [sys.executable, "-m", "pipeline.cli.main", "sink", "--topic", topics.sealed, "--group", group, *args]
    output = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, env=environment, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)


def read_sealed(stack, topics: Topics, timeout: float = 60) -> dict[int, list[tuple[int, bytes, dict]]]:
    """Every committed record of the sealed topic, per partition: (offset, kind, record)."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("verifier")).client_config(**{
        "group.id": f"auditseal-verifier-test-{secrets.token_hex(4)}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True}))
    codecs = sealed_codecs()
    out: dict[int, list] = defaultdict(list)
    try:
        ends = {}
        for p in range(topics.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topics.sealed, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topics.sealed, p, 0) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topics.sealed}: partitions {set(ends) - done} not finished")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    done.add(message.partition())
                    continue
                raise RuntimeError(message.error().str())
            kind, record = codecs.decode(message.value())
            out[message.partition()].append((message.offset(), kind, record))
    finally:
        consumer.close()
    # in partition order, whichever partition's first record arrived first: callers compare these
    return {p: out[p] for p in sorted(out)}


def audit(stack, sealed: dict[int, list], keyring_path=None) -> ChainAuditor:
    """Verify every chain of a sealed topic read with :func:`read_sealed`, against the stack's keyring or
    ``keyring_path``."""
    auditor = ChainAuditor(load_keyring(keyring_path or stack.keyring_file))
    for partition, records in sorted(sealed.items()):
        for offset, kind, record in records:
            location = f"sealed[{partition}]@{offset}"
            if kind == CHECKPOINT_KIND:
                auditor.checkpoint(record, location)
            elif kind == HEAD_KIND:
                auditor.head(record, location)
            elif kind == COSIGNATURE_KIND:
                continue  # the witnesses' word: pipeline.verifier.witnessing checks it against a policy
            else:
                auditor.entry(kind, record, location)
    auditor.finish()
    return auditor


def sealed_source_offsets(sealed: dict[int, list]) -> dict[int, list[int]]:
    """The raw offsets each chain sealed, in chain order."""
    return {p: [r["source_offset"] for _, kind, r in records if kind in ENTRY_KINDS]
            for p, records in sealed.items()}


def raw_end_offsets(stack, topics: Topics) -> dict[int, int]:
    """High watermark of each raw partition."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("sealer")).client_config(**{"group.id": topics.app_id}))
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topics.raw, p), timeout=30)[1]
                for p in range(topics.partitions)}
    finally:
        consumer.close()


def wait_until_sealed(stack, topics: Topics, timeout: float = 120) -> dict[int, list]:
    """Poll the sealed topic until every raw offset is sealed; return what was read."""
    ends = raw_end_offsets(stack, topics)
    deadline = time.monotonic() + timeout
    while True:
        sealed = read_sealed(stack, topics)
        offsets = sealed_source_offsets(sealed)
        if all((offsets.get(p) or [-1])[-1] >= end - 1 for p, end in ends.items() if end > 0):
            return sealed
        if time.monotonic() > deadline:
            progress = {p: (offsets.get(p) or [-1])[-1] + 1 for p in ends}
            raise TimeoutError(f"sealed {progress} of {ends} raw records within {timeout}s")
        time.sleep(1)


def seal_events(stack, topics: Topics, events, log: Path) -> dict[int, list]:
    """Emit ``events`` to the raw topic as the producer, run a sealer (a checkpoint per 40 records) until every
    raw record is sealed, stop it, and return what was sealed (as :func:`read_sealed`)."""
    from pipeline.producer.client import AuditProducer

    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        for event in events:
            producer.emit(event)
    sealer = start_sealer(stack, topics, checkpoint_records=40, checkpoint_ms=100, log=log)
    try:
        return wait_until_sealed(stack, topics)
    finally:
        sealer.send_signal(signal.SIGTERM)
        sealer.wait(60)
