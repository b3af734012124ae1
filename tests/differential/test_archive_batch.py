"""The sink's compiled batch pass builds exactly the objects the readable functions build.

``build_object`` (one pass of :mod:`pipeline.native.archive_batch`) and ``build_object(reference=True)``
(``summarise``, ``query_index``, ``container_bytes`` over fastavro) must give the same key, the same
object bytes and the same manifest bytes for every batch: objects already archived must verify, and a sink
restarted after a crash rewrites an object's key with the same bytes whichever builder wrote it first.
Checked on generated batches (events, rejections, gaps, checkpoints of both versions, tree heads, unknown
values, several chains, timestamps of -1) with damaged records mixed in (cut short, bytes flipped, trailing
bytes, overlong varints, non-UTF-8 ids, a known header over random bytes), every codec and level the sink
takes, and block sizes small enough to cut a block after every few records; and the compiled Bloom table
against ``BloomFilter.of``.
"""

from __future__ import annotations

import random
from functools import lru_cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.archive.container import (
    SYNC_INTERVAL,
    batch_scan,
    build_object,
    checkpoint_ref,
    index_fields,
    read_archived_records,
)
from pipeline.archive.encryption import MasterKey
from pipeline.archive.query_index import HASHES, BloomFilter, filter_bits, filter_prefix
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.keyring import generate_signing_key
from pipeline.native.archive_batch import bloom_table
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import sealed_codecs
from tests.differential.strategies import valid_events

pytestmark = pytest.mark.differential

PROFILE = ComplianceProfile("soc2", years=1)
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@lru_cache(maxsize=1)
def _sealed_values() -> tuple[bytes, ...]:
    """Values of two chains as the sealer writes them: events, a rejection, a gap, checkpoints of version 1
    (no origin) and 2, and a value of each remaining header (a tree head) over random bytes."""
    codec = default_codec()
    key = generate_signing_key()
    events = [codec.encode(event) for event in synthetic_events(400, seed=21)]
    values: list[bytes] = []
    for chain, origin in (("audit.raw/0", None), ("audit.raw/1", "example.com/log/audit.raw/1")):
        sealer = ChainSealer.resume(chain, int(chain[-1]), key, None, origin=origin)
        for n, event in enumerate(events[:200] if origin is None else events[200:]):
            values.append(sealer.seal(event, n, 1_000 * n).value)
            if n % 37 == 5:
                values.append(sealer.seal(b"not an event", n + 1000, 1_000 * n).value)
            if n % 90 == 80:
                values.append(sealer.checkpoint(7 + n).value)
        values.append(sealer.checkpoint(9).value)
    head = sealed_codecs().head.header
    values.append(head + bytes(range(40)))
    return tuple(values)


def _damaged(value: bytes, rng: random.Random) -> bytes:
    """One way a record can arrive damaged, at a random place."""
    how = rng.randrange(9)
    at = rng.randrange(max(1, len(value)))
    if how == 0:
        return value[:at]                                              # cut short
    if how == 1:
        return value[:at] + bytes([value[at] ^ (1 << rng.randrange(8))]) + value[at + 1:] if value else value
    if how == 2:
        return value + bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))  # trailing bytes
    if how == 3:
        return value[:at] + b"\xff" * rng.randint(1, 12) + value[at:]  # an overlong varint or a huge length
    if how == 4:
        return value[:at] + b"\x80" + value[at + 1:]                   # a lone UTF-8 continuation byte
    if how == 5:
        return value[:10] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))  # a header, then noise
    if how == 6:
        return b""                                                     # a record without a value
    if how == 7:
        # a non-UTF-8 byte inside an id the index reads (actor.id or resource.id, near the end of the event)
        at = len(value) - rng.randint(1, min(len(value), 60))
        return value[:at] + b"\xc3\x28" + value[at + 2:]
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 12)))  # not a sealed record at all


def _batch(rng: random.Random, size: int, damage: float) -> list[tuple[int, int, bytes]]:
    """A contiguous, offset-ordered batch drawn from the sealed values, some damaged, offsets with gaps
    (transaction markers), timestamps increasing or -1 (no timestamp)."""
    values = _sealed_values()
    start = rng.randrange(len(values))
    offset = rng.randrange(2**40)
    out = []
    for n in range(size):
        value = values[(start + n) % len(values)]
        if rng.random() < damage:
            value = _damaged(value, rng)
        timestamp = -1 if rng.random() < 0.05 else BASE_MS + n * rng.randint(0, 5)
        out.append((offset, timestamp, value))
        offset += rng.choice((1, 1, 1, 2))
    return out


def _assert_same(records, **options) -> None:
    compiled = build_object("audit.sealed", 5, records, profile=PROFILE, **options)
    readable = build_object("audit.sealed", 5, records, profile=PROFILE, reference=True, **options)
    assert compiled.key == readable.key
    assert compiled.body == readable.body
    assert compiled.manifest_bytes == readable.manifest_bytes
    assert compiled.retain_until == readable.retain_until


CODECS = [{"codec": "deflate"}, {"codec": "deflate", "level": 6}, {"codec": "deflate", "level": None},
          {"codec": "null"}]


@pytest.mark.parametrize("options", CODECS, ids=lambda o: f"{o['codec']}-{o.get('level', 1)}")
@pytest.mark.parametrize("sync_interval", [1, 700, 4096, 256 * 1024])
def test_clean_batches_give_the_same_object(options, sync_interval):
    rng = random.Random(sync_interval)
    for size in (1, 2, 37, len(_sealed_values())):
        _assert_same(_batch(rng, size, damage=0.0), sync_interval=sync_interval, **options)


@pytest.mark.parametrize("seed", range(12))
def test_damaged_batches_give_the_same_object(seed):
    rng = random.Random(seed)
    records = _batch(rng, rng.randint(50, 600), damage=rng.choice((0.05, 0.3, 1.0)))
    _assert_same(records, sync_interval=rng.choice((512, 9000, 256 * 1024)), **rng.choice(CODECS))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=st.lists(valid_events, min_size=1, max_size=12), data=st.data())
def test_generated_events_give_the_same_object(events, data):
    """Events of any shape the producer takes (non-ASCII ids, empty strings, long attributes), sealed,
    with a few damaged at places hypothesis picks."""
    codec = default_codec()
    sealer = ChainSealer.resume(data.draw(st.sampled_from(["audit.raw/3", "ü/ñ"])), 3, _key(), None)
    values = [sealer.seal(codec.encode(event), n, 1_000 * n).value for n, event in enumerate(events)]
    values.append(sealer.checkpoint(1).value)
    records = []
    for n, value in enumerate(values):
        if data.draw(st.booleans()):
            at = data.draw(st.integers(0, len(value)))
            value = value[:at] + data.draw(st.binary(max_size=3)) + value[at + data.draw(st.integers(0, 3)):]
        records.append((100 + n, BASE_MS + n, value))
    _assert_same(records, sync_interval=data.draw(st.sampled_from([1, 300, 256 * 1024])), **data.draw(
        st.sampled_from(CODECS)))


@lru_cache(maxsize=1)
def _key():
    return generate_signing_key()


def _outcome(records, reference: bool):
    try:
        built = build_object("audit.sealed", 5, records, profile=PROFILE, reference=reference)
    except Exception as exc:  # the refusal itself is what is compared
        return type(exc), str(exc)
    return built.key, built.body, built.manifest_bytes


def test_batches_the_compiled_pass_does_not_take_are_built_the_readable_way():
    """A tuple of records, a value that is not bytes, an offset past 64 bits: the readable functions build
    (or refuse) them."""
    records = _batch(random.Random(3), 30, damage=0.0)
    for odd in (tuple(records), [(offset, timestamp, bytearray(value)) for offset, timestamp, value in records],
                [(2**64 + n, timestamp, value) for n, (_, timestamp, value) in enumerate(records)],
                [(offset, 2**62, value) for offset, _, value in records]):
        assert _outcome(odd, reference=False) == _outcome(odd, reference=True)


def test_encrypted_objects_are_the_same():
    records = _batch(random.Random(8), 200, damage=0.1)
    key = MasterKey("m", bytes(range(32)))
    compiled = build_object("audit.sealed", 5, records, profile=PROFILE, master_key=key)
    readable = build_object("audit.sealed", 5, records, profile=PROFILE, master_key=key, reference=True)
    assert compiled.manifest_bytes == readable.manifest_bytes and compiled.body == readable.body


def test_the_object_reads_back_as_the_records():
    records = _batch(random.Random(9), 300, damage=0.2)
    rows = list(read_archived_records(build_object("audit.sealed", 5, records, profile=PROFILE,
                                                   sync_interval=1000).body))
    assert [(row["offset"], row["timestamp_micros"], row["value"]) for row in rows] == [
        (offset, timestamp * 1000, value) for offset, timestamp, value in records]


@settings(max_examples=100, deadline=None)
@given(values=st.sets(st.text(max_size=30), max_size=300), field=st.sampled_from(["actor.id", "resource.id"]))
def test_compiled_bloom_table_is_bloom_filter_of(values, field):
    bits = filter_bits(len(values))
    assert bloom_table(filter_prefix(field), values, bits, HASHES) == BloomFilter.of(field, values).data


def test_the_compiled_pass_reads_clean_batches_itself():
    """The readable fallbacks are asked only about checkpoints and damaged events: a clean batch of the
    sealer's records is read by the compiled pass (else the tests above would compare the reference with itself)."""
    asked = {"checkpoint": 0, "event": 0}

    def counted_checkpoint(value):
        asked["checkpoint"] += 1
        return checkpoint_ref(value)

    def counted_event(value):
        asked["event"] += 1
        return index_fields(value)

    scan = batch_scan(counted_checkpoint, counted_event)
    records = _batch(random.Random(4), len(_sealed_values()), damage=0.0)
    counts, _, _, (events, undecoded, *_), _, blocks = scan.scan(records, "audit.sealed", 5, SYNC_INTERVAL)
    assert asked == {"checkpoint": counts[0], "event": 0} and events == counts[1] > 300 and undecoded == 0
    assert sum(count for count, _ in blocks) == len(records)
    damaged = [(offset, timestamp, value + b"\x00") for offset, timestamp, value in records]  # trailing bytes
    assert scan.scan(damaged, "audit.sealed", 5, SYNC_INTERVAL)[3][1] == asked["event"] == counts[1]
