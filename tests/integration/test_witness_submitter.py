"""HeadSubmitter against a real omniwitness: heads cosigned off the sealing path, lag while the witness is down,
and a rewritten history refused and reported, never retried."""

import time

import pytest

from pipeline.integrity.history_tree import HistoryTree, history_tree_of
from pipeline.integrity.merkle import leaf_hash
from pipeline.integrity.note import NoteSigner
from pipeline.integrity.policy import PolicyWitness, format_policy, parse_policy
from pipeline.integrity.tree_head import TreeHead, sign_tree_head
from pipeline.witness.submitter import HeadSubmitter
from tests.support.witness import start_test_witness

pytestmark = pytest.mark.stack
ORIGINS = [f"auditseal/c3VibWl0dGVy/audit.raw/{n}" for n in range(4)]
LEAVES = [leaf_hash(b"entry %d" % n) for n in range(400)]


@pytest.fixture(scope="module")
def witness(stack, tmp_path_factory):
    running = start_test_witness(tmp_path_factory.mktemp("submitter-witness"), stack.ports()["kafka_client"], ORIGINS)
    yield running
    running.stop()


def head(log: NoteSigner, leaves, size: int) -> bytes:
    return sign_tree_head(TreeHead(log.name, size, history_tree_of(leaves[:size]).root), log)


def test_heads_are_cosigned_in_the_background_and_the_lag_returns_to_zero(witness):
    origin, log = ORIGINS[0], witness.logs[ORIGINS[0]]
    cosigned = []
    submitter = HeadSubmitter([witness.client], min_interval_s=0.0, on_cosigned=lambda o, n: cosigned.append(n))
    submitter.track(origin, HistoryTree())
    submitter.offer(origin, head(log, LEAVES, 10), LEAVES[:10])
    submitter.offer(origin, head(log, LEAVES, 25), LEAVES[10:25])  # only the newest is submitted
    submitter.submit_due()
    assert submitter.lag_seconds(origin) == 0.0
    submitter.offer(origin, head(log, LEAVES, 300), LEAVES[25:300])
    submitter.start(poll_s=0.05)
    try:
        deadline = time.monotonic() + 30
        while submitter.lag_seconds(origin) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        submitter.stop()
    policy = parse_policy(format_policy([log.verifier], [PolicyWitness("w", witness.verifier, None)], "w"))
    assert policy.check(submitter.cosigned_head(origin))[0].size == 300
    assert [parse_size(n) for n in cosigned] == [25, 300]


def parse_size(note) -> int:
    return int(note.text.split("\n")[1])


def test_a_witness_that_is_down_delays_cosigning_never_the_offer(witness):
    origin, log = ORIGINS[1], witness.logs[ORIGINS[1]]
    submitter = HeadSubmitter([witness.client], min_interval_s=0.0)
    submitter.track(origin, HistoryTree())
    submitter.offer(origin, head(log, LEAVES, 50), LEAVES[:50])
    submitter.submit_due()
    witness.stop()
    try:
        started = time.monotonic()
        for size in range(60, 400, 10):  # the sealer keeps offering heads while the witness is away
            submitter.offer(origin, head(log, LEAVES, size), LEAVES[size - 10:size])
        offering = time.monotonic() - started
        submitter.submit_due()
        assert submitter.lag_seconds(origin) > 0 and submitter.refusals(origin) == {}
        assert offering < 5.0  # 34 signatures and no network: far below one witness timeout
    finally:
        witness.start()
    submitter.submit_due()
    assert submitter.lag_seconds(origin) == 0.0
    assert parse_size(submitter.cosigned_head(origin)) == 390


def test_a_witness_down_for_many_heads_keeps_a_bounded_backlog_and_catches_up(witness):
    # 1,000 heads of 20 entries each while the witness is stopped: what the submitter holds stays O(log n) hashes
    # (not one per entry), no offer waits, and the real witness, restarted, cosigns the newest head with one
    # consistency proof from the size it holds
    origin, log = ORIGINS[3], witness.logs[ORIGINS[3]]
    leaves = [leaf_hash(b"down %d" % n) for n in range(20_020)]
    submitter = HeadSubmitter([witness.client], min_interval_s=0.0)
    submitter.track(origin, HistoryTree())
    tree = history_tree_of(leaves[:20])
    submitter.offer(origin, sign_tree_head(TreeHead(log.name, 20, tree.root), log), leaves[:20])
    submitter.submit_due()
    assert submitter.lag_seconds(origin) == 0.0
    witness.stop()
    held, slowest = [], 0.0
    try:
        for size in range(40, 20_021, 20):
            tree = tree.extended(leaves[size - 20:size])
            signed = sign_tree_head(TreeHead(log.name, size, tree.root), log)
            started = time.monotonic()
            submitter.offer(origin, signed, leaves[size - 20:size])
            slowest = max(slowest, time.monotonic() - started)
            if size % 2000 == 0:
                submitter.submit_due()  # the witness is down: refused by the network, retried later
                held.append(submitter.held_hashes(origin))
        assert submitter.lag_seconds(origin) > 0 and submitter.refusals(origin) == {}
        assert submitter.behind(origin) == 20_000
    finally:
        witness.start()
    # 20,000 entries behind: a handful of hashes, the same order at 2,000 as at 20,000 entries
    assert max(held) <= 2 * (20_020).bit_length() and held[-1] <= held[0] + 2 * 4, held
    assert slowest < 1.0, slowest  # a fold of 20 hashes; a generous bound against a busy machine
    submitter.submit_due()
    assert submitter.lag_seconds(origin) == 0.0 and submitter.behind(origin) == 0
    assert parse_size(submitter.cosigned_head(origin)) == 20_020
    policy = parse_policy(format_policy([log.verifier], [PolicyWitness("w", witness.verifier, None)], "w"))
    assert policy.check(submitter.cosigned_head(origin))[0].size == 20_020


def test_a_rewritten_history_is_refused_reported_and_not_retried(witness):
    origin, log = ORIGINS[2], witness.logs[ORIGINS[2]]
    refused = []
    honest = HeadSubmitter([witness.client], min_interval_s=0.0)
    honest.track(origin, HistoryTree())
    honest.offer(origin, head(log, LEAVES, 100), LEAVES[:100])
    honest.submit_due()
    # the operator with the real key rebuilds the chain with entry 5 replaced and submits from scratch
    rewritten = list(LEAVES)
    rewritten[5] = leaf_hash(b"what the insider wanted the log to say")
    forger = HeadSubmitter([witness.client], min_interval_s=0.0, on_refused=lambda o, e: refused.append(e))
    forger.track(origin, HistoryTree())
    forger.offer(origin, head(log, rewritten, 150), rewritten[:150])
    forger.submit_due()
    assert len(refused) == 1 and refused[0].status in (409, 422)
    assert witness.client.name in forger.refusals(origin)
    forger.submit_due()  # not asked again
    assert len(refused) == 1 and forger.lag_seconds(origin) > 0
