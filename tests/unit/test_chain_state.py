"""The one chain-and-checkpoint state machine: every violation kind of entries and checkpoints,
its position and its message, and the vocabulary the reports, README and tests rely on."""

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from pipeline.integrity.chain import GENESIS_HASH, GENESIS_SEQ, ChainHead, chain_hash
from pipeline.integrity.chain_state import ChainState, Violation, ViolationKind
from pipeline.integrity.checkpoint import Checkpoint, build_checkpoint, checkpoint_hash, sign_checkpoint
from pipeline.integrity.history_tree import HistoryTree
from pipeline.integrity.keyring import Keyring, SigningKey, generate_signing_key
from pipeline.integrity.merkle import record_tree_root

CHAIN_ID = "audit.raw/0"
HERE = "object offset 7"
PAYLOADS = [f"event {i}: user{i} read doc{i}".encode() for i in range(6)]
KEY = SigningKey.from_seed(bytes(range(32)))
ISSUED_AT = 1_700_000_000_000_000
KEYRING = Keyring().rotate(KEY.public_key, 0)


@dataclasses.dataclass(frozen=True)
class Link:
    """The integrity fields one sealed record carries, as read back."""

    chain_id: str
    seq: int
    prev_hash: bytes
    hash: bytes


def sealed_chain(payloads: list[bytes]) -> list[Link]:
    """The integrity fields a sealer would attach to these payloads, in order."""
    head = ChainHead.genesis(CHAIN_ID)
    links = []
    for payload in payloads:
        following = head.next(payload)
        links.append(Link(CHAIN_ID, following.seq, head.hash, following.hash))
        head = following
    return links


def feed(state: ChainState, link: Link, payload: bytes) -> Sequence[Violation]:
    return state.entry(link.chain_id, link.seq, link.prev_hash, link.hash, payload, HERE)


def verified(links: list[Link], payloads: list[bytes]) -> ChainState:
    """The state after an intact prefix (asserting it is intact)."""
    state = ChainState(CHAIN_ID)
    for link, payload in zip(links, payloads, strict=True):
        assert feed(state, link, payload) == ()
    return state


def kinds(found: Sequence[Violation]) -> list[str]:
    return [violation.kind for violation in found]


def test_the_vocabulary_is_the_one_reports_use() -> None:
    # these strings are in JSON reports, the README and the integration tests: they never change
    assert {kind.name: kind.value for kind in ViolationKind} == {
        "ALTERED": "altered_record", "GAP": "gap", "DUPLICATE": "duplicate", "REORDER": "reorder",
        "FORK": "fork", "WRONG_CHAIN": "wrong_chain", "MALFORMED": "malformed_record",
        "BAD_SIGNATURE": "bad_signature", "UNKNOWN_KEY": "unknown_key", "KEY_NOT_VALID": "key_not_valid",
        "COMPROMISED_KEY": "compromised_key", "CHECKPOINT_MISMATCH": "checkpoint_mismatch", "CHECKPOINT_CHAIN": "checkpoint_chain_broken",
        "UNCHECKPOINTED": "unsigned_tail", "UNACCOUNTED_OFFSETS": "unaccounted_offsets",
        "ORIGIN_MISMATCH": "origin_mismatch", "LOST_RECORDS": "lost_records", "HEAD_MISMATCH": "head_mismatch",
        "STALE_HEAD": "stale_head", "LOGGING_GAP": "logging_gap",
    }
    violation = Violation(ViolationKind.GAP, CHAIN_ID, 2, HERE, "two missing")
    assert violation.as_dict() == {"kind": "gap", "chain_id": CHAIN_ID, "seq": 2, "location": HERE,
                                   "detail": "two missing"}
    assert str(violation) == f"chain 'audit.raw/0' seq 2: gap: two missing ({HERE})"


def test_an_empty_chain_starts_at_genesis() -> None:
    state = ChainState(CHAIN_ID)
    assert (state.head_seq, state.head_hash, state.pending) == (GENESIS_SEQ, GENESIS_HASH, 0)
    assert state.head == ChainHead.genesis(CHAIN_ID)


def test_an_intact_chain_verifies_to_its_last_head() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links, PAYLOADS)
    assert state.head == ChainHead(CHAIN_ID, len(PAYLOADS) - 1, links[-1].hash)
    assert (state.entries, state.batch_first_seq, state.batch_hashes) == (6, 0, [link.hash for link in links])


def test_a_dropped_record_is_a_gap_at_the_first_missing_seq() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:2], PAYLOADS[:2])
    [gap] = feed(state, links[3], PAYLOADS[3])
    assert (gap.kind, gap.chain_id, gap.seq, gap.location) == ("gap", CHAIN_ID, 2, HERE)
    assert gap.detail == "expected seq 2, found seq 3: 1 record missing (seq 2..2)"
    # the record after the gap is the new head and starts a new batch
    assert (state.head_seq, state.batch_first_seq, state.batch_hashes) == (3, 3, [links[3].hash])
    assert feed(state, links[4], PAYLOADS[4]) == ()


def test_a_chain_that_does_not_start_at_seq_0_is_a_gap() -> None:
    links = sealed_chain(PAYLOADS)
    [gap] = feed(ChainState(CHAIN_ID), links[2], PAYLOADS[2])
    assert (gap.kind, gap.seq) == ("gap", 0)
    assert gap.detail.startswith("expected seq 0, found seq 2: 2 records missing")


def test_a_repeated_record_is_a_duplicate() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:3], PAYLOADS[:3])
    [duplicate] = feed(state, links[2], PAYLOADS[2])
    assert (duplicate.kind, duplicate.seq) == ("duplicate", 2)
    assert duplicate.detail.startswith("expected seq 3, found seq 2 again")
    assert (state.head_seq, state.pending) == (2, 3)


def test_an_older_record_after_the_head_is_a_reorder() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:5], PAYLOADS[:5])
    [reorder] = feed(state, links[1], PAYLOADS[1])
    assert (reorder.kind, reorder.seq) == ("reorder", 1)
    assert reorder.detail == "expected seq 5, found seq 1, which precedes the chain head at seq 4"


def test_the_record_just_before_the_head_replayed_is_a_reorder() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:5], PAYLOADS[:5])
    [reorder] = feed(state, links[3], PAYLOADS[3])
    assert (reorder.kind, reorder.seq) == ("reorder", 3)
    assert reorder.detail.startswith("expected seq 5, found seq 3")
    assert state.head_seq == 4


def test_an_edited_payload_is_an_altered_record_at_its_seq() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:3], PAYLOADS[:3])
    [altered] = feed(state, links[3], b"event 3: user3 DELETED doc3")
    assert (altered.kind, altered.seq) == ("altered_record", 3)
    assert altered.detail.endswith("the record was altered")
    # judged as what it really is: the next record, which links to the original, forks from it
    assert kinds(feed(state, links[4], PAYLOADS[4])) == ["fork"]


def test_an_edited_duplicate_is_first_an_altered_record() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:3], PAYLOADS[:3])
    # what it really is (another record at the head's seq) is a second finding
    assert kinds(feed(state, links[2], b"edited")) == ["altered_record", "fork"]


def test_a_self_consistent_record_on_another_history_is_a_fork() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:3], PAYLOADS[:3])
    other_prev = b"\x07" * 32
    forged = Link(CHAIN_ID, 3, other_prev, chain_hash(other_prev, 3, PAYLOADS[3]))
    [fork] = feed(state, forged, PAYLOADS[3])
    assert (fork.kind, fork.seq) == ("fork", 3)
    assert fork.detail.endswith("the record extends a different history")
    assert state.head == ChainHead(CHAIN_ID, 3, forged.hash)


def test_a_second_different_record_at_the_head_seq_is_a_fork() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:3], PAYLOADS[:3])
    rival = Link(CHAIN_ID, 2, links[2].prev_hash, chain_hash(links[2].prev_hash, 2, b"rival"))
    [fork] = feed(state, rival, b"rival")
    assert (fork.kind, fork.seq) == ("fork", 2)
    assert "found a second record" in fork.detail
    assert state.head == ChainHead(CHAIN_ID, 2, links[2].hash)


def test_a_record_of_another_chain_is_rejected() -> None:
    links = sealed_chain(PAYLOADS)
    other = Link("audit.raw/1", 0, links[0].prev_hash, links[0].hash)
    state = ChainState(CHAIN_ID)
    [wrong] = feed(state, other, PAYLOADS[0])
    assert (wrong.kind, wrong.chain_id) == ("wrong_chain", CHAIN_ID)
    assert wrong.detail == "expected a record of chain 'audit.raw/0', found one of chain 'audit.raw/1'"
    assert state.head.is_genesis


def test_a_link_with_malformed_fields_is_reported() -> None:
    state = ChainState(CHAIN_ID)
    [malformed] = feed(state, Link(CHAIN_ID, 0, b"", b"\x00" * 32), b"")
    assert malformed.kind == "malformed_record"
    assert "prev_hash must be 32 bytes" in malformed.detail
    assert state.head.is_genesis


def tampered_copies(links: list[Link], payloads: list[bytes]) -> Iterator[tuple[int, list[Link], list[bytes]]]:
    """Every single-byte flip of every payload, prev_hash and hash, with the seq it hits."""
    for index, (link, payload) in enumerate(zip(links, payloads, strict=True)):
        for position in range(len(payload)):
            edited = bytearray(payload)
            edited[position] ^= 0x20
            yield index, links, [*payloads[:index], bytes(edited), *payloads[index + 1:]]
        for field in ("prev_hash", "hash"):
            for position in range(32):
                value = bytearray(getattr(link, field))
                value[position] ^= 0x01
                changes: dict[str, Any] = {field: bytes(value)}
                yield index, [*links[:index], dataclasses.replace(link, **changes), *links[index + 1:]], payloads


def test_flipping_any_byte_anywhere_breaks_the_chain_at_that_record() -> None:
    payloads = PAYLOADS[:4]
    links = sealed_chain(payloads)
    checked = 0
    for index, edited_links, edited_payloads in tampered_copies(links, payloads):
        state = ChainState(CHAIN_ID)
        found = [v for link, payload in zip(edited_links, edited_payloads, strict=False) for v in feed(state, link, payload)]
        assert found and found[0].seq == index, found
        checked += 1
    assert checked == sum(len(p) + 64 for p in payloads)


# checkpoints


def signed_batches(batch_sizes: list[int]) -> tuple[list[bytes], list[Checkpoint]]:
    """The chain hashes of sum(batch_sizes) entries and one signed checkpoint per batch."""
    head, hashes = ChainHead.genesis(CHAIN_ID), []
    for i in range(sum(batch_sizes)):
        head = head.next(str(i).encode())
        hashes.append(head.hash)
    checkpoints: list[Checkpoint] = []
    first = 0
    for size in batch_sizes:
        prev = checkpoint_hash(checkpoints[-1]) if checkpoints else GENESIS_HASH
        unsigned = build_checkpoint(chain_id=CHAIN_ID, first_seq=first, record_hashes=hashes[first:first + size],
                                    prev_checkpoint_hash=prev, issued_at_micros=ISSUED_AT + first)
        checkpoints.append(sign_checkpoint(unsigned, KEY))
        first += size
    return hashes, checkpoints


def after(previous: Checkpoint | None, checkpoint: Checkpoint, hashes: list[bytes]) -> list[Violation]:
    """What the state machine says of ``checkpoint`` right after ``previous`` (None: genesis), its
    own batch read intact: only signature and continuity can fail."""
    state = ChainState(CHAIN_ID) if previous is None else ChainState.after_checkpoint(previous)
    state.batch_first_seq = checkpoint.first_seq
    state.batch_hashes = hashes[checkpoint.first_seq:checkpoint.last_seq + 1]
    return list(state.checkpoint(checkpoint, HERE, KEYRING))


def test_checkpoints_chain_from_genesis() -> None:
    hashes, (first, second, third) = signed_batches([3, 4, 2])
    assert after(None, first, hashes) == []
    assert after(first, second, hashes) == []
    assert after(second, third, hashes) == []
    assert (third.first_seq, third.last_seq) == (7, 8)


def test_a_checkpoint_that_does_not_follow_its_predecessor_is_named() -> None:
    hashes, (first, second, third) = signed_batches([3, 4, 2])
    [broken] = after(None, second, hashes)
    assert (broken.kind, broken.seq) == ("checkpoint_chain_broken", 3)
    assert "expected first_seq 0, found 3" in broken.detail
    [broken] = after(first, third, hashes)
    assert "expected first_seq 3, found 7" in broken.detail
    replaced = sign_checkpoint(dataclasses.replace(second, prev_checkpoint_hash=b"\x66" * 32), KEY)
    [broken] = after(first, replaced, hashes)
    assert (broken.kind, broken.seq) == ("checkpoint_chain_broken", 3)
    assert "expected prev_checkpoint_hash" in broken.detail
    resigned_first = sign_checkpoint(dataclasses.replace(first, issued_at_micros=ISSUED_AT + 1), KEY)
    assert kinds(after(resigned_first, second, hashes)) == ["checkpoint_chain_broken"]
    other_chain = sign_checkpoint(dataclasses.replace(first, chain_id="audit.raw/1"), KEY)
    [wrong] = after(other_chain, second, hashes)
    assert wrong.kind == "wrong_chain"
    assert wrong.detail.startswith("expected a checkpoint of chain 'audit.raw/1', found checkpoint of chain")


def test_a_checkpoint_is_checked_against_the_entries_it_signs() -> None:
    hashes, (first, second) = signed_batches([3, 4])
    state = ChainState(CHAIN_ID)
    state.batch_first_seq, state.batch_hashes = 0, hashes[:2]
    [mismatch] = state.checkpoint(first, HERE, KEYRING)
    assert (mismatch.kind, mismatch.seq) == ("checkpoint_mismatch", 0)
    assert "expected records seq 0..2, found seq 0..1" in mismatch.detail
    # whatever was found, the checkpoint closes the batch and becomes the previous one
    assert (state.pending, state.previous_checkpoint, state.checkpoints) == (0, first, 1)
    [empty] = state.checkpoint(second, HERE, KEYRING)
    assert (empty.kind, empty.seq) == ("checkpoint_mismatch", 3)
    assert "found none before it" in empty.detail


def test_the_root_a_tree_head_built_serves_its_checkpoint_only_for_the_same_entries() -> None:
    # a tree head builds the batch's tree once (history_with_batch) and its checkpoint takes the root from it;
    # entries read after that, or a batch restarted by a gap, must not be judged by a root of other hashes
    hashes, (first,) = signed_batches([4])
    state = ChainState(CHAIN_ID)
    state.batch_first_seq, state.batch_hashes = 0, hashes[:4]
    assert state.history_with_batch(HistoryTree()).root == record_tree_root(hashes[:4])
    assert list(state.checkpoint(first, HERE, KEYRING)) == []
    state = ChainState(CHAIN_ID)
    state.batch_first_seq, state.batch_hashes = 0, hashes[:3]
    state.history_with_batch(HistoryTree())
    state.batch_hashes.append(hashes[3])  # one more entry after the head
    assert list(state.checkpoint(first, HERE, KEYRING)) == []
    state = ChainState(CHAIN_ID)
    state.batch_first_seq, state.batch_hashes = 0, [bytes([n]) * 32 for n in range(3)] + [hashes[3]]
    state.history_with_batch(HistoryTree())
    state.batch_hashes = list(hashes[:4])  # another batch of the same length (a gap restarts it)
    assert list(state.checkpoint(first, HERE, KEYRING)) == []
    state = ChainState(CHAIN_ID)
    state.batch_first_seq, state.batch_hashes = 0, [bytes([n]) * 32 for n in range(3)] + [hashes[3]]
    state.history_with_batch(HistoryTree())
    [mismatch] = state.checkpoint(first, HERE, KEYRING)  # and the root it built is that of what it read
    assert mismatch.kind == "checkpoint_mismatch" and "expected Merkle root" in mismatch.detail


def test_a_checkpoint_signature_is_checked_against_the_keyring() -> None:
    hashes, (first,) = signed_batches([3])
    other = generate_signing_key()
    cases = {
        "bad_signature": (dataclasses.replace(first, signature=bytes(64)), KEYRING),
        "unknown_key": (sign_checkpoint(first, other), KEYRING),
        "key_not_valid": (first, Keyring().rotate(KEY.public_key, ISSUED_AT + 1)),
    }
    for kind, (checkpoint, keyring) in cases.items():
        state = ChainState(CHAIN_ID)
        state.batch_first_seq, state.batch_hashes = 0, hashes[:3]
        [found] = state.checkpoint(checkpoint, HERE, keyring)
        assert (found.kind, found.seq) == (kind, 2), found
    # without a keyring (the prover) the signature is left to the offline check
    state = ChainState(CHAIN_ID)
    state.batch_first_seq, state.batch_hashes = 0, hashes[:3]
    assert state.checkpoint(sign_checkpoint(first, other), HERE, None) == []


def test_entries_after_the_last_checkpoint_are_an_unsigned_tail() -> None:
    links = sealed_chain(PAYLOADS)
    state = verified(links[:3], PAYLOADS[:3])
    assert state.checkpoint(sign_checkpoint(build_checkpoint(
        chain_id=CHAIN_ID, first_seq=0, record_hashes=[link.hash for link in links[:3]],
        prev_checkpoint_hash=GENESIS_HASH, issued_at_micros=ISSUED_AT), KEY), HERE, KEYRING) == []
    assert state.finish("end") == ()
    for link, payload in zip(links[3:5], PAYLOADS[3:5], strict=False):
        assert feed(state, link, payload) == ()
    [tail] = state.finish("end")
    assert (tail.kind, tail.seq, tail.location) == ("unsigned_tail", 3, "end")
    assert tail.detail == "2 entries after the last checkpoint are covered by no signature"
    assert state.finish("end") == ()


def test_the_state_after_a_checkpoint_is_what_the_verifier_holds_there() -> None:
    hashes, checkpoints = signed_batches([3, 4])
    state = ChainState(CHAIN_ID)
    for seq, digest in enumerate(hashes[:3]):
        state.link(CHAIN_ID, seq, state.head_hash, digest, digest, HERE)
    assert state.checkpoint(checkpoints[0], HERE, KEYRING) == []
    resumed = ChainState.after_checkpoint(checkpoints[0])
    assert (resumed.head, resumed.previous_checkpoint_hash, resumed.pending) == (
        state.head, state.previous_checkpoint_hash, 0)
    for seq, digest in enumerate(hashes[3:], start=3):
        assert resumed.link(CHAIN_ID, seq, resumed.head_hash, digest, digest, HERE) == ()
    assert resumed.checkpoint(checkpoints[1], HERE, KEYRING) == []


def test_an_unreadable_checkpoint_is_one_finding_and_the_next_one_follows_it() -> None:
    # a checkpoint record whose fields are out of their domain: reported once, at its record; the next
    # checkpoint is held to its last_seq and the hash it stored, so nothing cascades
    state = ChainState(CHAIN_ID)
    found = state.unreadable_checkpoint(9, b"\x07" * 32, HERE, "key_id must be 16 hex digits")
    assert [(v.kind, v.seq) for v in found] == [("malformed_record", 9)]
    assert (state.expected_first_seq, state.previous_checkpoint_hash, state.checkpoints) == (10, b"\x07" * 32, 1)
