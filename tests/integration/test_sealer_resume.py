"""The sealer's recovery on the real broker: the committed tail of a chain goes through the integrity
core's state machine, and a chain another writer touched is refused, naming the violation."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from pipeline.config import KafkaSettings
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.sealer.output import ChainWriter
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import KIND_HEADER, chain_id_for
from tests.support.sealing import create_topics, delete_topics

pytestmark = pytest.mark.stack

ISSUED = 1_800_000_000_000_000


@pytest.fixture()
def topics(stack):
    created = create_topics(stack, partitions=1)
    yield created
    delete_topics(stack, created)


def _writer(stack, topics) -> ChainWriter:
    return ChainWriter(KafkaSettings.from_env(stack.env("sealer")), raw_topic=topics.raw,
                       sealed_topic=topics.sealed, partition=0, signing_key=stack.signer())


def _events(count: int, seed: int) -> list[bytes]:
    codec = default_codec()
    return [codec.encode(event) for event in synthetic_events(count, seed=seed)]


def _seal_one_batch(stack, topics, events: list[bytes]) -> ChainSealer:
    writer = _writer(stack, topics)
    try:
        sealer = writer.open(timeout=60)
        records = [sealer.seal(value, offset, ISSUED + offset) for offset, value in enumerate(events)]
        writer.write([*records, sealer.checkpoint(ISSUED + len(events))])
        return sealer
    finally:
        writer.close()


def _append_behind_the_sealers_back(stack, topics, values: list[bytes]) -> None:
    # another writer holding the sealer's credentials, outside any transaction of the chain's id
    producer = Producer(KafkaSettings.from_env(stack.env("sealer")).client_config(**{"enable.idempotence": False}))
    for value in values:
        producer.produce(topics.sealed, value, chain_id_for(topics.raw, 0).encode(), partition=0,
                         headers=[(KIND_HEADER, b"event")])
    assert producer.flush(30) == 0


def test_an_intact_chain_resumes_where_its_last_checkpoint_says(stack, topics):
    sealed = _seal_one_batch(stack, topics, _events(5, seed=3))
    writer = _writer(stack, topics)
    try:
        resumed = writer.open(timeout=60)
    finally:
        writer.close()
    assert resumed.head == sealed.head
    assert resumed.prev_checkpoint_hash == sealed.prev_checkpoint_hash
    assert resumed.next_source_offset == 5


def _resume(stack, topics):
    """Open the chain as the sealer does after a restart: (the state it resumes from, the strays it skipped)."""
    writer = _writer(stack, topics)
    try:
        return writer.open(timeout=60), list(writer.strays)
    finally:
        writer.close()


def test_an_entry_appended_after_the_last_checkpoint_is_skipped_as_a_stray_never_extended(stack, topics):
    sealed = _seal_one_batch(stack, topics, _events(5, seed=4))
    # the attacker extends the chain correctly (the next seq, linked to the head): only the missing
    # signature gives it away, so the sealer resumes from its own signed checkpoint and names the stray
    forger = ChainSealer(chain_id_for(topics.raw, 0), 0, stack.signer(), sealed.head,
                         prev_checkpoint_hash=sealed.prev_checkpoint_hash)
    _append_behind_the_sealers_back(stack, topics, [forger.seal(_events(1, seed=5)[0], 5, ISSUED + 5).value])
    resumed, strays = _resume(stack, topics)
    assert resumed.head == sealed.head and resumed.next_source_offset == 5
    assert len(strays) == 1 and "seq 5 after the last valid checkpoint" in strays[0][1], strays


def test_a_forked_entry_after_the_last_checkpoint_is_named_and_skipped(stack, topics):
    sealed = _seal_one_batch(stack, topics, _events(3, seed=6))
    # a second history from genesis, appended after the sealer's checkpoint
    other = ChainSealer.resume(chain_id_for(topics.raw, 0), 0, stack.signer(), None)
    _append_behind_the_sealers_back(stack, topics, [other.seal(_events(1, seed=7)[0], 0, ISSUED).value])
    resumed, strays = _resume(stack, topics)
    assert resumed.head == sealed.head  # the chain goes on from seq 2, never from the forger's seq 0
    assert len(strays) == 1 and "seq 0 after the last valid checkpoint" in strays[0][1], strays


def test_entries_without_any_checkpoint_are_strays_not_a_chain_to_extend(stack, topics):
    # before the stray-tolerant resume, a partition with entries but no checkpoint resumed after them: a fork
    forger = ChainSealer.resume(chain_id_for(topics.raw, 0), 0, stack.signer(), None)
    events = _events(2, seed=8)
    _append_behind_the_sealers_back(stack, topics,
                                    [forger.seal(value, n, ISSUED + n).value for n, value in enumerate(events)])
    resumed, strays = _resume(stack, topics)
    assert resumed.head.seq == -1 and resumed.next_source_offset is None  # nothing signed: nothing to extend
    assert [why for _, why in strays] == [f"a event record of chain {chain_id_for(topics.raw, 0)!r} seq {n} "
                                          "before any valid checkpoint" for n in range(2)], strays
