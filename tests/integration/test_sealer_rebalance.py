"""A chain the sealer gave up (its transaction failed) and that a rebalance then hands back to it must be read
again. librdkafka keeps a partition's pause across a revoke and a new assignment: without an explicit resume
the chain was opened and then never fetched, a stall of minutes after a broker restart (issue 14)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer

from pipeline.config import KafkaSettings
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.output import TRANSACTIONAL_PREFIX, producer_config
from pipeline.wire.codec import default_codec
from tests.support.sealing import create_topics, delete_topics, start_sealer, wait_until_sealed

pytestmark = pytest.mark.stack


def _emit(stack, topics, partition: int, count: int, seed: int) -> None:
    raw = Producer(KafkaSettings.from_env(stack.env("producer")).client_config(**{"enable.idempotence": True}))
    for event in synthetic_events(count, seed=seed):
        raw.produce(topics.raw, default_codec().encode(event), partition=partition)
    assert raw.flush(60) == 0


def _wait_for_log(log, text: str, count: int, member: Consumer | None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} time(s) within {timeout}s"
        if member is not None:
            member.poll(0.2)  # stays in the group
        else:
            time.sleep(0.2)


def test_a_chain_given_up_before_a_rebalance_is_read_again_after_it(stack, tmp_path):
    topics = create_topics(stack, partitions=2)
    log = tmp_path / "sealer.log"
    worker = start_sealer(stack, topics, log=log)
    settings = KafkaSettings.from_env(stack.env("sealer"))
    member = None
    try:
        for partition in (0, 1):
            _emit(stack, topics, partition, 20, seed=140 + partition)
        wait_until_sealed(stack, topics, timeout=120)
        # a second member joins the worker's group: the worker keeps one of the two chains
        member = Consumer(settings.client_config(**{"group.id": topics.app_id, "enable.auto.commit": False}))
        member.subscribe([topics.raw])
        deadline = time.monotonic() + 120
        while not member.assignment():
            assert time.monotonic() < deadline, "the second member was never given a partition"
            member.poll(0.2)
        kept = ({0, 1} - {tp.partition for tp in member.assignment()}).pop()
        chain = f"{topics.raw}/{kept}"
        _wait_for_log(log, f"{chain}: opened at seq", 2, member)  # reopened after the join
        # another producer with the chain's transactional id fences the worker's: its next transaction fails
        fence = Producer(producer_config(settings, f"{TRANSACTIONAL_PREFIX}-{topics.raw}-{kept}"))
        fence.init_transactions(60)
        _emit(stack, topics, kept, 20, seed=150)
        _wait_for_log(log, f"{chain}: transaction failed", 1, member)
        given_up = time.monotonic()
        # the member leaves: the worker is given both chains again, the one it gave up (paused) included,
        # well before it would retake that chain by itself (15 s)
        member.close()
        member = None
        _wait_for_log(log, f"{chain}: opened at seq", 3, None)
        reopened_after = time.monotonic() - given_up
        for partition in (0, 1):
            _emit(stack, topics, partition, 20, seed=160 + partition)
        sealed = wait_until_sealed(stack, topics, timeout=120)
        assert worker.poll() is None, log.read_text()[-3000:]
        print(f"chain reopened {reopened_after:.1f}s after it was given up; all sealed")
        assert sum(len(entries) for entries in sealed.values()) > 0
    finally:
        if member is not None:
            member.close()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        delete_topics(stack, topics)
