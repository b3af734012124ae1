"""A local archive that grows as today's sealer and sink write it: v2 checkpoints, a tree head before each,
objects built by the sink's own ``build_object``, so a test can verify it, append to it, and verify again."""

from __future__ import annotations

from pathlib import Path

from pipeline.archive.container import build_object
from pipeline.archive.retention import ComplianceProfile
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import Keyring, generate_signing_key
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.codec import default_codec

TOPIC = "audit.sealed"
START_MICROS = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


class GrowingArchive:
    """``partitions`` chains sealed with one key; :meth:`grow` appends sealed batches as new objects."""

    def __init__(self, root: Path, partitions: int = 2, batch: int = 40, key=None) -> None:
        self.root = root
        self.batch = batch
        self.key = key or generate_signing_key()
        self.keyring = Keyring().rotate(self.key.public_key, START_MICROS - 1)
        self.codec = default_codec()
        self.events = [self.codec.encode(e) for e in synthetic_events(200, seed=3)]
        self.sealers = [ChainSealer(f"audit.raw/{p}", p, self.key, ChainHead.genesis(f"audit.raw/{p}"),
                                    origin=f"auditseal/test/audit.raw/{p}") for p in range(partitions)]
        self.offsets = [0] * partitions      # next offset of each sealed partition
        self.raw = [0] * partitions          # next raw offset of each chain
        self.now = START_MICROS
        self.profile = ComplianceProfile("test", days=1)
        self.objects: list[str] = []

    def grow(self, batches: int, per_object: int = 2) -> list[str]:
        """Seal ``batches`` batches per chain, ``per_object`` batches to an object; the new object keys."""
        written = []
        for partition, sealer in enumerate(self.sealers):
            pending: list[tuple[int, int, bytes]] = []
            for number in range(batches):
                for _ in range(self.batch):
                    self.now += 1000
                    value = self.events[self.raw[partition] % len(self.events)]
                    pending.append(self._record(partition, sealer.seal(value, self.raw[partition], self.now).value))
                    self.raw[partition] += 1
                pending.append(self._record(partition, sealer.tree_head(self.now).value))
                pending.append(self._record(partition, sealer.checkpoint(self.now).value))
                if (number + 1) % per_object == 0 or number == batches - 1:
                    written.append(self.write(partition, pending))
                    pending = []
        return written

    def _record(self, partition: int, value: bytes) -> tuple[int, int, bytes]:
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        return (offset, self.now // 1000, value)

    def write(self, partition: int, records: list[tuple[int, int, bytes]]) -> str:
        """Write one object (and its manifest) of these (offset, timestamp ms, value) records."""
        obj = build_object(TOPIC, partition, records, profile=self.profile)
        path = self.root / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.body)
        (self.root / obj.manifest_key).write_bytes(obj.manifest_bytes)
        self.objects.append(obj.key)
        return obj.key
