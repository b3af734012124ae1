"""The SIEM path on the real stack: the bridge publishes every sealed record once, in chain order, as
OCSF JSON whose evidence re-verifies; a kill -9 loses and repeats nothing; the siem role can read but
not write or hijack the bridge; Kafka Connect (standalone, JsonConverter, FileStream sink) reads it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.dev.cache import cache_dir
from pipeline.dev.connect import CONNECT_PORT_OFFSET, StandaloneConnect, ensure_connect_jars, worker_properties
from pipeline.dev.processes import port_is_free
from pipeline.integrity.keyring import load_keyring
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import SealedRecord
from pipeline.sealer.output import ChainWriter
from pipeline.siem import ocsf
from pipeline.siem.evidence import verify_record
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import EVENT_KIND
from tests.support.archive import seal_in_process
from tests.support.ocsf_schema import ocsf_errors
from tests.support.sealing import REPO, create_topics, delete_topics
from tests.support.siem import create_ocsf_topic, delete_ocsf_topic, start_bridge

pytestmark = pytest.mark.stack


@pytest.fixture()
def siem_topics(stack):
    """Raw/sealed test topics, an OCSF topic beside them, and the siem-bridge and siem roles' grants on them."""
    topics = create_topics(stack, partitions=3)
    ocsf_topic = create_ocsf_topic(stack, topics)
    yield topics, ocsf_topic
    delete_ocsf_topic(stack, ocsf_topic)
    delete_topics(stack, topics)


def _start_bridge(stack, topics, ocsf_topic: str, app_id: str, log: Path) -> subprocess.Popen:
    return start_bridge(stack, topics, ocsf_topic, app_id, log)


def _read_ocsf(stack, topic: str, expected: int, timeout: float = 180) -> dict[int, list[dict]]:
    """Every committed OCSF document of ``topic`` per partition, read as the siem role, once ``expected`` are there."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("siem")).client_config(**{
        "group.id": f"auditseal-siem-test-{secrets.token_hex(4)}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "auto.offset.reset": "earliest"}))
    out: dict[int, list[dict]] = defaultdict(list)
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        while sum(map(len, out.values())) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                if message.error():
                    raise KafkaException(message.error())
                out[message.partition()].append(json.loads(message.value()))
        # a little longer: a duplicate would arrive after the expected count
        end = time.monotonic() + 3
        while time.monotonic() < end:
            for message in consumer.consume(1000, 0.5):
                out[message.partition()].append(json.loads(message.value()))
    finally:
        consumer.close()
    return out


def _sealed_offsets(stack, topic: str) -> dict[int, list[int]]:
    """The offsets of every committed record of the sealed topic, per partition (readable or not)."""
    consumer = Consumer(KafkaSettings.from_env(stack.env("siem")).client_config(**{
        "group.id": f"auditseal-siem-test-{secrets.token_hex(4)}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True}))
    out: dict[int, list[int]] = defaultdict(list)
    try:
        ends = {}
        for p in range(3):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        done: set[int] = set()
        while done != set(ends):
            for message in consumer.consume(1000, 1.0):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition())
                        continue
                    raise KafkaException(message.error())
                out[message.partition()].append(message.offset())
    finally:
        consumer.close()
    return out


def _assert_once_in_chain_order(published: dict[int, list[dict]], sealed: dict[int, list[int]], keyring) -> None:
    for partition, offsets in sealed.items():
        documents = published.get(partition, [])
        found = [d["unmapped"]["auditseal"]["sealed"]["offset"] for d in documents]
        assert found == offsets, f"partition {partition}: not each sealed record once, in offset order"
        for document in documents:
            if document["class_uid"] != ocsf.BASE_EVENT:
                verify_record(document, keyring)


def test_bridge_publishes_every_sealed_record_once_through_kill_9(stack, siem_topics, tmp_path):
    topics, ocsf_topic = siem_topics
    keyring = load_keyring(stack.keyring_file)
    app_id = f"auditseal-ocsf-bridge-test-{secrets.token_hex(4)}"
    seal_in_process(stack, topics, 1500, seed=11, checkpoint_every=100)
    bridge = _start_bridge(stack, topics, ocsf_topic, app_id, tmp_path / "bridge.log")
    try:
        # killed while the second round of batches is being sealed and published
        sealing = threading.Thread(target=seal_in_process, args=(stack, topics, 1500),
                                   kwargs={"seed": 12, "checkpoint_every": 50, "pause": 0.3})
        sealing.start()
        time.sleep(4)
        bridge.send_signal(signal.SIGKILL)
        bridge.wait(30)
        sealing.join(120)
        seal_in_process(stack, topics, 600, seed=13, checkpoint_every=50)
        bridge = _start_bridge(stack, topics, ocsf_topic, app_id, tmp_path / "bridge.log")
        sealed = _sealed_offsets(stack, topics.sealed)
        expected = sum(map(len, sealed.values()))
        published = _read_ocsf(stack, ocsf_topic, expected)
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(60)
    _assert_once_in_chain_order(published, sealed, keyring)
    documents = [d for partition in published.values() for d in partition]
    classes = {d["class_uid"] for d in documents}
    assert {ocsf.API_ACTIVITY, ocsf.AUTHENTICATION, ocsf.APPLICATION_ERROR, ocsf.EVENT_LOG_ACTIVITY} <= classes
    for document in documents[::25]:  # the schema check costs ~ms a document; every class is sampled
        assert ocsf_errors(document) == []


def test_unreadable_sealed_record_is_published_as_unmapped_not_dropped(stack, siem_topics, tmp_path):
    topics, ocsf_topic = siem_topics
    seal_in_process(stack, topics, 30, seed=21, checkpoint_every=10, garbled=0)
    # a record no schema of ours describes (a future version, say) inside a batch the sealer role writes
    future_record = b"\xc3\x01" + bytes.fromhex("feedfacecafebeef") + b"a record of a future schema"
    writer = ChainWriter(KafkaSettings.from_env(stack.env("sealer")), raw_topic=topics.raw,
                         sealed_topic=topics.sealed, partition=1, signing_key=stack.signer())
    try:
        sealer = writer.open()
        now = int(time.time() * 1_000_000)
        raw = [default_codec().encode(event) for event in synthetic_events(4, seed=22)]
        batch = [sealer.seal(value, 100 + n, now) for n, value in enumerate(raw)]
        writer.write(batch[:2] + [SealedRecord(EVENT_KIND, future_record)] + batch[2:] + [sealer.checkpoint(now)])
    finally:
        writer.close()
    app_id = f"auditseal-ocsf-bridge-test-{secrets.token_hex(4)}"
    bridge = _start_bridge(stack, topics, ocsf_topic, app_id, tmp_path / "bridge.log")
    try:
        sealed = _sealed_offsets(stack, topics.sealed)
        expected = sum(map(len, sealed.values()))
        published = _read_ocsf(stack, ocsf_topic, expected)
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(60)
    assert sum(map(len, published.values())) == expected
    unmapped = [d for d in published[1] if d["class_uid"] == ocsf.BASE_EVENT]
    assert len(unmapped) == 1 and ocsf_errors(unmapped[0]) == []
    assert unmapped[0]["unmapped"]["auditseal"]["value_sha256"] == hashlib.sha256(future_record).hexdigest()
    # in its place: after the batch's first two entries, and those around it still verify
    position = published[1].index(unmapped[0])
    assert published[1][position - 1]["unmapped"]["auditseal"]["seq"] + 1 == \
        published[1][position + 1]["unmapped"]["auditseal"]["seq"]
    keyring = load_keyring(stack.keyring_file)
    for document in published[1]:
        if document is not unmapped[0]:
            verify_record(document, keyring)


def test_siem_role_cannot_write_the_ocsf_topic_nor_join_the_bridge_group(stack, siem_topics):
    _, ocsf_topic = siem_topics
    settings = KafkaSettings.from_env(stack.env("siem"))
    producer = Producer(settings.client_config(**{"message.timeout.ms": 10000}))
    errors = []
    producer.produce(ocsf_topic, b"{}", callback=lambda err, _msg: errors.append(err))
    producer.flush(20)
    assert errors and errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    consumer = Consumer(settings.client_config(**{"group.id": "auditseal-ocsf-bridge", "enable.auto.commit": False}))
    try:
        consumer.subscribe([ocsf_topic])
        refused = None
        deadline = time.monotonic() + 30
        while refused is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error() is not None:
                refused = message.error()
        assert refused is not None and refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    finally:
        consumer.close()


def test_export_from_kafka_writes_one_document_per_sealed_record(stack, siem_topics, tmp_path):
    topics, _ = siem_topics
    seal_in_process(stack, topics, 400, seed=31, checkpoint_every=50)
    out = tmp_path / "export.jsonl"
    env = dict(os.environ, **stack.env("siem"))
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "export", "--from", "kafka", "--topic",
                             topics.sealed, "--out", str(out)], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    sealed = _sealed_offsets(stack, topics.sealed)
    documents = [json.loads(line) for line in out.read_text().splitlines()]
    by_partition = defaultdict(list)
    for document in documents:
        by_partition[document["unmapped"]["auditseal"]["sealed"]["partition"]].append(document)
    _assert_once_in_chain_order(by_partition, sealed, load_keyring(stack.keyring_file))
    assert "wrote" in result.stderr and "0 unmapped" in result.stderr


def test_kafka_connect_reads_every_record_as_an_ocsf_json_document(stack, siem_topics, tmp_path):
    """Kafka Connect 4.4.0 standalone as the siem role over SASL_SSL. Connector ``ocsf-json`` uses the
    JsonConverter (schemas.enable=false), the converter SIEM sink connectors use: it must parse every
    record (errors.tolerance=none stops the task on the first it cannot). The FileStream sink prints each
    value's Java ``toString()``, a Map rendering for JsonConverter's output, so the byte-exact documents
    are checked from a second connector, ``ocsf-text``, on the same worker with the StringConverter."""
    topics, ocsf_topic = siem_topics
    keyring = load_keyring(stack.keyring_file)
    seal_in_process(stack, topics, 600, seed=41, checkpoint_every=100)
    app_id = f"auditseal-ocsf-bridge-test-{secrets.token_hex(4)}"
    bridge = _start_bridge(stack, topics, ocsf_topic, app_id, tmp_path / "bridge.log")
    try:
        sealed = _sealed_offsets(stack, topics.sealed)
        expected = sum(map(len, sealed.values()))
        assert sum(map(len, _read_ocsf(stack, ocsf_topic, expected).values())) == expected
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(60)
    libs, plugins = ensure_connect_jars(cache_dir())
    env = stack.env("siem")
    port = stack.ports()["kafka_client"] + CONNECT_PORT_OFFSET
    assert port_is_free("127.0.0.1", port), f"Kafka Connect's REST port {port} is taken"
    json_file, text_file = tmp_path / "ocsf-json.txt", tmp_path / "ocsf-text.txt"
    group = f"auditseal-siem-connect-{secrets.token_hex(4)}"
    common = {"connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector", "tasks.max": "1",
              "topics": ocsf_topic, "errors.tolerance": "none"}
    connect = StandaloneConnect(
        libs, tmp_path / "connect",
        worker_properties(bootstrap=env["AUDITSEAL_BOOTSTRAP"], username="siem",
                          password=env["AUDITSEAL_SASL_PASSWORD"], ca_file=env["AUDITSEAL_CA_FILE"],
                          rest_port=port, offsets_file=tmp_path / "connect.offsets", plugin_path=plugins),
        [{**common, "name": "ocsf-json", "file": str(json_file), "consumer.override.group.id": f"{group}-json"},
         {**common, "name": "ocsf-text", "file": str(text_file), "consumer.override.group.id": f"{group}-text",
          "value.converter": "org.apache.kafka.connect.storage.StringConverter"}])
    connect.start()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            lines = [_lines(json_file), _lines(text_file)]
            if all(len(found) >= expected for found in lines):
                break
            time.sleep(1)
        time.sleep(3)  # a duplicate would arrive after the expected count
        json_lines, text_lines = _lines(json_file), _lines(text_file)
    finally:
        connect.stop()
    log = connect.log_file.read_text()
    assert "Task threw an uncaught and unrecoverable exception" not in log, log[-3000:]
    assert len(json_lines) == len(text_lines) == expected
    # the JsonConverter parsed each document into a structure whose uid is the record's
    uid_pattern = re.compile(r"original_event_uid=|uid=(audit\.raw/|test\.raw\.)")
    assert all(line.startswith("{") and uid_pattern.search(line) for line in json_lines)
    documents = [json.loads(line) for line in text_lines]
    by_partition = defaultdict(list)
    for document in documents:
        assert ocsf_errors(document) == []
        by_partition[document["unmapped"]["auditseal"]["sealed"]["partition"]].append(document)
    _assert_once_in_chain_order(by_partition, sealed, keyring)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
