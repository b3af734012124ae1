"""The reconciler's sealed attestations, checked from the archive (``auditseal verify --reconciler-keyring FILE``).

The reconciler (:mod:`pipeline.reconciler.daemon`) signs with its own key a ``reconcile.attest`` event per round
and chain (which sealed offsets it compared) and a ``reconcile.mismatch`` event per disagreement; they travel on
``audit.reconciliation``, are sealed into ``audit.sealed.reconciliation`` and archived like every origin. Its
public keys are published as a keyring of their own, in the format of :mod:`pipeline.integrity.keyring` (never in
the sealer's keyring: a reconciler key must not sign checkpoints, nor a sealer key attestations). Over the
archive this module reports:

- ``forged_attestation``: an entry of the reconciler's chains that is not an attestation validly signed by a key
  of that keyring valid (and not compromised) when the event says it was made: anything another principal got
  onto ``audit.reconciliation``, or an attestation altered after signing;
- ``reconcile_mismatch``: a valid ``reconcile.mismatch``: the reconciler found a sealed entry that disagrees with
  its source record (located by sealed topic, partition, offsets and kind);
- ``missing_attestation``: a round declares more mismatches than there are mismatch records of it in the archive;
- ``unattested_range``: archived offsets of a reconciled sealed topic that no valid attestation covers, sealed
  longer than the grace period ago (a reconciler that skipped a range, was stopped, or whose attestations were
  dropped); newer ones are a notice, ``not_yet_attested`` (the reconciler's round, sealing and archiving lag).

A round covers ``[sealed_from_offset, sealed_last_offset]`` of its partition: it starts where the previous round
ended, so the transaction markers between two rounds are covered too (attestations without ``sealed_from_offset``
cover ``[sealed_first_offset, sealed_last_offset]``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.errors import AuditSealError
from pipeline.integrity.keyring import Keyring
from pipeline.reconciler.attestation import KEY_ID, attestation_is_valid
from pipeline.verifier.chains import Violation
from pipeline.wire.codec import default_codec
from pipeline.wire.sealed import CHECKPOINT_KIND, EVENT_KIND, GAP_KIND, HEAD_KIND, sealed_codecs
from pipeline.wire.topics import RECONCILIATION_TOPIC, SOURCE_TOPICS, sealed_topic_of

FORGED_ATTESTATION = "forged_attestation"
RECONCILE_MISMATCH = "reconcile_mismatch"
UNATTESTED_RANGE = "unattested_range"
MISSING_ATTESTATION = "missing_attestation"
NOT_YET_ATTESTED = "not_yet_attested"  # a notice

ATTEST_ACTION, MISMATCH_ACTION = "reconcile.attest", "reconcile.mismatch"
ATTESTATION_TOPIC = sealed_topic_of(RECONCILIATION_TOPIC)
# the sealed topics `auditseal reconcile` covers by default (it leaves out its own output)
RECONCILED_TOPICS = frozenset(sealed_topic_of(t) for t in SOURCE_TOPICS if t != RECONCILIATION_TOPIC)
DEFAULT_ATTESTATION_GRACE_S = 900.0
"""How long after it was archived a sealed range may still lack its attestation: a reconciler round (5 s), the
sealing of the attestation and the sink's object (10 s) and a reconciler restart fit many times over."""


def _covered(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def uncovered(first: int, last: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[first, last]`` outside the (merged, sorted) ``covered`` intervals."""
    holes, position = [], first
    for start, end in covered:
        if end < position:
            continue
        if start > last:
            break
        if start > position:
            holes.append((position, start - 1))
        position = max(position, end + 1)
        if position > last:
            return holes
    if position <= last:
        holes.append((position, last))
    return holes


@dataclass
class AttestationAudit:
    """Collects, object by object (:meth:`observe`, an :class:`~pipeline.verifier.archive.ArchiveVerifier`
    observer), the attestations of the reconciler's archive and the ranges of the reconciled ones, then judges
    them (:meth:`finish`)."""

    keyring: Keyring
    as_of_micros: int
    grace_s: float = DEFAULT_ATTESTATION_GRACE_S
    attestation_topic: str = ATTESTATION_TOPIC
    reconciled_topics: frozenset[str] = RECONCILED_TOPICS
    attestations: int = 0
    violations: list[Violation] = field(default_factory=list)
    notices: list[Violation] = field(default_factory=list)
    # (prefix, sealed topic, partition) -> archived (first, last, newest record time µs or None, object name)
    _archived: dict[tuple[str, str, int], list[tuple[int, int, int | None, str]]] = field(default_factory=dict)
    _attested: dict[tuple[str, str, int], list[tuple[int, int]]] = field(default_factory=dict)
    # (prefix, sealed topic, partition, round's first offset, last offset) -> mismatches declared / recorded
    _mismatches_declared: dict[tuple, tuple[int, str | None, int | None, str]] = field(default_factory=dict)
    _mismatches_seen: dict[tuple, int] = field(default_factory=dict)

    def observe(self, entry, manifest, data: bytes) -> None:
        """One archived object (its decrypted container bytes)."""
        topic = entry.key.topic
        if topic == self.attestation_topic:
            from pipeline.verifier.archive import archived_values

            try:
                for offset, value in archived_values(data):
                    self._record(entry, offset, value)
            except Exception:  # fastavro raises many types: the archive check reports it, unreadable_object
                return
        else:
            newest = manifest.last_timestamp_micros if manifest is not None else None
            self._archived.setdefault((entry.key.prefix, topic, entry.key.partition), []).append(
                (entry.key.first_offset, entry.key.last_offset, newest, entry.name))

    def _record(self, entry, offset: int, value: bytes) -> None:
        location = f"{entry.name} offset {offset}"
        try:
            kind, fields = sealed_codecs().decode_fields(value)
        except (AuditSealError, ValueError, TypeError, IndexError, EOFError):
            return  # the archive check reports a malformed record where it is
        if kind in (CHECKPOINT_KIND, HEAD_KIND, GAP_KIND):
            return  # the chain's own structure: verified with the sealer's keyring like every chain
        chain_id, seq = fields[0], fields[1]
        if kind != EVENT_KIND:
            self._forged(chain_id, seq, location, "a rejected record on the reconciler's chain: someone wrote "
                         "something that is no AuditEvent to audit.reconciliation")
            return
        try:
            event = default_codec().decode(fields[7])
        except (AuditSealError, ValueError, TypeError, IndexError, EOFError) as exc:
            self._forged(chain_id, seq, location, f"an entry that is not an AuditEvent: {exc}")
            return
        self.judge(event, chain_id, seq, location, entry.key.prefix)

    def judge(self, event: dict, chain_id: str | None, seq: int | None, location: str, prefix: str = "") -> None:
        """One AuditEvent (decoded) of the reconciler's chain ``chain_id`` at ``seq``, archived at ``location``
        under ``prefix``: a valid attestation is counted, anything else reported."""
        action, attributes = event.get("action"), event.get("attributes") or {}
        if action not in (ATTEST_ACTION, MISMATCH_ACTION):
            self._forged(chain_id, seq, location, f"a {action!r} event by {event.get('actor', {}).get('id')!r}: "
                         "only the reconciler's attestations belong on its chain")
            return
        why = self._signature_problem(attributes, event.get("occurred_at"))
        if why is not None:
            self._forged(chain_id, seq, location, f"{action} {why}")
            return
        self.attestations += 1
        where = (prefix, attributes.get("sealed_topic", ""), _int(attributes.get("sealed_partition")))
        round_key = (*where, _int(attributes.get("sealed_from_offset")), _int(attributes.get("sealed_last_offset")))
        if action == MISMATCH_ACTION:
            self._mismatches_seen[round_key] = self._mismatches_seen.get(round_key, 0) + 1
            sealed_offset = attributes.get("sealed_offset")
            self.violations.append(Violation(
                RECONCILE_MISMATCH, attributes.get("chain_id"), None,
                f"{where[1]}[{where[2]}] sealed offset {sealed_offset} (source offset {attributes.get('source_offset')})",
                f"{attributes.get('kind')}: {attributes.get('detail')} (attested in {location})"))
            return
        first = _int(attributes.get("sealed_from_offset", attributes.get("sealed_first_offset")))
        last = _int(attributes.get("sealed_last_offset"))
        if first is None or last is None or where[2] is None or last < first:
            self._forged(chain_id, seq, location, "a validly signed attestation without a readable range")
            return
        self._attested.setdefault(where, []).append((first, last))
        if "sealed_from_offset" in attributes:  # its mismatch records name its range (older ones do not)
            declared = _int(attributes.get("mismatches")) or 0
            if declared:
                self._mismatches_declared[round_key] = (declared, chain_id, seq, location)
        self.reconciled_topics = self.reconciled_topics | {where[1]}

    def _signature_problem(self, attributes: dict, occurred_at) -> str | None:
        key_id = attributes.get(KEY_ID)
        entry = self.keyring.get(key_id) if isinstance(key_id, str) else None
        if entry is None:
            return f"names key {key_id!r}, which is not in the reconciler's keyring"
        at = _micros(occurred_at)
        if at is None or not entry.valid_at(at):
            return f"made at {at} µs, outside key {key_id}'s window {entry.describe_window()}"
        if entry.compromised_at(at):
            return f"made at {at} µs, after key {key_id} was compromised ({entry.compromised_since_micros} µs)"
        if not attestation_is_valid(attributes, entry.public_key):
            return f"does not carry a valid signature of key {key_id}: forged or altered"
        return None

    def _forged(self, chain_id, seq, location: str, detail: str) -> None:
        self.violations.append(Violation(FORGED_ATTESTATION, chain_id, seq, location, detail))

    def finish(self) -> None:
        """Judge coverage (every archived range of a reconciled topic inside some valid attestation) and
        completeness (every mismatch a round declares has its mismatch record)."""
        for key, (declared, chain_id, seq, location) in sorted(self._mismatches_declared.items(), key=str):
            found = self._mismatches_seen.get(key, 0)
            if found < declared:
                self.violations.append(Violation(MISSING_ATTESTATION, chain_id, seq, location,
                                                 f"the round over {key[1]}[{key[2]}] sealed offsets {key[3]}..{key[4]} "
                                                 f"declares {declared} mismatch(es); {found} mismatch record(s) archived"))
        cutoff = self.as_of_micros - int(self.grace_s * 1_000_000)
        for (prefix, topic, partition), objects in sorted(self._archived.items()):
            if topic not in self.reconciled_topics:
                continue
            covered = _covered(self._attested.get((prefix, topic, partition), []))
            for first, last, newest, name in sorted(objects):
                for hole_first, hole_last in uncovered(first, last, covered):
                    what = (f"{prefix}{topic}[{partition}] sealed offsets {hole_first}..{hole_last} are covered by no "
                            "reconciler attestation")
                    if newest is not None and newest >= cutoff:
                        self.notices.append(Violation(NOT_YET_ATTESTED, None, None, name,
                                                      f"{what} yet (sealed within the last {self.grace_s:g}s)"))
                    else:
                        self.violations.append(Violation(UNATTESTED_RANGE, None, None, name,
                                                         f"{what}: never compared with their source"))


def _micros(moment) -> int | None:
    # the codec gives occurred_at as an aware datetime (timestamp-micros)
    if isinstance(moment, datetime.datetime):
        delta = moment - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return moment if isinstance(moment, int) else None


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None
