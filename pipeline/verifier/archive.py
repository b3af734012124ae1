"""Verify an archive written by the S3 sink: a bucket (``--s3``) or a local copy of one (``--dir``).

Objects are visited one at a time, partition by partition in key (offset) order, and their records
are streamed into a :class:`~pipeline.verifier.chains.ChainAuditor`, so memory stays flat whatever
the archive's size. Per object the manifest is checked against the bytes (sha256, size, counts,
chains, checkpoints, key); with S3 every version of the key is read: versions with identical bytes
are one retried write and count once, different bytes are reported; and each object's lock must be
COMPLIANCE until at least what its manifest and its compliance profile require.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from botocore.exceptions import ClientError

from pipeline.archive.container import archived_record_schema, read_archived_records
from pipeline.archive.encryption import DecryptionError, KeyEncryptionKey, decrypt_object
from pipeline.archive.layout import (
    ArchiveKey,
    Manifest,
    ManifestError,
    manifest_key,
    parse_key,
)
from pipeline.archive.objectlock import PROBE_PREFIX
from pipeline.archive.retention import ComplianceProfiles
from pipeline.errors import AuditSealError, ConfigError
from pipeline.integrity.keyring import Keyring
from pipeline.native.flat_reader import EntryScan
from pipeline.verifier.chains import DEFAULT_HEAD_TOLERANCE_S, ChainAuditor, Violation, ViolationKind
from pipeline.verifier.continuity import LoggingRecord
from pipeline.verifier.index_check import INDEX_MISMATCH, index_mismatch
from pipeline.verifier.witnessing import WitnessAudit
from pipeline.wire.codec import CorruptBodyError
from pipeline.wire.flat_decoder import compile_decoder, record_fields
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    COSIGNATURE_KIND,
    GAP_KIND,
    HEAD_KIND,
    entry_payload_of_fields,
    sealed_codecs,
)

# violation kinds of the archive level (chain-level kinds: pipeline.integrity.chain_state.ViolationKind)
MISSING_MANIFEST = "missing_manifest"
BAD_MANIFEST = "malformed_manifest"
MANIFEST_MISMATCH = "manifest_mismatch"          # manifest and object disagree (altered or moved object)
CONFLICTING_VERSIONS = "conflicting_versions"    # same key, different bytes: an overwrite, not a retry
OVERLAP = "overlapping_objects"                  # two objects claim the same offsets
UNREADABLE = "unreadable_object"
NOT_LOCKED = "not_locked"
RETENTION_TOO_SHORT = "retention_too_short"
HIDDEN = "delete_marker"                         # someone tried to delete the object (versions remain)
FOREIGN_OBJECT = "unknown_object"                # a key under the prefix that the archive layout does not use
NO_ARCHIVE = "no_archive"                        # nothing under the prefix: an empty or mistyped prefix proves nothing
NO_CHAIN = "no_chain"                            # objects, but no chain entry or checkpoint in any of them
TAIL_TRUNCATED = "tail_truncated"              # sealed long enough ago to be archived, and not in the archive
STRAY_RECORD = "stray_record"                  # a record on the sealed topic no valid checkpoint backs
# notices: reported, never a violation (the exit code and the access record stay "intact")
NOT_YET_ARCHIVED = "not_yet_archived"          # sealed within the grace period: the sink's lag


@dataclass(frozen=True)
class ObjectVersion:
    """One stored version of a key: how to read it, and its lock if the store has locks."""

    version_id: str | None
    read: Callable[[], bytes]
    lock: tuple[str | None, datetime.datetime | None] | None = None  # (mode, retain_until); None: no locks
    modified: datetime.datetime | None = None
    # what identifies the stored bytes without reading them (a file's size and mtime, an S3 version id and
    # ETag): an incremental verification (pipeline.verifier.incremental) reads again only what changed
    fingerprint: str | None = None


@dataclass
class ArchiveEntry:
    """One key of the layout with all its versions (oldest first) and its manifest's versions."""

    key: ArchiveKey
    name: str
    versions: list[ObjectVersion] = field(default_factory=list)
    manifest_versions: list[ObjectVersion] = field(default_factory=list)
    hidden: bool = False

    def first_container(self, master_keys: dict[str, KeyEncryptionKey] | None = None) -> bytes:
        """The container bytes of the first version, decrypted under its first manifest's envelope if it has
        one (DecryptionError without the master key); for readers that take the archive as it was written."""
        data = self.versions[0].read()
        if self.manifest_versions:
            manifest = Manifest.from_bytes(self.manifest_versions[0].read(), f"{self.name}.manifest.json")
            if manifest.encryption is not None:
                data = decrypt_object(data, self.name, manifest.encryption, master_keys or {})
        return data


@dataclass
class Report:
    """What a verification found. Violations are counted per kind; the first MAX_EXAMPLES_PER_KIND
    of each kind are kept, so a badly damaged archive still verifies in flat memory."""

    source: str
    objects: int = 0
    objects_valid: int = 0
    retries: int = 0
    records: int = 0
    entries: int = 0
    checkpoints: int = 0
    checkpoints_valid: int = 0
    violation_counts: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    notices: list[Violation] = field(default_factory=list)
    incremental: dict[str, Any] | None = None  # an incremental run: what it started from (verifier.incremental)
    logging: LoggingRecord = field(default_factory=LoggingRecord)  # tree head times and silent intervals

    def notice(self, notice: Violation) -> None:
        """Keep a finding that is not a violation (severity warning: e.g. the sink's lag)."""
        self.notices.append(notice)

    def add(self, violation: Violation) -> None:
        """Count a violation, keeping it as an example if its kind has few yet."""
        count = self.violation_counts.get(violation.kind, 0)
        self.violation_counts[violation.kind] = count + 1
        if count < MAX_EXAMPLES_PER_KIND:
            self.violations.append(violation)

    @property
    def violation_total(self) -> int:
        """All violations found, examples kept or not."""
        return sum(self.violation_counts.values())

    @property
    def intact(self) -> bool:
        """True if nothing at all was found wrong."""
        return not self.violation_counts

    def absorb(self, auditor: ChainAuditor, scope: str) -> None:
        """Add one archive's chain verification results (``scope`` prefixes its chain ids)."""
        for violation in auditor.violations:
            self.add(violation)
        self.notices.extend(auditor.notices)
        self.entries += auditor.entries_checked
        self.checkpoints += auditor.checkpoints_checked
        self.checkpoints_valid += auditor.checkpoints_valid
        self.logging.absorb(auditor.logging, scope)
        for chain_id, chain in auditor.chains.items():
            self.last_seq[f"{scope}{chain_id}"] = chain.head_seq

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "source": self.source, "intact": self.intact,
            "objects": {"checked": self.objects, "valid": self.objects_valid,
                        "invalid": self.objects - self.objects_valid, "identical_retries": self.retries},
            "records": {"checked": self.records, "entries": self.entries},
            "checkpoints": {"checked": self.checkpoints, "valid": self.checkpoints_valid,
                            "invalid": self.checkpoints - self.checkpoints_valid},
            "chains": {chain_id: {"last_seq": seq} for chain_id, seq in sorted(self.last_seq.items())},
            "violation_counts": dict(sorted(self.violation_counts.items())),
            "violations": [v.as_dict() for v in self.violations],
            "notices": [dict(n.as_dict(), severity="warning") for n in self.notices],
            **({"incremental": self.incremental} if self.incremental is not None else {}),
        }


def entry_scope(entry: ArchiveEntry) -> str:
    """The archive (prefix, topic) an entry belongs to, as report chain ids are prefixed with it."""
    return f"{entry.key.prefix}{entry.key.topic}:"


def _archive_order(entry: ArchiveEntry) -> tuple:
    # one archive is one (prefix, topic); its chains are read partition by partition in offset order
    return (entry.key.prefix, entry.key.topic, entry.key.partition, entry.key.first_offset)


MAX_EXAMPLES_PER_KIND = 50


@lru_cache(maxsize=1)
def _archived_record_decoder():
    # (fields, decoder, index of offset, index of value) of the schema the sink writes
    schema = archived_record_schema()
    fields = record_fields(schema)
    names = [name for name, _ in fields]
    return fields, compile_decoder(schema), names.index("offset"), names.index("value")


def sink_blocks(container: bytes) -> Iterator[tuple[bytes, int, int]] | None:
    """(record bytes, record count, byte offset) of each block of an (unencrypted) object, in file order;
    None if the container's header holds another writer schema than the sink's.

    fastavro reads the container (header, sync markers, codec); the records of a block are for the
    caller to decode (with the specialised reader), then to check with :func:`require_block_end`.
    """
    blocks = fastavro.block_reader(io.BytesIO(container))
    if record_fields(blocks.writer_schema) != _archived_record_decoder()[0]:
        return None
    return ((block.bytes_.getvalue(), block.num_records, block.offset) for block in blocks)


def require_block_end(position: int, end: int, records: int, block_offset: int) -> None:
    """CorruptBodyError if a block's last record ends before the block does (fastavro lets that through)."""
    if position != end:
        raise CorruptBodyError(f"{end - position} bytes after the last of the {records} records "
                               f"of the block at byte {block_offset}")


def archived_values(container: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, value) of each ArchivedRecord of an (unencrypted) object's bytes, in file order.

    The same pairs as :func:`pipeline.archive.container.read_archived_records`, faster: the records
    of each of :func:`sink_blocks` are decoded by the specialised reader, which also rejects what
    fastavro would let through (a short value, a block with bytes after its last record). A
    container whose header holds another writer schema than the sink's is read by fastavro
    record by record.
    """
    blocks = sink_blocks(container)
    if blocks is None:
        for record in read_archived_records(container):
            yield record["offset"], record["value"]
        return
    yield from block_values(blocks)


def block_values(blocks: Iterable[tuple[bytes, int, int]]) -> Iterator[tuple[int, bytes]]:
    """(offset, value) of each ArchivedRecord of :func:`sink_blocks`' blocks (already inflated), in order."""
    _, decode, offset_index, value_index = _archived_record_decoder()
    for data, records, block_offset in blocks:
        position, end = 0, len(data)
        for _ in range(records):
            values, position = decode(data, position, end)
            yield values[offset_index], values[value_index]
        require_block_end(position, end, records, block_offset)


@lru_cache(maxsize=1)
def _entry_scan_layout() -> tuple:
    # EntryScan's arguments: the sink's ArchivedRecord layout and the newest SealedEvent's header and fields
    fields, _, offset_index, value_index = _archived_record_decoder()
    event = sealed_codecs().event
    return fields, offset_index, value_index, event.header, record_fields(event.schema.parsed)


class DirectorySource:
    """A local copy of a bucket with the same key layout (one version per key, no locks)."""

    def __init__(self, root: Path, prefix: str = "") -> None:
        self.root = root
        self.prefix = prefix
        self.description = f"dir {root}"
        self.foreign: list[str] = []  # names under the prefix the layout does not use, filled by entries()

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every archived object under the prefix, in (topic, partition, first offset) order."""
        found: dict[str, ArchiveEntry] = {}
        for path in sorted(self.root.rglob("*")):
            if not path.is_file():
                continue
            name = path.relative_to(self.root).as_posix()
            if not name.startswith(self.prefix):
                continue
            key = parse_key(name)
            if key is None:
                if not name.startswith(PROBE_PREFIX):
                    self.foreign.append(name)
                continue
            entry = found.setdefault(key.object_key, ArchiveEntry(key, key.object_key))
            stat = path.stat()
            version = ObjectVersion(None, path.read_bytes, fingerprint=f"{stat.st_size}:{stat.st_mtime_ns}")
            (entry.manifest_versions if key.is_manifest else entry.versions).append(version)
        yield from sorted(found.values(), key=_archive_order)


class BucketSource:
    """A bucket read through S3 with every object version and its Object Lock retention."""

    def __init__(self, s3, bucket: str, prefix: str = "") -> None:
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.description = f"s3://{bucket}/{prefix}"
        self.foreign: list[str] = []  # keys (with version ids) the layout does not use, filled by entries()
        # keys whose versions' locks are not read (an incremental run's already verified objects: their
        # COMPLIANCE retention was checked and cannot be shortened); None: every lock is read
        self.skip_lock: Callable[[str], bool] | None = None
        # makes a new client: a forked worker of verify --jobs must not share the parent's connections
        self.client_factory: Callable[[], Any] | None = None

    def entries(self) -> Iterator[ArchiveEntry]:
        """Every archived object under the prefix with all its versions, in key order."""
        found: dict[str, ArchiveEntry] = {}
        paginator = self.s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Versions", []):
                key = parse_key(item["Key"])
                if key is None:
                    # conformance probes of `s3 check` live at the bucket's root, outside any archive prefix
                    if not item["Key"].startswith(PROBE_PREFIX):
                        self.foreign.append(f"{item['Key']} (version {item['VersionId']})")
                    continue
                entry = found.setdefault(key.object_key, ArchiveEntry(key, key.object_key))
                if self.skip_lock is not None and self.skip_lock(item["Key"]):
                    version = self._unlocked(item["Key"], item["VersionId"], item["LastModified"])
                else:
                    version = self._version(item["Key"], item["VersionId"], item["LastModified"])
                version = dataclasses.replace(
                    version, fingerprint=f"{item['VersionId']}:{item.get('ETag')}:{item.get('Size')}")
                (entry.manifest_versions if key.is_manifest else entry.versions).append(version)
            for marker in page.get("DeleteMarkers", []):
                key = parse_key(marker["Key"])
                if key is not None and marker.get("IsLatest"):
                    found.setdefault(key.object_key, ArchiveEntry(key, key.object_key)).hidden = True
        for entry in found.values():
            entry.versions.sort(key=lambda v: v.modified)
            entry.manifest_versions.sort(key=lambda v: v.modified)
        yield from sorted(found.values(), key=_archive_order)

    def _unlocked(self, key: str, version_id: str, modified) -> ObjectVersion:
        # a version whose lock is not looked up (lock None: not checked)
        def read() -> bytes:
            return self.s3.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)["Body"].read()

        return ObjectVersion(version_id, read, None, modified)

    def _version(self, key: str, version_id: str, modified) -> ObjectVersion:
        try:
            retention = self.s3.get_object_retention(Bucket=self.bucket, Key=key, VersionId=version_id)["Retention"]
            lock = (retention.get("Mode"), retention.get("RetainUntilDate"))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchObjectLockConfiguration",
                                                                 "ObjectLockConfigurationNotFoundError"):
                raise
            lock = (None, None)  # reported as not_locked
        return dataclasses.replace(self._unlocked(key, version_id, modified), lock=lock)


@dataclass
class ArchiveVerifier:
    """Runs one verification over a source."""

    keyring: Keyring
    profiles: ComplianceProfiles | None = None
    master_keys: dict[str, KeyEncryptionKey] = field(default_factory=dict)
    progress: Callable[[int, str], None] | None = None
    # stale_head: a chain's newest tree head older than as_of (default: now) minus the tolerance
    as_of_micros: int | None = None
    head_tolerance_s: float = DEFAULT_HEAD_TOLERANCE_S
    # called with (entry, manifest or None, decrypted object bytes) for each readable object, e.g. the
    # reconciler's attestation audit (pipeline.verifier.attestations)
    observers: list[Callable[[ArchiveEntry, Manifest | None, bytes], None]] = field(default_factory=list)
    # verify --policy: a WitnessAudit per archive, checking heads and cosignatures against the witness policy
    witness_audit: Callable[[int, int], WitnessAudit] | None = None
    _witness: WitnessAudit | None = field(default=None, init=False, repr=False)
    # objects whose only findings wait for the witness audit: (name, those findings)
    _pending_objects: list[tuple[str, list[Violation]]] = field(default_factory=list, init=False, repr=False)

    def _auditor(self, scope: str = "") -> ChainAuditor:
        as_of = self.as_of_micros if self.as_of_micros is not None else time.time_ns() // 1000
        return ChainAuditor(self.keyring, as_of_micros=as_of, head_tolerance_micros=int(self.head_tolerance_s * 1e6))

    def verify(self, source) -> Report:
        """Verify every object of ``source``; never raises for what it finds, only reports it."""
        report = Report(source.description)
        codecs = sealed_codecs()
        for scope, entries in self._archives(source, report):
            self._begin_witness()
            auditor = self._auditor(scope)
            self._verify_objects(entries, report, auditor, self._last_ends(scope), codecs)
            self._close(scope, auditor, report)
        self._account_for_everything(source, report)
        return report

    def _archives(self, source, report: Report) -> Iterator[tuple[str, Iterator[ArchiveEntry]]]:
        # (scope, its entries) of each archive (prefix, topic) under the source, in archive order
        return ((scope, entries) for scope, entries in itertools.groupby(source.entries(), key=entry_scope))

    def _last_ends(self, scope: str) -> dict[tuple[str, int], tuple[int, str]]:
        # per partition of the archive: the last offset already read, and its object (for OVERLAP)
        return {}

    def _begin_witness(self) -> None:
        # verify --policy: one WitnessAudit per archive, fed its heads and cosignatures as they are read
        if self.witness_audit is not None:
            as_of = self.as_of_micros if self.as_of_micros is not None else time.time_ns() // 1000
            self._witness = self.witness_audit(as_of, int(self.head_tolerance_s * 1e6))

    def _close(self, scope: str, auditor: ChainAuditor, report: Report) -> None:
        # the end of one archive's objects: its chains' tails and heads are judged, then reported
        auditor.finish()
        if self._witness is not None:
            found = self._witness.finish()
            auditor.violations.extend(self._witness.confirmed())
            for _, held in self._pending_objects:
                if not any(self._witness.confirms(v) for v in held):
                    report.objects_valid += 1  # its one finding was withdrawn
            self._pending_objects = []
            auditor.violations.extend(found)
            auditor.notices.extend(self._witness.notices)
            self._witness = None
        report.absorb(auditor, scope)

    def _verify_objects(self, entries, report: Report, auditor: ChainAuditor, last_end, codecs) -> None:
        """Verify these entries of one archive, in order, into ``report`` and ``auditor`` (not finished)."""
        for entry in entries:
            report.objects += 1
            if self.progress:
                self.progress(report.objects, entry.name)
            before = report.violation_total + len(auditor.violations)
            self._verify_entry(entry, report, auditor, codecs, last_end)
            # verify --policy: a head reported for its key's compromise waits for the witnesses' word (a quorum
            # cosignature from before the compromise withdraws the report: WitnessAudit.finish)
            deferred = [v for v in auditor.violations if self._witness is not None and self._witness.defers(v)]
            if report.violation_total + len(auditor.violations) - len(deferred) == before:
                if deferred:
                    self._pending_objects.append((entry.name, deferred))
                else:
                    report.objects_valid += 1
            # chain violations are moved into the report as they come, keeping the auditor small
            for violation in auditor.violations:
                if not any(violation is held for held in deferred):
                    report.add(violation)
            auditor.violations.clear()

    def _account_for_everything(self, source, report: Report) -> None:
        # Every name under the prefix is part of the archive or reported, and an archive that holds no
        # chain proves nothing: a verification of it must not read as INTACT.
        for name in getattr(source, "foreign", []):
            report.add(Violation(FOREIGN_OBJECT, None, None, name,
                                 "not a key of the archive layout ({prefix}{topic}/{partition:03d}/"
                                 "{first:020d}-{last:020d}.avro[.enc][.manifest.json]): planted, renamed or foreign"))
        if self._listed_objects(report) == 0:
            report.add(Violation(NO_ARCHIVE, None, None, source.description,
                                 "no archived object under this prefix: an empty or mistyped prefix proves nothing"))
        elif not report.last_seq:
            report.add(Violation(NO_CHAIN, None, None, source.description,
                                 f"{report.objects} object(s) but no chain entry or checkpoint in any of them"))

    def _listed_objects(self, report: Report) -> int:
        # the archive's objects this run accounts for (an incremental run also those it did not read again)
        return report.objects

    def _violation(self, report: Report, kind: str, entry: ArchiveEntry, detail: str, chain_id=None, seq=None):
        report.add(Violation(kind, chain_id, seq, entry.name, detail))

    def _verify_entry(self, entry, report, auditor, codecs, last_end) -> None:
        if entry.hidden:
            self._violation(report, HIDDEN, entry, "the latest version is a delete marker; the locked versions remain "
                            "and are verified")
        if not entry.versions:
            self._violation(report, UNREADABLE, entry, "a manifest without its object")
            return
        data = entry.versions[0].read()
        digests = {hashlib.sha256(v.read()).hexdigest() for v in entry.versions[1:]} if len(entry.versions) > 1 else set()
        digest = hashlib.sha256(data).hexdigest()
        if digests - {digest}:
            self._violation(report, CONFLICTING_VERSIONS, entry,
                            f"{len(entry.versions)} versions with different content; the oldest is verified")
        elif digests:
            report.retries += len(entry.versions) - 1
        manifest = self._manifest(entry, report)
        for version in entry.versions:
            self._check_lock(entry, version, manifest, report)
        if manifest is not None:
            if manifest.key != entry.name:
                self._violation(report, MANIFEST_MISMATCH, entry, f"manifest describes {manifest.key}, not this key")
            if manifest.sha256 != digest or manifest.size != len(data):
                self._violation(report, MANIFEST_MISMATCH, entry,
                                f"object sha256 {digest[:16]}… size {len(data)}, manifest says "
                                f"{manifest.sha256[:16]}… size {manifest.size}: the object was altered")
            if manifest.encryption is not None:
                try:
                    data = decrypt_object(data, entry.name, manifest.encryption, self.master_keys)
                except DecryptionError as exc:
                    self._violation(report, UNREADABLE, entry, str(exc))
                    return
        position = (entry.key.prefix + entry.key.topic, entry.key.partition)
        previous = last_end.get(position)
        if previous is not None and entry.key.first_offset <= previous[0]:
            self._violation(report, OVERLAP, entry, f"offsets {entry.key.first_offset}..{entry.key.last_offset} overlap "
                            f"{previous[1]}")
        last_end[position] = (entry.key.last_offset, entry.name)
        for observer in self.observers:
            observer(entry, manifest, data)
        values_again = self._stream_records(entry, data, manifest, report, auditor, codecs)
        if manifest is not None and manifest.index is not None and values_again is not None:
            mismatch = index_mismatch(manifest.index, values_again)
            if mismatch is not None:
                report.add(Violation(INDEX_MISMATCH, None, None, manifest_key(entry.name), mismatch))

    def _manifest(self, entry: ArchiveEntry, report: Report) -> Manifest | None:
        if not entry.manifest_versions:
            self._violation(report, MISSING_MANIFEST, entry, "no manifest beside the object")
            return None
        try:
            return Manifest.from_bytes(entry.manifest_versions[0].read(), f"{entry.name}.manifest.json")
        except ManifestError as exc:
            self._violation(report, BAD_MANIFEST, entry, str(exc))
            return None

    def _check_lock(self, entry: ArchiveEntry, version: ObjectVersion, manifest: Manifest | None, report: Report) -> None:
        if version.lock is None:
            return  # a local copy carries no locks
        mode, until = version.lock[0], version.lock[1]
        if mode != "COMPLIANCE" or until is None:
            self._violation(report, NOT_LOCKED, entry, f"version {version.version_id}: lock mode {mode or 'none'}, "
                            "expected COMPLIANCE")
            return
        if manifest is None:
            return
        required = manifest.retain_until_datetime
        if self.profiles is not None:
            try:
                profile = self.profiles.get(manifest.compliance_profile)
                required = max(required, profile.retain_until(manifest.last_timestamp_micros))
            except ConfigError as exc:  # an unknown profile name is itself a finding, not a crash
                self._violation(report, RETENTION_TOO_SHORT, entry, f"compliance profile: {exc}")
        if until < required:
            self._violation(report, RETENTION_TOO_SHORT, entry,
                            f"version {version.version_id}: retained until {until:%Y-%m-%dT%H:%M:%SZ}, "
                            f"required {required:%Y-%m-%dT%H:%M:%SZ} ({manifest.compliance_profile})")

    def _stream_records(self, entry, data, manifest, report, auditor, codecs
                        ) -> Callable[[], Iterable[tuple[int, bytes]]] | None:
        # Clean event entries are taken by the compiled EntryScan; every other record (a checkpoint,
        # a rejection, the first of a chain, anything wrong) by _record, which names what is wrong.
        # Returns how to read the object's (offset, value) pairs again without inflating its blocks a
        # second time (the query-index check's), or None if the object is unreadable (reported here).
        count = 0
        chains: dict[str, list[int]] = {}
        scan = EntryScan(*_entry_scan_layout())
        scan.expect_offsets(entry.key.first_offset, entry.key.last_offset)
        inflated: list[tuple[bytes, int, int]] = []
        values_again: Callable[[], Iterable[tuple[int, bytes]]] = lambda: block_values(inflated)  # noqa: E731
        try:
            blocks = sink_blocks(data)
            if blocks is None:
                for record in read_archived_records(data):
                    count += 1
                    self._record(record["offset"], record["value"], entry, scan, chains, report, auditor, codecs)
                blocks = ()
                values_again = lambda: archived_values(data)  # noqa: E731
            _, decode, offset_index, value_index = _archived_record_decoder()
            for block, records, block_offset in blocks:
                inflated.append((block, records, block_offset))
                position, end, left = 0, len(block), records
                while left:
                    position, accepted = scan.scan(block, position, end, left)
                    count += accepted
                    auditor.entries_checked += accepted
                    left -= accepted
                    if left:
                        values, position = decode(block, position, end)
                        count += 1
                        left -= 1
                        self._record(values[offset_index], values[value_index], entry, scan, chains, report,
                                     auditor, codecs)
                require_block_end(position, end, records, block_offset)
        except Exception as exc:  # fastavro signals a damaged container with many exception types
            self._violation(report, UNREADABLE, entry, f"not a readable Avro container: {type(exc).__name__}: {exc}")
            return None
        finally:
            report.records += count
        if manifest is not None:
            declared = {c.chain_id: [c.first_seq, c.last_seq] for c in manifest.chains}
            if count != manifest.record_count or declared != chains:
                self._violation(report, MANIFEST_MISMATCH, entry,
                                f"object holds {count} records, chains {chains}; manifest says "
                                f"{manifest.record_count}, chains {declared}")
        return values_again

    def _record(self, offset, value, entry, scan, chains, report, auditor, codecs) -> None:
        # one archived record the EntryScan did not take: checked and reported the readable way
        location = f"{entry.name} offset {offset}"
        first_offset, last_offset = entry.key.first_offset, entry.key.last_offset
        if not first_offset <= offset <= last_offset or offset <= scan.previous_offset:
            self._violation(report, MANIFEST_MISMATCH, entry,
                            f"record offset {offset} outside {first_offset}..{last_offset} "
                            f"or not after {scan.previous_offset}")
        scan.previous_offset = offset
        try:
            kind, fields = codecs.decode_fields(value)
        except (AuditSealError, ValueError) as exc:  # an undecodable value is reported where it is
            auditor.violations.append(Violation(ViolationKind.MALFORMED, None, None, location, str(exc)))
            return
        if kind == CHECKPOINT_KIND:
            auditor.checkpoint(codecs.record_of_fields(kind, fields), location)
            return
        if kind == HEAD_KIND:
            record = codecs.record_of_fields(kind, fields)
            mark = len(auditor.violations)
            auditor.head(record, location)
            if self._witness is not None:
                # a head reported only for its key's compromise still has a verified root: the witnesses may
                # show it existed before the compromise
                self._witness.head(record, location, all(v.kind in (ViolationKind.LOGGING_GAP,
                                                                    ViolationKind.COMPROMISED_KEY)
                                                         for v in auditor.violations[mark:]))
            return
        if kind == COSIGNATURE_KIND:  # the witnesses' word: checked with verify --policy
            if self._witness is not None:
                self._witness.cosignature(codecs.record_of_fields(kind, fields), location)
            return
        chain_id, seq = fields[0], fields[1]
        try:
            payload = entry_payload_of_fields(kind, fields)
        except ValueError as exc:  # a gap entry with an unknown cause or an inverted range
            auditor.violations.append(Violation(ViolationKind.MALFORMED, chain_id, seq, location, str(exc)))
            return
        is_gap = kind == GAP_KIND
        auditor.entry_fields(chain_id, seq, fields[2], fields[3], payload, location,
                             fields[5] if isinstance(fields[5], int) else -1, fields[7] if is_gap else -1)
        if is_gap:
            auditor.gap(chain_id, seq, fields[5], fields[7], fields[8], fields[9], location)
        seqs = chains.get(chain_id)
        if seqs is None:
            seqs = chains[chain_id] = [seq, seq]
        else:
            seqs[1] = seq
        scan.follow(auditor.chains.get(chain_id), seqs)
