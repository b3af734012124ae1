"""A verified timeline: the events of an archive that match a query, each with its chain position and
whether a valid signed checkpoint covers it, and everything that makes the answer incomplete.

Reading (:func:`build_timeline`), for each partition of the archive (a :class:`~pipeline.verifier.archive.DirectorySource`
or :class:`~pipeline.verifier.archive.BucketSource`, as ``auditseal verify`` reads it):

1. Every manifest is read (they are small). Their chain ranges and checkpoint ranges must follow each
   other from seq 0 with no hole (a hole is a ``gap``); a missing or malformed manifest, a delete marker,
   or a name the layout does not use is a problem of the answer, since what it hides cannot be queried.
2. An object is read when its query index (:mod:`pipeline.archive.query_index`) says it may hold a match,
   or it has no index (manifests written before the index existed, ``use_index=False``). Around each, the
   objects holding the rest of its entries' batches are read too (from the manifests' checkpoint ranges),
   so each batch is whole: its checkpoint can be checked and an inclusion proof built (their entries are
   hashed, their events not read: their index rules them out).
3. The records of each run of consecutive objects read go through the verifier's
   :class:`~pipeline.verifier.chains.ChainAuditor` (the integrity core's state machine): every entry's hash
   recomputes, every checkpoint's Merkle root, Ed25519 signature under a key valid at its time, and its link
   to the previous checkpoint. A run that starts mid-chain starts at a batch boundary, from the previous
   checkpoint's hash as the manifests state it, and trusts the first entry's ``prev_hash``: linking it to the
   entries of objects not read is ``auditseal verify``'s whole-archive job.
4. A matching event is VERIFIED when its batch had no finding and its checkpoint verifies; otherwise it is
   listed UNVERIFIED with the first finding. With ``proofs`` each verified event carries the inclusion
   proof of :mod:`pipeline.verifier.proofs` (``auditseal verify-proof`` checks it offline).

Memory holds the matches and one batch per chain, not the archive.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.archive.encryption import DecryptionError, KeyEncryptionKey, decrypt_object
from pipeline.archive.layout import Manifest, ManifestError
from pipeline.archive.query_index import IndexBuilder
from pipeline.errors import AuditSealError
from pipeline.integrity.chain_state import ChainState
from pipeline.integrity.keyring import Keyring
from pipeline.siem.batches import plain_event_reader
from pipeline.timeline.query import TimelineQuery
from pipeline.verifier.archive import ArchiveEntry, archived_values
from pipeline.verifier.chains import ChainAuditor, Violation, ViolationKind
from pipeline.verifier.proofs import InvalidProofError, build_proof
from pipeline.wire.codec import DecodeError
from pipeline.wire.event_head import EventHead, read_event_head
from pipeline.wire.sealed import (
    CHECKPOINT_KIND,
    COSIGNATURE_KIND,
    EVENT_KIND,
    HEAD_KIND,
    entry_payload_of_fields,
    sealed_codecs,
)

VERIFIED, UNVERIFIED = "verified", "UNVERIFIED"

# problems of the answer that are not chain violations (those keep pipeline.integrity.chain_state's names)
MISSING_MANIFEST = "missing_manifest"
BAD_MANIFEST = "malformed_manifest"
MANIFEST_MISMATCH = "manifest_mismatch"
INDEX_MISMATCH = "index_mismatch"          # an object's events are not what its manifest's index says
UNREADABLE = "unreadable_object"
HIDDEN = "delete_marker"
FOREIGN_OBJECT = "unknown_object"
OVERLAP = "overlapping_objects"             # two objects claim the same seqs of a chain
MANIFEST_GAP = "gap"                       # the manifests' chain ranges leave seqs out
CHECKPOINT_RANGE_GAP = "checkpoint_chain_broken"
NO_ARCHIVE = "no_archive"


@dataclass
class TimelineEvent:
    """One event of the answer: what it says, where it sits in its chain, and what was verified about it."""

    head: EventHead
    event: dict[str, Any]
    chain_id: str
    seq: int
    entry_hash: str
    location: str
    status: str = UNVERIFIED
    problem: str | None = "no checkpoint covering it was read"
    checkpoint: dict[str, Any] | None = None
    proof: dict[str, Any] | None = None
    source_timestamp_micros: int | None = None  # the raw record's broker timestamp (sealed with the event)

    @property
    def sort_key(self) -> tuple[int, str, int]:
        """Time order (occurred_at), then chain position for events of the same microsecond."""
        return self.head.occurred_at_micros, self.chain_id, self.seq

    def as_dict(self) -> dict[str, Any]:
        """JSON form (one line of ``timeline --json``)."""
        return {"type": "event", "occurred_at_micros": self.head.occurred_at_micros, "event_id": self.head.event_id,
                "actor": self.event.get("actor"), "action": self.head.action, "resource": self.event.get("resource"),
                "outcome": self.event.get("outcome"), "source_service": self.event.get("source_service"),
                "attributes": self.event.get("attributes"),
                "chain_id": self.chain_id, "seq": self.seq, "hash": self.entry_hash, "location": self.location,
                "status": self.status, "problem": self.problem, "checkpoint": self.checkpoint,
                "source_timestamp_micros": self.source_timestamp_micros}


@dataclass
class Timeline:
    """The answer to one query (module docstring)."""

    source: str
    query: TimelineQuery
    events: list[TimelineEvent] = field(default_factory=list)
    problems: list[Violation] = field(default_factory=list)
    objects_total: int = 0
    objects_read: int = 0
    objects_indexed: int = 0
    records_read: int = 0
    events_read: int = 0

    @property
    def complete(self) -> bool:
        """True if nothing was found that could hide or falsify a matching event."""
        return not self.problems and all(event.status == VERIFIED for event in self.events)

    @property
    def objects_skipped(self) -> int:
        """Objects not read because their index ruled them out."""
        return self.objects_total - self.objects_read

    def summary(self) -> dict[str, Any]:
        """JSON form of everything but the events (the last line of ``timeline --json``)."""
        return {"type": "summary", "source": self.source, "query": self.query.as_dict(), "complete": self.complete,
                "events": len(self.events), "verified": sum(e.status == VERIFIED for e in self.events),
                "objects": {"total": self.objects_total, "read": self.objects_read, "skipped": self.objects_skipped,
                            "with_index": self.objects_indexed},
                "records_read": self.records_read, "events_read": self.events_read,
                "problems": [p.as_dict() for p in self.problems]}


@dataclass
class _Object:
    entry: ArchiveEntry
    manifest: Manifest | None
    selected: bool = False
    wanted: bool = True  # False: read only for the batches of its neighbours (its index rules it out)


@dataclass
class _Pending:
    fields: tuple[Any, ...]
    event: TimelineEvent


def _first_manifest(entry: ArchiveEntry, problems: list[Violation]) -> Manifest | None:
    if not entry.manifest_versions:
        problems.append(Violation(MISSING_MANIFEST, None, None, entry.name, "no manifest beside the object: "
                                  "its chain range is unknown"))
        return None
    try:
        return Manifest.from_bytes(entry.manifest_versions[0].read(), f"{entry.name}.manifest.json")
    except ManifestError as exc:
        problems.append(Violation(BAD_MANIFEST, None, None, entry.name, str(exc)))
        return None


def _check_manifest_continuity(objects: list[_Object], problems: list[Violation]) -> None:
    # Chain ranges and checkpoint ranges across a partition's objects must leave no seq out.
    last_entry: dict[str, tuple[int, str]] = {}
    last_checkpoint: dict[str, tuple[int, str]] = {}
    for obj in objects:
        if obj.manifest is None:
            continue
        for chain in obj.manifest.chains:
            previous, where = last_entry.get(chain.chain_id, (-1, "the start of the archive"))
            if chain.first_seq > previous + 1:
                problems.append(Violation(MANIFEST_GAP, chain.chain_id, previous + 1, obj.entry.name,
                                          f"seq {previous + 1}..{chain.first_seq - 1} are in no archived object "
                                          f"(between {where} and this object)"))
            elif chain.first_seq <= previous and chain.chain_id in last_entry:
                problems.append(Violation(OVERLAP, chain.chain_id, chain.first_seq, obj.entry.name,
                                          f"seq {chain.first_seq}..{min(previous, chain.last_seq)} are claimed again "
                                          f"(already in {where}): a second history or a planted object"))
            last_entry[chain.chain_id] = (max(previous, chain.last_seq), obj.entry.name)
        for checkpoint in obj.manifest.checkpoints:
            previous, where = last_checkpoint.get(checkpoint.chain_id, (-1, "the start of the archive"))
            if checkpoint.first_seq > previous + 1:
                problems.append(Violation(CHECKPOINT_RANGE_GAP, checkpoint.chain_id, previous + 1, obj.entry.name,
                                          f"no archived checkpoint signs seq {previous + 1}..{checkpoint.first_seq - 1} "
                                          f"(after {where})"))
            last_checkpoint[checkpoint.chain_id] = (max(previous, checkpoint.last_seq), obj.entry.name)


def _batch_start(checkpoint_ends: list[int], seq: int) -> int:
    # the first seq of the batch holding `seq`: one after the last checkpoint ending before it
    return 1 + max((end for end in checkpoint_ends if end < seq), default=-1)


def _select(objects: list[_Object], query: TimelineQuery, use_index: bool) -> None:
    # the objects whose index may match, then every object holding a part of their batches
    if not use_index or any(obj.manifest is None for obj in objects):
        for obj in objects:
            obj.selected = True
        return
    wanted = [obj.manifest.index is None or query.may_match(obj.manifest.index) for obj in objects
              if obj.manifest is not None]
    ends: dict[str, list[int]] = {}
    checkpoint_at: dict[str, list[tuple[int, int, int]]] = {}
    for number, obj in enumerate(objects):
        assert obj.manifest is not None
        for ref in obj.manifest.checkpoints:
            ends.setdefault(ref.chain_id, []).append(ref.last_seq)
            checkpoint_at.setdefault(ref.chain_id, []).append((ref.first_seq, ref.last_seq, number))
    for number, obj in enumerate(objects):
        obj.wanted = wanted[number]
        if not obj.wanted:
            continue
        assert obj.manifest is not None
        low, high = number, number
        for chain in obj.manifest.chains:
            start = _batch_start(ends.get(chain.chain_id, []), chain.first_seq)
            while low > 0 and not _holds(objects[low], chain.chain_id, start):
                low -= 1
            covering = [at for first, last, at in checkpoint_at.get(chain.chain_id, []) if first <= chain.last_seq <= last]
            high = max(high, covering[0] if covering else len(objects) - 1)
        for index in range(low, high + 1):
            objects[index].selected = True


def _holds(obj: _Object, chain_id: str, seq: int) -> bool:
    assert obj.manifest is not None
    return any(c.chain_id == chain_id and c.first_seq <= seq <= c.last_seq for c in obj.manifest.chains)


@dataclass
class TimelineBuilder:
    """Builds one :class:`Timeline` (module docstring)."""

    keyring: Keyring
    master_keys: Mapping[str, KeyEncryptionKey] = field(default_factory=dict)
    use_index: bool = True
    proofs: bool = False
    progress: Callable[[int, str], None] | None = None

    def build(self, source: Any, query: TimelineQuery) -> Timeline:
        """The timeline of ``query`` over ``source``; never raises for what it finds in the archive."""
        timeline = Timeline(source.description, query)
        partitions: dict[tuple[str, str, int], list[_Object]] = {}
        for entry in source.entries():
            timeline.objects_total += 1
            if entry.hidden:
                timeline.problems.append(Violation(HIDDEN, None, None, entry.name, "the latest version is a delete "
                                                   "marker; the locked versions are read"))
            if not entry.versions:
                timeline.problems.append(Violation(UNREADABLE, None, None, entry.name, "a manifest without its object"))
                continue
            manifest = _first_manifest(entry, timeline.problems)
            if manifest is not None and manifest.index is not None:
                timeline.objects_indexed += 1
            partitions.setdefault((entry.key.prefix, entry.key.topic, entry.key.partition), []).append(
                _Object(entry, manifest))
        for name in getattr(source, "foreign", []):
            timeline.problems.append(Violation(FOREIGN_OBJECT, None, None, name, "not a key of the archive layout: "
                                               "planted, renamed or foreign"))
        if timeline.objects_total == 0:
            timeline.problems.append(Violation(NO_ARCHIVE, None, None, source.description,
                                               "no archived object under this prefix: nothing can be answered"))
        for objects in partitions.values():
            _check_manifest_continuity(objects, timeline.problems)
            _select(objects, query, self.use_index)
            self._read_partition(objects, query, timeline)
        timeline.events.sort(key=lambda event: event.sort_key)
        return timeline

    def _read_partition(self, objects: list[_Object], query: TimelineQuery, timeline: Timeline) -> None:
        start = None
        for number, obj in enumerate([*objects, None]):
            if obj is not None and obj.selected:
                if start is None:
                    start = number
                continue
            if start is not None:
                self._read_run(objects, start, number - 1, query, timeline)
                start = None

    def _run_seeds(self, objects: list[_Object], first: int) -> dict[str, tuple[int, bytes | None]]:
        # chain -> (first seq to read, hash of the checkpoint before it per the manifests) of a mid-chain run
        seeds: dict[str, tuple[int, bytes | None]] = {}
        if first == 0 or objects[first].manifest is None:
            return seeds
        refs = [ref for obj in objects[:first + 1] if obj.manifest is not None for ref in obj.manifest.checkpoints]
        first_manifest = objects[first].manifest
        for chain in first_manifest.chains:
            ends = [ref.last_seq for ref in refs if ref.chain_id == chain.chain_id]
            start = _batch_start(ends, chain.first_seq)
            if start == 0:
                continue  # the run holds the chain from its genesis: nothing to seed
            if start < chain.first_seq:
                # the batch straddling the run's start began in an object not read (which the index ruled
                # out): the run starts with the next batch
                later = [end for end in ends if end >= chain.first_seq]
                start = min(later) + 1 if later else chain.last_seq + 1
            before = [ref for ref in refs if ref.chain_id == chain.chain_id and ref.last_seq == start - 1]
            seeds[chain.chain_id] = (start, bytes.fromhex(before[-1].checkpoint_hash) if before else None)
        return seeds

    def _read_run(self, objects: list[_Object], first: int, last: int, query: TimelineQuery,
                  timeline: Timeline) -> None:
        reader = _RecordReader(self, query, timeline, self._run_seeds(objects, first))
        for obj in objects[first:last + 1]:
            timeline.objects_read += 1
            if self.progress:
                self.progress(timeline.objects_read, obj.entry.name)
            data = self._object_bytes(obj, timeline)
            if data is None:
                continue
            builder = IndexBuilder() if obj.wanted else None
            try:
                for offset, value in archived_values(data):
                    reader.take(value, f"{obj.entry.name} offset {offset}", builder)
            except Exception as exc:  # fastavro signals a damaged container with many exception types
                timeline.problems.append(Violation(UNREADABLE, None, None, obj.entry.name,
                                                   f"not a readable Avro container: {type(exc).__name__}: {exc}"))
                continue
            index = obj.manifest.index if obj.manifest is not None and builder is not None else None
            if index is not None and builder is not None and index.as_dict() != builder.index().as_dict():
                timeline.problems.append(Violation(INDEX_MISMATCH, None, None, obj.entry.name,
                                                   "the manifest's query index does not describe the object's events: "
                                                   "queries skipping on it may miss events"))
        reader.close(f"end of {objects[last].entry.name}" if last == len(objects) - 1 else None)

    def build_from_topic(self, records: Any, description: str, query: TimelineQuery) -> Timeline:
        """The timeline of ``query`` over the records of ``audit.sealed`` itself ((topic, partition, offset,
        timestamp, value) in offset order per partition, e.g. :func:`pipeline.siem.export.kafka_records`).
        Every record is read and verified from the oldest retained; a topic whose retention has cut a chain's
        start shows as a gap at seq 0 (the archive holds the rest)."""
        timeline = Timeline(description, query)
        reader = _RecordReader(self, query, timeline, {})
        for topic, partition, offset, _, value in records:
            reader.take(value, f"{topic}[{partition}] offset {offset}", None, decode_heads=True)
        reader.close(f"end of {description}")
        if timeline.records_read == 0:
            timeline.problems.append(Violation(NO_ARCHIVE, None, None, description, "the topic holds no record"))
        timeline.events.sort(key=lambda event: event.sort_key)
        return timeline

    def _object_bytes(self, obj: _Object, timeline: Timeline) -> bytes | None:
        entry = obj.entry
        data = entry.versions[0].read()
        digest = hashlib.sha256(data).hexdigest()
        if len(entry.versions) > 1 and any(hashlib.sha256(v.read()).hexdigest() != digest for v in entry.versions[1:]):
            timeline.problems.append(Violation("conflicting_versions", None, None, entry.name,
                                               f"{len(entry.versions)} versions with different content; the oldest "
                                               "is read"))
        manifest = obj.manifest
        if manifest is None:
            return data
        if manifest.sha256 != digest or manifest.size != len(data):
            timeline.problems.append(Violation(MANIFEST_MISMATCH, None, None, entry.name,
                                               f"object sha256 {digest[:16]}… size {len(data)}, manifest says "
                                               f"{manifest.sha256[:16]}… size {manifest.size}: the object was altered"))
        if manifest.encryption is None:
            return data
        try:
            return decrypt_object(data, entry.name, manifest.encryption, self.master_keys)
        except DecryptionError as exc:
            timeline.problems.append(Violation(UNREADABLE, None, None, entry.name, str(exc)))
            return None

    def _resolve(self, matches: list[_Pending], problems: list[Violation], hashes: list[bytes],
                 checkpoint: dict[str, Any], location: str) -> None:
        for match in matches:
            event = match.event
            event.checkpoint = {"first_seq": checkpoint["first_seq"], "last_seq": checkpoint["last_seq"],
                                "key_id": checkpoint["key_id"], "merkle_root": checkpoint["merkle_root"].hex(),
                                "issued_at_micros": checkpoint["issued_at_micros"], "location": location}
            if problems:
                event.status, event.problem = UNVERIFIED, str(problems[0])
                continue
            event.status, event.problem = VERIFIED, None
            if self.proofs:
                entry = sealed_codecs().record_of_fields(EVENT_KIND, match.fields)
                try:
                    event.proof = build_proof(event.head.event_id, EVENT_KIND, entry, hashes, checkpoint,
                                              {"entry": event.location, "checkpoint": location})
                except InvalidProofError as exc:  # the batch did not match: the state machine said so too
                    event.status, event.problem = UNVERIFIED, str(exc)


class _RecordReader:
    """One run of sealed records in chain order: each goes through the ChainAuditor, matches wait for their
    checkpoint (module docstring, step 3 and 4)."""

    def __init__(self, builder: TimelineBuilder, query: TimelineQuery, timeline: Timeline,
                 seeds: dict[str, tuple[int, bytes | None]]) -> None:
        self.owner, self.query, self.timeline, self.seeds = builder, query, timeline, seeds
        self.codecs, self.events = sealed_codecs(), plain_event_reader()
        self.auditor = ChainAuditor(builder.keyring)
        self.batch_problems: dict[str, list[Violation]] = {}
        self.pending: dict[str, list[_Pending]] = {}

    def take(self, value: bytes, location: str, index: IndexBuilder | None, decode_heads: bool = False) -> None:
        """One record; ``index`` collects the object's events for the index check (None: an object read only for
        its neighbours' batches, whose events are not read, unless ``decode_heads``)."""
        auditor, timeline = self.auditor, self.timeline
        timeline.records_read += 1
        try:
            kind, fields = self.codecs.decode_fields(value)
        except (AuditSealError, ValueError) as exc:
            auditor.violations.append(Violation(ViolationKind.MALFORMED, None, None, location, str(exc)))
            return
        if kind == CHECKPOINT_KIND:
            record = self.codecs.record_of_fields(kind, fields)
            chain_id = record["chain_id"]
            if record["last_seq"] < self.seeds.get(chain_id, (0, None))[0]:
                return  # closes a batch before the run
            state = auditor.chains.get(chain_id)
            hashes = state.batch_hashes if state is not None else []
            mark = len(auditor.violations)
            auditor.checkpoint(record, location)
            problems = self.batch_problems.pop(chain_id, []) + auditor.violations[mark:]
            self.owner._resolve(self.pending.pop(chain_id, []), problems, hashes, record, location)
            return
        if kind == HEAD_KIND or kind == COSIGNATURE_KIND:
            return  # a tree head (or its cosignatures) is over the chain's whole history: verify's to check, not a timeline's entry
        chain_id, seq = fields[0], fields[1]
        head, unreadable = None, None
        if kind == EVENT_KIND and (index is not None or decode_heads):  # every event counts for the index check
            timeline.events_read += 1
            try:
                head = read_event_head(fields[-1])
                if index is not None:
                    index.add(head.occurred_at_micros, head.actor_id, head.resource_id)
            except DecodeError as exc:
                if index is not None:
                    index.add_undecoded()
                unreadable = Violation(ViolationKind.MALFORMED, chain_id, seq, location,
                                       f"the event does not decode: {exc}")
        seed = self.seeds.get(chain_id)
        if seed is not None and seq < seed[0]:
            if unreadable is not None:
                timeline.problems.append(unreadable)
            return  # an entry of a batch that ends before the run
        if seed is not None and chain_id not in auditor.chains:
            auditor.chains[chain_id] = ChainState(
                chain_id, head_seq=seq - 1, head_hash=fields[2], batch_first_seq=seq, expected_first_seq=seed[0],
                **({"previous_checkpoint_hash": seed[1]} if seed[1] is not None else {}))
        mark = len(auditor.violations)
        auditor.entry_fields(chain_id, seq, fields[2], fields[3], entry_payload_of_fields(kind, fields), location)
        if unreadable is not None:
            auditor.violations.append(unreadable)
        new = auditor.violations[mark:]
        if new:
            self.batch_problems.setdefault(chain_id, []).extend(new)
        if head is not None and self.query.matches(head):
            event = TimelineEvent(head, self.events.decode(fields[-1]), chain_id, seq, fields[3].hex(), location,
                                  source_timestamp_micros=fields[6])
            self.pending.setdefault(chain_id, []).append(_Pending(fields, event))
            timeline.events.append(event)

    def close(self, end_of_log: str | None) -> None:
        """The run ends: at the end of the log (``end_of_log`` names it) entries no checkpoint covers are an
        ``unsigned_tail``; matches still waiting for a checkpoint stay UNVERIFIED, saying why."""
        if end_of_log is not None:
            self.auditor.finish(end_of_log)
        for matches in self.pending.values():
            for match in matches:
                match.event.problem = ("no checkpoint read covers it yet (sealed after the last checkpoint, or its "
                                       "batch is incomplete)")
        self.timeline.problems.extend(self.auditor.violations)


def build_timeline(source: Any, query: TimelineQuery, keyring: Keyring, *,
                   master_keys: Mapping[str, KeyEncryptionKey] | None = None, use_index: bool = True,
                   proofs: bool = False, progress: Callable[[int, str], None] | None = None) -> Timeline:
    """The timeline of ``query`` over an archive source (module docstring)."""
    return TimelineBuilder(keyring, master_keys or {}, use_index, proofs, progress).build(source, query)


def build_topic_timeline(records: Any, description: str, query: TimelineQuery, keyring: Keyring, *,
                         proofs: bool = False) -> Timeline:
    """The timeline of ``query`` over the sealed topic's records (:meth:`TimelineBuilder.build_from_topic`)."""
    return TimelineBuilder(keyring, {}, False, proofs).build_from_topic(records, description, query)
