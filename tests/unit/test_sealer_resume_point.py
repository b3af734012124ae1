"""Where a chain resumes when its sealed partition holds records of other writers (issue 14): the last
checkpoint its own entries back; every other record is a stray, skipped and reported, never sealed over."""

from __future__ import annotations

from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.sealer.output import _resume_point
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import sealed_codecs

CHAIN = "audit.raw/0"
KEY = generate_signing_key()


def _batches(sizes: list[int], key=KEY) -> list[bytes]:
    sealer = ChainSealer(CHAIN, 0, key, ChainHead.genesis(CHAIN))
    values = [default_codec().encode(e) for e in synthetic_events(sum(sizes), seed=9)]
    out, offset = [], 0
    for size in sizes:
        for value in values[offset:offset + size]:
            out.append(sealer.seal(value, offset, 1_000 + offset).value)
            offset += 1
        out.append(sealer.checkpoint(5_000 + offset).value)
    return out


def _records(values: list[bytes | None]) -> list[tuple[int, bytes | None]]:
    return list(enumerate(values))


def test_a_clean_tail_resumes_at_its_last_checkpoint_with_no_strays() -> None:
    values = _batches([3, 4])
    checkpoint, strays = _resume_point(_records(values), True, CHAIN, KEY.public_key, KEY.key_id)
    assert (checkpoint["first_seq"], checkpoint["last_seq"]) == (3, 6) and strays == []


def test_garbage_and_a_replayed_entry_after_the_last_checkpoint_are_strays() -> None:
    values = _batches([3, 4])
    values += [b"garbage", values[2], None]
    checkpoint, strays = _resume_point(_records(values), True, CHAIN, KEY.public_key, KEY.key_id)
    assert checkpoint["last_seq"] == 6
    assert [offset for offset, _ in strays] == [9, 10, 11]
    assert "not a sealed record" in strays[0][1] and "after the last valid checkpoint" in strays[1][1]


def test_a_stray_inside_a_batch_is_skipped_and_the_batch_still_backs_its_checkpoint() -> None:
    values = _batches([3, 4])
    values.insert(6, b"interleaved garbage")  # between entries of the second batch
    checkpoint, strays = _resume_point(_records(values), True, CHAIN, KEY.public_key, KEY.key_id)
    assert checkpoint["last_seq"] == 6 and [offset for offset, _ in strays] == [6]
    assert "inside a checkpoint's batch" in strays[0][1]


def test_a_forged_checkpoint_is_not_a_resume_point() -> None:
    values = _batches([3, 4])
    codecs = sealed_codecs()
    genuine = codecs.checkpoint.decode(values[-1])
    # a checkpoint that claims more than its entries (or is signed by someone else with our key id)
    values.append(codecs.checkpoint.encode(dict(genuine, signature=bytes(64))))
    checkpoint, strays = _resume_point(_records(values), True, CHAIN, KEY.public_key, KEY.key_id)
    assert checkpoint == genuine
    assert [offset for offset, _ in strays] == [9]
    assert "signature does not verify" in strays[0][1]


def test_another_chain_s_checkpoint_is_not_a_resume_point() -> None:
    values = _batches([2])
    checkpoint, strays = _resume_point(_records(values), True, "audit.raw/1", KEY.public_key, KEY.key_id)
    assert checkpoint is None and len(strays) == 3


def test_a_window_that_starts_inside_the_last_batch_asks_for_more() -> None:
    values = _batches([3, 4])
    assert _resume_point(list(enumerate(values))[5:], False, CHAIN, KEY.public_key, KEY.key_id) is None
    checkpoint, strays = _resume_point(list(enumerate(values))[4:], False, CHAIN, KEY.public_key, KEY.key_id)
    assert checkpoint["last_seq"] == 6 and strays == []


def test_an_older_key_s_checkpoint_resumes_after_a_rotation() -> None:
    old = generate_signing_key()
    values = _batches([3], key=old)
    checkpoint, strays = _resume_point(_records(values), True, CHAIN, KEY.public_key, KEY.key_id)
    assert checkpoint["last_seq"] == 2 and strays == []
