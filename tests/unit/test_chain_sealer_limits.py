"""ChainSealer: a record that cannot be sealed as it is becomes a rejection naming why (issue 14)."""

from __future__ import annotations

import hashlib

from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.sealer.output import RECORD_FRAMING_BYTES, record_limit
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import EVENT_KIND, REJECTION_KIND, sealed_codecs


def _sealer(limit: int | None) -> ChainSealer:
    return ChainSealer("audit.raw/0", 0, generate_signing_key(), ChainHead.genesis("audit.raw/0"),
                       max_record_bytes=limit)


def test_an_event_over_the_record_limit_is_sealed_as_a_rejection_and_the_next_one_as_an_event() -> None:
    small, large = (default_codec().encode(e) for e in synthetic_events(2, seed=3))
    sealer = _sealer(len(small) + 200)
    large_event = next(iter(synthetic_events(1, seed=4)))
    large_event["attributes"] = {"blob": "y" * 400}
    large = default_codec().encode(large_event)
    first = sealer.seal(large, 10, 1_000)
    second = sealer.seal(small, 11, 2_000)
    assert (first.kind, second.kind) == (REJECTION_KIND, EVENT_KIND)
    rejection = sealed_codecs().rejection.decode(first.value)
    assert rejection["raw_sha256"] == hashlib.sha256(large).digest() and rejection["raw_size"] == len(large)
    assert rejection["reason"].startswith("too large to seal: the sealed event would be ")
    assert f"at most {len(small) + 200} bytes" in rejection["reason"]
    assert (first.seq, second.seq) == (0, 1)


def test_without_a_limit_every_valid_event_is_an_event() -> None:
    value = default_codec().encode(next(iter(synthetic_events(1, seed=5))))
    assert _sealer(None).seal(value, 0, 1).kind == EVENT_KIND


def test_the_record_limit_leaves_room_for_the_framing() -> None:
    assert record_limit(1024 * 1024) == 1024 * 1024 - RECORD_FRAMING_BYTES
