"""Every origin's chains witnessed: one witness policy for all the sealers of a deployment, as the chart and the
compose file give it, and a sealer of a second origin topic (its own raw topic and sealed twin, its own sealer,
like ``sealer-access``) has its heads cosigned by a real omniwitness beside the first origin's.

``verify --policy`` then finds the second origin's archive INTACT; once the witness is stopped, that origin's new
heads are sealed without a cosignature, and ``verify --policy`` reports each of its chains (``unwitnessed_head``,
with the location of the head's object), while sealing never waited for the witness.
"""

from __future__ import annotations

import secrets
import time

import pytest

from pipeline.integrity.keyring import load_keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.policy import PolicyWitness, format_policy
from pipeline.wire.sealed import COSIGNATURE_KIND, HEAD_KIND
from tests.integration.test_witness_sealing import _archive, _verify, _wait_cosigned
from tests.support.sealing import create_topics, delete_topics, start_sealer, wait_until_sealed
from tests.support.witness import start_test_witness

pytestmark = pytest.mark.stack
LOG_NAME = "wo-test"
PER_PARTITION = 20  # two batches of ten per chain: heads at sizes 10 and 20


def _origins(topics) -> list[str]:
    return [f"{LOG_NAME}/{topics.raw}/{p}" for p in range(topics.partitions)]


@pytest.fixture()
def origins(stack):
    # two origin topics of one deployment, each with its sealed twin (like audit.raw and audit.access)
    created = [create_topics(stack, partitions=2), create_topics(stack, partitions=2)]
    yield created
    for topics in created:
        delete_topics(stack, topics)


@pytest.fixture()
def witness(stack, origins, tmp_path):
    key = load_keyring(stack.keyring_file).active
    chains = [origin for topics in origins for origin in _origins(topics)]
    running = start_test_witness(tmp_path / "witness", stack.ports()["kafka_client"], [],
                                 log_vkeys={o: log_verifier(key.public_key, o).vkey for o in chains})
    # one policy for every sealer of the deployment: the chains of both origin topics, one witness, quorum it
    policy = tmp_path / "policy.txt"
    policy.write_text(format_policy([log_verifier(key.public_key, o) for o in chains],
                                    [PolicyWitness("test-witness", running.verifier, running.client.url)],
                                    "test-witness"))
    running.policy_file = policy
    yield running
    running.stop()


def _emit(stack, topics, count: int, seed: int) -> None:
    from confluent_kafka import Producer

    from pipeline.config import KafkaSettings
    from pipeline.producer.synthetic import synthetic_events
    from pipeline.wire.codec import default_codec

    producer = Producer(KafkaSettings.from_env(stack.env("producer")).client_config(**{"enable.idempotence": True}))
    codec = default_codec()
    for partition in range(topics.partitions):
        for event in synthetic_events(count, seed=seed + partition):
            producer.produce(topics.raw, codec.encode(event), partition=partition)
    assert producer.flush(30) == 0


def test_a_second_origins_sealer_is_witnessed_and_its_unwitnessed_heads_are_reported(stack, origins, witness,
                                                                                    tmp_path):
    first, second = origins
    for n, topics in enumerate(origins):
        _emit(stack, topics, PER_PARTITION, seed=20 + 2 * n)
    sealers = [start_sealer(stack, topics, checkpoint_records=10, log=tmp_path / f"sealer-{n}.log",
                            extra=("--log-name", LOG_NAME, "--witness-policy", str(witness.policy_file),
                                   "--witness-interval", "1", "--heartbeat-interval", "2"))
               for n, topics in enumerate(origins)]
    try:
        for topics in origins:
            wait_until_sealed(stack, topics)
        _wait_cosigned(stack, first, PER_PARTITION, range(first.partitions), timeout=60)
        cosigned = _wait_cosigned(stack, second, PER_PARTITION, range(second.partitions), timeout=60)
        honest = f"wo-cosigned-{secrets.token_hex(3)}/"
        _archive(stack, second, cosigned, tmp_path, honest)
        code, report, output = _verify(stack, second, honest, "--policy", str(witness.policy_file),
                                       "--witness-tolerance", "0")
        assert code == 0 and report["intact"], output

        # the witness goes away: the second origin's new heads are sealed at once, and never cosigned
        witness.stop()
        started = time.monotonic()
        _emit(stack, second, PER_PARTITION // 2, seed=40)
        uncosigned = wait_until_sealed(stack, second, timeout=60)
        sealing_s = time.monotonic() - started
    finally:
        for sealer in sealers:
            sealer.terminate()
        for sealer in sealers:
            sealer.wait(30)
    for partition in range(second.partitions):
        records = uncosigned[partition]
        assert max(r["tree_size"] for _, k, r in records if k == HEAD_KIND) == PER_PARTITION + PER_PARTITION // 2
        assert max(r["tree_size"] for _, k, r in records if k == COSIGNATURE_KIND) == PER_PARTITION
    assert "is not a log of the witness policy" not in "".join(
        (tmp_path / f"sealer-{n}.log").read_text() for n in range(2))

    later = f"wo-uncosigned-{secrets.token_hex(3)}/"
    _archive(stack, second, uncosigned, tmp_path, later)
    code, report, output = _verify(stack, second, later, "--policy", str(witness.policy_file),
                                   "--witness-tolerance", "0")
    assert code == 1, output
    unwitnessed = [v for v in report["violations"] if v["kind"] == "unwitnessed_head"]
    assert {v["chain_id"] for v in unwitnessed} == {f"{second.raw}/{p}" for p in range(second.partitions)}, output
    assert {v["kind"] for v in report["violations"]} == {"unwitnessed_head"}, output
    for violation in unwitnessed:
        assert violation["seq"] == PER_PARTITION + PER_PARTITION // 2 - 1, violation
        assert violation["location"].startswith(f"{later}{second.sealed}/"), violation
    print(f"sealed {second.partitions * PER_PARTITION // 2} events with the witness down in {sealing_s:.1f}s")
