"""Reading what the S3 sink archived, straight from the bucket (every version), and checking it."""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

from pipeline.archive.container import read_archived_records
from pipeline.archive.encryption import MasterKey, decrypt_object
from pipeline.archive.layout import Manifest, parse_key
from pipeline.config import KafkaSettings, S3Settings
from pipeline.integrity.keyring import load_keyring
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.output import ChainWriter
from pipeline.verifier.chains import ChainAuditor
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import sealed_codecs


def seal_in_process(stack, topics, events: int, *, seed: int, checkpoint_every: int = 500, garbled: int = 2,
                    pause: float = 0.0) -> int:
    """Fill the test's sealed topic as the sealer role would, without a Faust worker: each chain is
    sealed by the sealer's own ChainSealer and written by its transactional ChainWriter, one
    transaction per batch ending in its checkpoint, chains in turn, ``pause`` seconds after each
    round; ``garbled`` raw values per chain become rejections. Returns the number of entries written."""
    settings = KafkaSettings.from_env(stack.env("sealer"))
    key = stack.signer()  # the sealer's key in the stack's SoftHSM2 token
    codec = default_codec()
    values = [codec.encode(event) for event in synthetic_events(events, seed=seed)]
    writers = [ChainWriter(settings, raw_topic=topics.raw, sealed_topic=topics.sealed, partition=partition,
                           signing_key=key) for partition in range(topics.partitions)]
    entries = 0
    try:
        chains = [(writer, writer.open(), [b"not an audit event %d" % n for n in range(garbled)]
                   + values[partition::topics.partitions]) for partition, writer in enumerate(writers)]
        for start in range(0, max(len(raw) for _, _, raw in chains), checkpoint_every):
            for writer, sealer, raw in chains:
                batch = raw[start:start + checkpoint_every]
                if not batch:
                    continue
                now = int(time.time() * 1_000_000)
                # raw offsets go on from the chain's own (a chain resumed by a second call continues them):
                # v2 checkpoints sign the range, and the verifier holds every chain to it
                base = sealer.next_source_offset or 0
                writer.write([sealer.seal(value, base + n, now) for n, value in enumerate(batch)]
                             + [sealer.checkpoint(now)])
                entries += len(batch)
            time.sleep(pause)
    finally:
        for writer in writers:
            writer.close()
    return entries


@dataclass
class Archive:
    """Every version of every object and manifest under one topic's keys."""

    objects: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    manifests: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    locks: list[tuple[str, str, object]] = field(default_factory=list)
    """(key, lock mode, retain-until) of every version."""

    def retried_keys(self) -> list[str]:
        """Object keys with more than one version (a batch written again after a crash)."""
        return sorted(key for key, versions in self.objects.items() if len(versions) > 1)


def read_archive(stack, topic: str, prefix: str = "") -> Archive:
    """Every version under ``{prefix}{topic}/``, read as the verifier role, with its lock."""
    settings = S3Settings.from_env(stack.env("verifier"))
    s3 = settings.client()
    archive = Archive()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=settings.bucket, Prefix=f"{prefix}{topic}/"):
        for version in page.get("Versions", []):
            key, version_id = version["Key"], version["VersionId"]
            body = s3.get_object(Bucket=settings.bucket, Key=key, VersionId=version_id)["Body"].read()
            retention = s3.get_object_retention(Bucket=settings.bucket, Key=key, VersionId=version_id)["Retention"]
            archive.locks.append((key, retention.get("Mode"), retention.get("RetainUntilDate")))
            parsed = parse_key(key)
            assert parsed is not None, f"{key}: not a key of the layout"
            (archive.manifests if parsed.is_manifest else archive.objects)[parsed.object_key].append(body)
    return archive


def wait_for_archive(stack, topic: str, expected: dict[int, list[int]], prefix: str = "", timeout: float = 90) -> Archive:
    """Poll the bucket until every expected offset has an object with a manifest."""
    deadline = time.monotonic() + timeout
    while True:
        archive = read_archive(stack, topic, prefix)
        covered: dict[int, set[int]] = defaultdict(set)
        for key in archive.manifests:
            parsed = parse_key(key)
            covered[parsed.partition].update(range(parsed.first_offset, parsed.last_offset + 1))
        missing = {p: len(set(offsets) - covered[p]) for p, offsets in expected.items() if set(offsets) - covered[p]}
        if not missing:
            return archive
        if time.monotonic() > deadline:
            raise TimeoutError(f"records not archived within {timeout}s, per partition: {missing}")
        time.sleep(1)


def check_archive(stack, archive: Archive, sealed: dict[int, list], master_key: MasterKey | None = None) -> ChainAuditor:
    """Assert what a verifier relies on, and return the chain audit of the archived records:

    - every version of a key (object or manifest) has the same bytes: a retry, not a second copy;
    - every version is COMPLIANCE-locked no earlier than its manifest's retain_until;
    - each manifest matches its object (hash, size, range, counts, chains, checkpoints);
    - every sealed record is in exactly one logical object, byte for byte, and nothing else is.
    """
    codecs = sealed_codecs()
    archived: dict[int, list[tuple[int, bytes, dict]]] = defaultdict(list)
    retain_until = {}
    assert archive.objects, "nothing archived"
    for key, versions in sorted(archive.objects.items()):
        assert len(set(versions)) == 1, f"{key}: {len(versions)} versions with different bytes"
        manifests = archive.manifests.get(key)
        assert manifests, f"{key}: no manifest"
        assert len(set(manifests)) == 1, f"{key}: manifest versions differ"
        manifest = Manifest.from_bytes(manifests[0], key)
        assert manifest.to_bytes() == manifests[0], f"{key}: manifest is not canonical JSON"
        body = versions[0]
        assert manifest.key == key and manifest.size == len(body) and manifest.sha256 == hashlib.sha256(body).hexdigest()
        retain_until[key] = retain_until[key + ".manifest.json"] = manifest.retain_until_datetime
        if manifest.encryption is not None:
            assert master_key is not None, f"{key} is encrypted"
            body = decrypt_object(body, key, manifest.encryption, master_key)
        rows = list(read_archived_records(body))
        assert [r["offset"] for r in rows] == sorted(r["offset"] for r in rows)
        assert (rows[0]["offset"], rows[-1]["offset"], len(rows)) == (manifest.first_offset, manifest.last_offset,
                                                                       manifest.record_count)
        chains: dict[str, list[int]] = {}
        for row in rows:
            assert row["partition"] == manifest.partition and row["topic"] == manifest.topic
            kind, record = codecs.decode(row["value"])
            assert row["kind"] == kind.decode()
            archived[row["partition"]].append((row["offset"], kind, record))
            if "seq" in record:
                chains.setdefault(record["chain_id"], []).append(record["seq"])
        assert {(c.chain_id, c.first_seq, c.last_seq, c.entries) for c in manifest.chains} == {
            (chain, seqs[0], seqs[-1], len(seqs)) for chain, seqs in chains.items()}
        assert [(c.first_seq, c.last_seq) for c in manifest.checkpoints] == [
            (r["first_seq"], r["last_seq"]) for _, kind, r in archived[manifest.partition][-len(rows):]
            if kind == b"checkpoint"]
    for key, mode, until in archive.locks:
        assert mode == "COMPLIANCE", f"{key}: lock mode {mode}"
        assert until >= retain_until[key], f"{key}: locked until {until}, manifest says {retain_until[key]}"
    for partition in set(sealed) | set(archived):
        offsets = [offset for offset, _, _ in archived.get(partition, [])]
        assert len(offsets) == len(set(offsets)), f"partition {partition}: an offset is in two objects"
        assert sorted(archived.get(partition, [])) == sealed.get(partition, []), \
            f"partition {partition}: archived records differ from the sealed topic"
    auditor = ChainAuditor(load_keyring(stack.keyring_file))
    for partition, records in sorted(archived.items()):
        for offset, kind, record in sorted(records):
            location = f"archive[{partition}]@{offset}"
            if kind == b"checkpoint":
                auditor.checkpoint(record, location)
            elif kind == b"head":  # a tree head over the chain's history (integrity v2)
                auditor.head(record, location)
            else:
                auditor.entry(kind, record, location)
    auditor.finish()
    return auditor
