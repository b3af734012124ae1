"""Incremental verification: start from a previously verified head, read only what was archived since.

As a Certificate Transparency monitor does, a run that ends INTACT can write a *state file*
(``verify --state-out``): per chain, the last verified checkpoint and tree head (size, root, the
history tree's compact range, the signed note), per partition the last offset read, and every object
it covered (its listing fingerprint, its sha256, its record count). A later run given that file
(``verify --since-state``) then

- lists the archive (no object read) and holds every covered object to the state: still listed
  (else ``verified_object_missing``), with the listing fingerprint the state recorded, or else,
  read again, with the same bytes (else ``verified_object_changed``: rewritten after it was verified);
- starts each chain's state machine right after its verified checkpoint (so the first new entry must
  link to the verified chain head, and the first new checkpoint to the verified checkpoint);
- checks each chain's first new tree head against the verified one with an RFC 6962 / RFC 9162
  consistency proof built from the verified compact range and the new entries
  (``history_not_extending`` if the new head is smaller, or signs a history whose prefix is not the
  verified one: rewritten, truncated or forked after it was verified); later heads are recomputed from
  the tree so verified, as in a full run;
- verifies the new objects exactly as a full run does (every chain, checkpoint, head, manifest, lock).

The state file is the verifier's own input, not archive evidence: a file that does not parse, whose
sha256 does not match its contents, that was written for another source, or whose anchors (checkpoint
and tree head) do not verify under the keyring is refused in one line with exit 2 (:class:`StateFileError`)
and nothing is reported INTACT; a full verification (without ``--since-state``) is the way on. The
anchors are signed by the sealer's keys, so a forged anchor cannot pass; the list of covered objects is
only hashed, so whoever can rewrite both the archive and the state file can hide a rewrite of a covered
object from incremental runs (keep the state where only the verifier writes; a full run still finds it).
In a local copy (``--dir``) the fingerprint is a file's size and mtime: a rewrite that restores both is
found only by a full run. In a bucket it is the version id and ETag: every write makes a new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.archive.layout import Manifest, ManifestError, parse_key
from pipeline.errors import ConfigError
from pipeline.integrity.chain_state import ChainState
from pipeline.integrity.checkpoint import Checkpoint, check_key_not_compromised, verify_checkpoint_signature
from pipeline.integrity.errors import IntegrityError
from pipeline.integrity.history_tree import HistoryTree, consistency_proof_from
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.merkle import record_leaf_hash, verify_consistency
from pipeline.integrity.tree_head import open_tree_head
from pipeline.verifier.archive import (
    HIDDEN,
    ArchiveEntry,
    ArchiveVerifier,
    Report,
    entry_scope,
)
from pipeline.verifier.chains import ChainAuditor, Violation, ViolationKind

STATE_FORMAT = "auditseal-verify-state/1"

# violation kinds of an incremental run
NOT_EXTENDING = "history_not_extending"      # a new tree head that does not extend the verified one
COVERED_CHANGED = "verified_object_changed"  # an object the state covers, rewritten since it was verified
COVERED_MISSING = "verified_object_missing"  # an object the state covers, gone from the listing


class StateFileError(ConfigError):
    """A state file that cannot be used: unreadable, corrupt, tampered, or of another source (exit 2)."""


@dataclass(frozen=True)
class ChainAnchor:
    """Where one chain was verified up to: its last checkpoint, and the tree head at that size if known."""

    checkpoint: Checkpoint
    head: dict[str, Any] | None = None  # the head record (note included), of size checkpoint.last_seq + 1
    tree: HistoryTree | None = None     # the history tree at that size, as the verifier recomputed it
    head_location: str = ""


@dataclass
class VerifiedState:
    """What a verification proved, to start the next one from (module docstring)."""

    source: str
    verified_at_micros: int
    chains: dict[str, dict[str, ChainAnchor]] = field(default_factory=dict)         # scope -> chain -> anchor
    partitions: dict[str, dict[int, tuple[int, str]]] = field(default_factory=dict)  # scope -> (last offset, object)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)                 # name -> what was verified
    totals: dict[str, int] = field(default_factory=dict)


def _hex_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: {"hex": value.hex()} if isinstance(value, bytes) else value for name, value in values.items()}


def _unhex_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: bytes.fromhex(value["hex"]) if isinstance(value, dict) else value for name, value in values.items()}


def _body_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def state_to_json(state: VerifiedState) -> dict[str, Any]:
    """The state file's JSON (module docstring), its sha256 over the canonical form of the rest."""
    body = {
        "format": STATE_FORMAT, "source": state.source, "verified_at_micros": state.verified_at_micros,
        "archives": {
            scope: {
                "chains": {chain_id: {
                    "checkpoint": _hex_fields(asdict(anchor.checkpoint)),
                    "head": None if anchor.head is None else _hex_fields(anchor.head),
                    "frontier": None if anchor.tree is None else [h.hex() for h in anchor.tree.frontier],
                    "head_location": anchor.head_location,
                } for chain_id, anchor in sorted(chains.items())},
                "partitions": {str(p): list(end) for p, end in sorted(state.partitions.get(scope, {}).items())},
            } for scope, chains in sorted(state.chains.items())
        },
        "objects": dict(sorted(state.objects.items())),
        "totals": state.totals,
    }
    return {**body, "sha256": _body_digest(body)}


def write_state(path: Path, state: VerifiedState) -> None:
    """Write the state file atomically (a reader never sees half of it; the old one stays until then)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(state_to_json(state), indent=1) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        raise StateFileError(f"--state-out {path}: cannot write it: {exc.strerror}") from None


def load_state(path: Path, keyring: Keyring, source: str) -> VerifiedState:
    """Read a state file for ``source``; StateFileError (one line) if it cannot be trusted."""
    where = f"--since-state {path}"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise StateFileError(f"{where}: cannot read it: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFileError(f"{where}: corrupt, not JSON ({exc}); run a full verification") from None
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise StateFileError(f"{where}: expected a state file of format {STATE_FORMAT}, found {found!r}")
    claimed = data.pop("sha256", None)
    if claimed != _body_digest(data):
        raise StateFileError(f"{where}: corrupt or tampered: its sha256 does not match its contents; "
                             "run a full verification")
    if data.get("source") != source:
        raise StateFileError(f"{where}: written for {data.get('source')}, not {source}")
    try:
        state = VerifiedState(data["source"], data["verified_at_micros"], objects=data["objects"],
                              totals=data["totals"])
        for scope, archive in data["archives"].items():
            state.chains[scope] = {chain_id: _anchor(chain_id, raw, keyring)
                                   for chain_id, raw in archive["chains"].items()}
            state.partitions[scope] = {int(p): (end[0], end[1]) for p, end in archive["partitions"].items()}
        for name, record in state.objects.items():
            if not {"sha256", "records", "fingerprint"} <= record.keys():
                raise ValueError(f"object {name} lacks its sha256, record count or fingerprint")
    except (KeyError, TypeError, ValueError, IndexError, IntegrityError) as exc:
        raise StateFileError(f"{where}: corrupt or tampered: {type(exc).__name__}: {exc}") from None
    return state


def _anchor(chain_id: str, raw: Mapping[str, Any], keyring: Keyring) -> ChainAnchor:
    # a chain's anchor, its checkpoint and tree head signatures verified again (a state file is not trusted)
    checkpoint = Checkpoint(**_unhex_fields(raw["checkpoint"]))
    if checkpoint.chain_id != chain_id:
        raise ValueError(f"the anchor of chain {chain_id} holds a checkpoint of {checkpoint.chain_id}")
    check_key_not_compromised(checkpoint, verify_checkpoint_signature(checkpoint, keyring))
    if raw["head"] is None:
        return ChainAnchor(checkpoint)
    head = _unhex_fields(raw["head"])
    entry = keyring.get(head["key_id"])
    if entry is None or not entry.valid_at(head["issued_at_micros"]) or entry.compromised_at(head["issued_at_micros"]):
        raise ValueError(f"chain {chain_id}: its tree head's key {head['key_id']} is not in the keyring, not valid "
                         "when the head was issued, or revoked as compromised")
    origin = head["note"].split(b"\n", 1)[0].decode("utf-8")
    signed, _ = open_tree_head(head["note"], log_verifier(entry.public_key, origin))
    frontier = tuple(bytes.fromhex(value) for value in raw["frontier"])
    tree = HistoryTree(signed.size, frontier)
    if (signed.size, signed.root_hash) != (head["tree_size"], head["root_hash"]) or tree.root != signed.root_hash \
            or signed.size != checkpoint.last_seq + 1:
        raise ValueError(f"chain {chain_id}: the tree head, its frontier and the checkpoint disagree")
    return ChainAnchor(checkpoint, head, tree, raw["head_location"])


class AnchoredAuditor(ChainAuditor):
    """A :class:`ChainAuditor` that keeps each chain's newest head record (for the next state file) and,
    for a chain started from an anchor, proves its first new tree head consistent with the anchor's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_records: dict[str, tuple[dict[str, Any], str]] = {}
        # verified chains not met yet: each starts from its anchor when its first record comes (so a worker of
        # verify --jobs holds only the chains it read), the rest at the end (start_remaining)
        self.pending_anchors: dict[str, ChainAnchor] = {}
        self.anchors: dict[str, HistoryTree] = {}    # chains whose first new head is still to be proven
        self.proofs: dict[str, str] = {}             # chain -> what the consistency proof showed

    def start_from(self, anchor: ChainAnchor) -> None:
        """Continue the chain right after its verified checkpoint (and tree head)."""
        chain_id = anchor.checkpoint.chain_id
        self.chains[chain_id] = ChainState.after_checkpoint(anchor.checkpoint)
        if anchor.head is not None and anchor.tree is not None:
            self.heads[chain_id] = (anchor.head["issued_at_micros"], anchor.head_location, anchor.tree)
            self.head_records[chain_id] = (anchor.head, anchor.head_location)
            self.anchors[chain_id] = anchor.tree

    def _chain(self, chain_id: str) -> ChainState:
        anchor = self.pending_anchors.pop(chain_id, None)
        if anchor is not None and chain_id not in self.chains:
            self.start_from(anchor)
        return super()._chain(chain_id)

    def start_remaining(self) -> None:
        """Start every verified chain no record of this run met (their heads are still judged: stale_head)."""
        for anchor in self.pending_anchors.values():
            if anchor.checkpoint.chain_id not in self.chains:
                self.start_from(anchor)
        self.pending_anchors.clear()

    def head(self, record: Mapping[str, Any], location: str) -> None:
        """Check the head (:meth:`ChainAuditor.head`); the first after an anchor also by a consistency proof."""
        chain_id = record["chain_id"]
        chain = self._chain(chain_id)
        anchor = self.anchors.pop(chain_id, None)
        leaves = list(chain.batch_hashes) if anchor is not None and chain.batch_first_seq == anchor.size else None
        before = len(self.violations)
        super().head(record, location)
        if self.heads.get(chain_id, (None, None))[1] == location:
            self.head_records[chain_id] = (dict(record), location)
        if anchor is None:
            return
        if {v.kind for v in self.violations[before:]} - {ViolationKind.HEAD_MISMATCH, ViolationKind.LOGGING_GAP}:
            return  # not an authentic head (its own violation says why): it proves nothing either way
        self._prove(chain_id, anchor, leaves, record, location)

    def _prove(self, chain_id: str, anchor: HistoryTree, leaves: list[bytes] | None, record: Mapping[str, Any],
               location: str) -> None:
        size, root = record["tree_size"], record["root_hash"]
        verified = f"the verified head of size {anchor.size} (root {anchor.root.hex()[:16]}…)"
        if size < anchor.size:
            detail = f"a tree head of size {size}, smaller than {verified}: the history was truncated or rewritten"
        elif leaves is None or len(leaves) < size - anchor.size:
            detail = (f"a tree head of size {size} whose entries {anchor.size}..{size - 1} are not all in the "
                      f"archive after {verified}: it cannot be shown to extend it")
        else:
            proof = consistency_proof_from(anchor, [record_leaf_hash(h) for h in leaves[:size - anchor.size]])
            if verify_consistency(anchor.size, size, proof, anchor.root, root):
                self.proofs[chain_id] = (f"tree head {anchor.size} -> {size}: consistent "
                                         f"(RFC 6962 proof of {len(proof)} hashes)")
                return
            detail = (f"the tree head of size {size} (root {root.hex()[:16]}…) is not consistent with {verified}: "
                      "the history was rewritten or forked after it was verified")
        self.proofs[chain_id] = f"tree head {anchor.size} -> {size}: NOT consistent"
        self.violations.append(Violation(NOT_EXTENDING, chain_id, anchor.size, location, detail))


@dataclass
class IncrementalVerifier(ArchiveVerifier):
    """An :class:`ArchiveVerifier` that starts from ``since`` (None: a full run) and collects the state
    a state file records (:meth:`state`)."""

    since: VerifiedState | None = None
    # filled as the run goes: the anchors, partitions and objects of the state to write
    _anchors: dict[str, dict[str, ChainAnchor]] = field(default_factory=dict, init=False, repr=False)
    _objects: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _ends: dict[str, dict[tuple[str, int], tuple[int, str]]] = field(default_factory=dict, init=False, repr=False)
    _proofs: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _covered_listed: int = field(default=0, init=False, repr=False)
    _covered_reread: int = field(default=0, init=False, repr=False)
    _manifest_read: Manifest | None = field(default=None, init=False, repr=False)

    def _auditor(self, scope: str = "") -> ChainAuditor:
        as_of = self.as_of_micros if self.as_of_micros is not None else time.time_ns() // 1000
        auditor = AnchoredAuditor(self.keyring, as_of_micros=as_of,
                                  head_tolerance_micros=int(self.head_tolerance_s * 1e6))
        if self.since is not None:
            auditor.pending_anchors = dict(self.since.chains.get(scope, {}))
        return auditor

    def _last_ends(self, scope: str) -> dict[tuple[str, int], tuple[int, str]]:
        ends: dict[tuple[str, int], tuple[int, str]] = {}
        if self.since is not None:
            ends = {(scope[:-1], p): end for p, end in self.since.partitions.get(scope, {}).items()}
        self._ends[scope] = ends  # the verifier updates it in place as it reads
        return ends

    def _archives(self, source, report: Report) -> Iterator[tuple[str, Iterator[ArchiveEntry]]]:
        if self.since is None:
            yield from super()._archives(source, report)
            return
        covered = self.since.objects
        if hasattr(source, "skip_lock"):
            source.skip_lock = lambda key: (parsed := parse_key(key)) is not None and parsed.object_key in covered
        listed = list(source.entries())
        seen: set[str] = set()
        new: list[ArchiveEntry] = []
        for entry in listed:  # every covered object first: a run with --jobs reports in the same order
            record = covered.get(entry.name)
            if record is None:
                new.append(entry)
                continue
            seen.add(entry.name)
            self._check_covered(entry, record, report)
        for name in sorted(covered.keys() - seen):
            report.add(Violation(COVERED_MISSING, None, None, name,
                                 f"verified (with {covered[name]['records']} records) by the run of the state file, "
                                 "and no longer in the archive: deleted after it was verified"))
        self._covered_listed = len(seen)
        scopes = []
        for scope, entries in super()._archives(_Listed(new), report):
            scopes.append(scope)
            yield scope, entries
        for scope in sorted(self.since.chains.keys() - set(scopes)):  # chains with nothing new: judged too
            yield scope, iter(())

    def _check_covered(self, entry: ArchiveEntry, record: Mapping[str, Any], report: Report) -> None:
        # a covered object is not read again unless its listing changed; then its bytes must be the same
        if entry.hidden:
            report.add(Violation(HIDDEN, None, None, entry.name, "the latest version is a delete marker; the "
                                 "locked versions remain (verified by the run of the state file)"))
        if _fingerprint(entry) == record["fingerprint"]:
            return
        if not entry.versions:
            report.add(Violation(COVERED_MISSING, None, None, entry.name, f"verified (with {record['records']} records) "
                                 "by the run of the state file; its manifest remains, the object is gone: deleted "
                                 "after it was verified"))
            return
        self._covered_reread += 1
        digests = {hashlib.sha256(version.read()).hexdigest() for version in entry.versions}
        problem = None
        if digests != {record["sha256"]}:
            problem = (f"{len(entry.versions)} version(s) with sha256 {', '.join(sorted(d[:16] for d in digests))}…, "
                       f"verified as {record['sha256'][:16]}…: rewritten after it was verified")
        elif not entry.manifest_versions:
            problem = "its manifest is gone since it was verified"
        else:
            try:
                manifest = Manifest.from_bytes(entry.manifest_versions[0].read(), f"{entry.name}.manifest.json")
            except ManifestError as exc:
                problem = f"its manifest no longer reads: {exc}"
            else:
                if (manifest.sha256, manifest.record_count) != (record["sha256"], record["records"]):
                    problem = "its manifest was rewritten after it was verified"
        if problem is not None:
            report.add(Violation(COVERED_CHANGED, None, None, entry.name, problem))
        else:  # the same bytes, listed anew (a copy, a retried write): the next state records the new listing
            self._objects[entry.name] = {**record, "fingerprint": _fingerprint(entry)}

    def _manifest(self, entry: ArchiveEntry, report: Report) -> Manifest | None:
        self._manifest_read = super()._manifest(entry, report)
        return self._manifest_read

    def _verify_entry(self, entry, report, auditor, codecs, last_end) -> None:
        self._manifest_read = None
        super()._verify_entry(entry, report, auditor, codecs, last_end)
        manifest = self._manifest_read
        if manifest is not None:
            self._objects[entry.name] = {"fingerprint": _fingerprint(entry), "sha256": manifest.sha256,
                                         "records": manifest.record_count}

    def _close(self, scope: str, auditor: ChainAuditor, report: Report) -> None:
        assert isinstance(auditor, AnchoredAuditor)
        auditor.start_remaining()
        super()._close(scope, auditor, report)
        anchors = self._anchors.setdefault(scope, {})
        for chain_id, chain in auditor.chains.items():
            checkpoint = chain.previous_checkpoint
            if checkpoint is None or chain.head_seq != checkpoint.last_seq:
                continue  # not a state to start from: reported (unsigned_tail) in this run
            head, location = auditor.head_records.get(chain_id, (None, ""))
            tree = auditor.heads.get(chain_id, (0, "", None))[2]
            if head is None or tree is None or tree.size != checkpoint.last_seq + 1 or head["tree_size"] != tree.size:
                head, tree = None, None
            anchors[chain_id] = ChainAnchor(checkpoint, head, tree, location)
        for chain_id, proof in auditor.proofs.items():
            self._proofs[f"{scope}{chain_id}"] = proof

    def _listed_objects(self, report: Report) -> int:
        return report.objects + self._covered_listed

    def _account_for_everything(self, source, report: Report) -> None:
        super()._account_for_everything(source, report)
        if self.since is not None:
            report.incremental = {
                "since_verified_at_micros": self.since.verified_at_micros,
                "objects_covered": self._covered_listed, "objects_covered_reread": self._covered_reread,
                "objects_new": report.objects,
                "consistency": dict(sorted(self._proofs.items())),
            }

    def take_collected(self) -> dict[str, Any]:
        """What this process collected for the state file since the last call (a worker of verify --jobs)."""
        collected, self._objects = self._objects, {}
        return collected

    def add_collected(self, collected: Mapping[str, Any]) -> None:
        """Add what a worker collected (:meth:`take_collected`)."""
        self._objects.update(collected)

    def state(self, report: Report) -> VerifiedState:
        """The state to start the next run from; StateFileError if this run is not one to start from."""
        if not report.intact:
            raise StateFileError(f"--state-out: not written: the verification found {report.violation_total} "
                                 "violation(s); a state file only records an intact archive")
        objects = dict(self.since.objects) if self.since is not None else {}
        objects.update(self._objects)
        partitions = {scope: {partition: end for (_, partition), end in ends.items()}
                      for scope, ends in self._ends.items()}
        if self.since is not None:
            for scope, ends in self.since.partitions.items():
                partitions.setdefault(scope, dict(ends))
        totals = dict(self.since.totals) if self.since is not None else {}
        for name, value in (("objects", report.objects), ("records", report.records), ("entries", report.entries),
                            ("checkpoints", report.checkpoints)):
            totals[name] = totals.get(name, 0) + value
        return VerifiedState(report.source, self.as_of_micros or time.time_ns() // 1000, dict(self._anchors),
                             partitions, objects, totals)


class _Listed:
    # an already listed set of entries, as a source the base verifier reads
    def __init__(self, entries: list[ArchiveEntry]) -> None:
        self._entries = entries

    def entries(self) -> Iterator[ArchiveEntry]:
        return iter(self._entries)


def _fingerprint(entry: ArchiveEntry) -> str:
    # every version of the object and of its manifest, as listed
    return "|".join([",".join(str(v.fingerprint) for v in entry.versions),
                     ",".join(str(v.fingerprint) for v in entry.manifest_versions)])


__all__ = ["COVERED_CHANGED", "COVERED_MISSING", "NOT_EXTENDING", "AnchoredAuditor", "IncrementalVerifier",
           "StateFileError", "VerifiedState", "entry_scope", "load_state", "write_state"]
