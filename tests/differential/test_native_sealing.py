"""The compiled sealed entry (pipeline.native.sealing.seal_event) against the references production also
runs: the chain hash of pipeline.integrity.chain over the payload of pipeline.wire.sealed, and the
SealedEvent bytes of the codec's checked writer; and fastavro reads them back."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.integrity.chain import chain_hash
from pipeline.native.sealing import seal_event
from pipeline.wire.sealed import event_payload, sealed_codecs

pytestmark = pytest.mark.differential

CODECS = sealed_codecs()
HEADER = bytes(CODECS.event.header)


def reference(chain_id: str, prev_hash: bytes, seq: int, partition: int, offset: int, micros: int,
              event: bytes) -> tuple[bytes, bytes]:
    digest = chain_hash(prev_hash, seq, event_payload(partition, offset, micros, event))
    record = {"chain_id": chain_id, "seq": seq, "prev_hash": prev_hash, "hash": digest,
              "source_partition": partition, "source_offset": offset, "source_timestamp_micros": micros,
              "event": event}
    return CODECS.event.encode_checked(record), digest


@settings(max_examples=300, deadline=None)
@given(
    chain_id=st.text(min_size=1, max_size=40),
    prev_hash=st.binary(min_size=32, max_size=32),
    seq=st.integers(0, 2**63 - 1),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    micros=st.integers(0, 2**63 - 1),
    event=st.binary(max_size=300),
)
def test_equals_the_reference_hash_and_the_checked_writer(chain_id: str, prev_hash: bytes, seq: int, partition: int,
                                                            offset: int, micros: int, event: bytes) -> None:
    value, digest = seal_event(HEADER, chain_id.encode(), prev_hash, seq, partition, offset, micros, event)
    assert (value, digest) == reference(chain_id, prev_hash, seq, partition, offset, micros, event)
    decoded = fastavro.schemaless_reader(io.BytesIO(value[len(HEADER):]), CODECS.event.schema.parsed)
    assert decoded["hash"] == digest and decoded["event"] == event and decoded["seq"] == seq
