"""What the witnesses saw, checked offline against the archive: ``auditseal verify --policy FILE``.

Fed, beside the :class:`~pipeline.verifier.chains.ChainAuditor`, with every tree head record (and whether the
auditor found its root to be that of the entries read) and every ``cosignature`` record of the archive, plus
cosigned heads a verifier holds from elsewhere (``--witnessed-head FILE``: what a witness or an auditor kept),
a :class:`WitnessAudit` reports under a C2SP tlog-policy (log keys, witnesses, quorum):

- ``unwitnessed_head``: a chain's heads that no quorum-cosigned head of at least their size covers, the oldest
  of them issued more than the tolerance before the as-of time (witnessing is rate-limited: the newest heads
  wait for the next submission). A history the witnesses refused (rewritten and re-signed with the real key)
  ends up here, as does an archive of a chain that was never witnessed.
- ``witness_fork``: a cosigned head whose root is not the root the archive's entries give at that size: the
  archive holds another history than the one the witnesses saw (a rewritten or forked chain).
- ``tail_truncated``: a cosigned head larger than the chain the archive holds: the witnesses saw entries
  that are missing from it.
- ``bad_cosignature``: a cosignature record whose fields are not its note's, whose note does not carry a valid
  log signature, or with a signature line of a policy witness's key that does not verify.
- ``compromised_key`` (keyring revocation, ``auditseal keys revoke --compromised-since TIME``): a head signed by
  a compromised key with a time before TIME that no quorum cosigned at a time before TIME covers; a head's
  time is the signer's claim, the witnesses' is theirs: only it shows the head existed before the compromise.
  The other way round, a head claiming a time at or after TIME (which the chain auditor reports) that such a
  cosignature covers existed before TIME (the signer's clock ran ahead): its report is withdrawn, with a
  ``compromised_key_vouched`` notice. So a head of a revoked key is flagged exactly when no quorum cosignature
  older than TIME covers it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.integrity.chain_state import Violation, ViolationKind
from pipeline.integrity.cosignature import cosignature_timestamp
from pipeline.integrity.errors import IntegrityError, QuorumError
from pipeline.integrity.keyring import Keyring
from pipeline.integrity.log_identity import log_verifier
from pipeline.integrity.note import Note, parse_note, verified_signatures
from pipeline.integrity.policy import WitnessPolicy
from pipeline.integrity.tree_head import TreeHead, parse_tree_head

_TIME_LINE = "auditseal-time "

UNWITNESSED_HEAD = "unwitnessed_head"
WITNESS_FORK = "witness_fork"
WITNESSED_TAIL_TRUNCATED = "tail_truncated"
BAD_COSIGNATURE = "bad_cosignature"
WITNESSED_HEAD_UNCHECKED = "witnessed_head_unchecked"  # a notice: no head of that size in the archive to compare
COMPROMISED_KEY_VOUCHED = "compromised_key_vouched"  # a notice: a head the witnesses saw before its key's compromise
_ROOTS_KEPT = 200_000  # per chain: the newest verified heads' roots a later cosignature record may name


class WitnessedHeadError(IntegrityError):
    """A cosigned head given to the verifier does not satisfy the policy."""


@dataclass(frozen=True)
class WitnessedHead:
    """A head the policy's quorum cosigned: its origin, size, root, where it was found, and the newest time
    (POSIX seconds) among the cosignatures that make the quorum."""

    head: TreeHead
    location: str
    quorum_time: int


def witnessed_head(note: Note, policy: WitnessPolicy, location: str, keyring: Keyring | None = None) -> WitnessedHead:
    """Check a cosigned head against the policy (log signature, quorum); WitnessedHeadError saying why not.

    With a ``keyring``, a head signed by a keyring key valid at the head's time is a log signature too: the
    policy names the log's current key, the keyring every key it had (a rotation keeps older heads valid).
    QuorumError if the log signature holds and the quorum does not."""
    try:
        head, cosigners = policy.check(note)
    except QuorumError:
        raise
    except IntegrityError as exc:
        head_and_cosigners = _signed_by_keyring(note, policy, keyring) if keyring is not None else None
        if head_and_cosigners is None:
            raise WitnessedHeadError(f"{location}: {exc}") from None
        head, cosigners = head_and_cosigners
    return WitnessedHead(head, location, _quorum_time(policy, cosigners, note))


def _signed_by_keyring(note: Note, policy: WitnessPolicy, keyring: Keyring) -> tuple[TreeHead, list[str]] | None:
    # the head's log signature by a keyring key valid at its auditseal-time; then the quorum, as policy.check does
    try:
        head = parse_tree_head(note.text)
    except IntegrityError:
        return None
    times = [line[len(_TIME_LINE):] for line in head.extensions if line.startswith(_TIME_LINE)]
    if len(times) != 1 or not times[0].isdigit():
        return None
    issued = int(times[0])
    if not any(entry.valid_at(issued) and verified_signatures(note, [log_verifier(entry.public_key, head.origin)])
               for entry in keyring):
        return None
    cosigners = policy.cosigners_of(note)
    if not policy.satisfied_by(cosigners):
        raise QuorumError(f"{head.describe()}: cosigned by {', '.join(cosigners) or 'no witness'}, which does not "
                          f"meet the policy's quorum {policy.quorum!r}")
    return head, cosigners


def _quorum_time(policy: WitnessPolicy, cosigners: list[str], note: Note) -> int:
    # the earliest moment the quorum held: add cosigners in time order until it is met
    stamped = []
    for name in cosigners:
        verifier = policy.witnesses[name].verifier
        stamps = [cosignature_timestamp(s) for s in note.signatures
                  if (s.name, s.key_hash) == (verifier.name, verifier.key_hash)]
        stamped.append((min(stamps), name))
    met: list[str] = []
    for stamp, name in sorted(stamped):
        met.append(name)
        if policy.satisfied_by(met):
            return stamp
    return 0  # quorum "none": no witness time is needed


@dataclass
class _ChainWitnessing:
    origin: str | None = None
    roots: dict[int, bytes] = field(default_factory=dict)  # tree size -> root of verified heads
    order: deque[int] = field(default_factory=deque)
    covered: int = -1  # the largest size a quorum-cosigned head covers
    uncovered: deque[tuple[int, int, str]] = field(default_factory=deque)  # heads above it: (size, issued, where)
    size: int = 0  # the largest verified head's size
    # heads of a compromised key claimed before its compromise: (size, issued, where, key id, compromised since)
    claimed_before: list[tuple[int, int, str, str, int]] = field(default_factory=list)
    cosigned_times: list[tuple[int, int]] = field(default_factory=list)  # (size, quorum time) of cosigned heads
    # heads of a compromised key claimed at or after its compromise (reported by the chain auditor): as above
    claimed_after: list[tuple[int, int, str, str, int]] = field(default_factory=list)


@dataclass
class WitnessAudit:
    """Collects heads and cosignatures of an archive and reports what the policy's witnesses contradict."""

    policy: WitnessPolicy
    keyring: Keyring
    as_of_micros: int
    tolerance_micros: int
    external: list[WitnessedHead] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    notices: list[Violation] = field(default_factory=list)
    chains: dict[str, _ChainWitnessing] = field(default_factory=dict)
    cosignatures_checked: int = 0
    _vouched: set[tuple[str, str]] = field(default_factory=set)  # (chain id, location) of vouched heads
    _deferred: list[Violation] = field(default_factory=list)  # the chain auditor's compromised-head reports

    def _chain(self, chain_id: str) -> _ChainWitnessing:
        chain = self.chains.get(chain_id)
        if chain is None:
            chain = self.chains[chain_id] = _ChainWitnessing()
        return chain

    def head(self, record: Mapping[str, Any], location: str, root_verified: bool) -> None:
        """One head record; ``root_verified``: the auditor found its size and root to be the entries' read."""
        if not root_verified:
            return  # the auditor reported it; nothing it says can back or contradict a witness
        chain = self._chain(record["chain_id"])
        size, issued = record["tree_size"], record["issued_at_micros"]
        chain.origin = record["note"].split(b"\n", 1)[0].decode("utf-8", errors="replace")
        if size not in chain.roots:
            chain.roots[size] = record["root_hash"]
            chain.order.append(size)
            if len(chain.order) > _ROOTS_KEPT:
                chain.roots.pop(chain.order.popleft(), None)
        chain.size = max(chain.size, size)
        if size > chain.covered:
            chain.uncovered.append((size, issued, location))
        key = self.keyring.get(record["key_id"])
        if key is not None and key.compromised_since_micros is not None:
            claimed = chain.claimed_before if issued < key.compromised_since_micros else chain.claimed_after
            claimed.append((size, issued, location, key.key_id, key.compromised_since_micros))

    def cosignature(self, record: Mapping[str, Any], location: str) -> None:
        """One cosignature record of the archive."""
        self.cosignatures_checked += 1
        chain_id = record["chain_id"]

        def bad(detail: str) -> None:
            self.violations.append(Violation(BAD_COSIGNATURE, chain_id, record["tree_size"] - 1, location,
                                             f"cosigned head of size {record['tree_size']}: {detail}"))

        try:
            note = parse_note(record["note"])
            witnessed = witnessed_head(note, self.policy, location, self.keyring)
        except QuorumError as exc:
            self.notices.append(Violation(UNWITNESSED_HEAD, chain_id, record["tree_size"] - 1, location,
                                          f"cosignatures below the policy's quorum: {exc}"))
            return
        except (IntegrityError, WitnessedHeadError) as exc:
            return bad(str(exc))
        head = witnessed.head
        if (head.size, head.root_hash) != (record["tree_size"], record["root_hash"]):
            return bad("the record's size or root is not its note's")
        if not head.origin.endswith("/" + chain_id):
            return bad(f"the note's origin {head.origin!r} is not a log of chain {chain_id!r}")
        self._witnessed(chain_id, witnessed)

    def _witnessed(self, chain_id: str, witnessed: WitnessedHead) -> None:
        chain = self._chain(chain_id)
        head = witnessed.head
        root = chain.roots.get(head.size)
        if root is None:
            if head.size > chain.size:
                return  # compared at the end: the chain may still reach that size
            self.notices.append(Violation(WITNESSED_HEAD_UNCHECKED, chain_id, head.size - 1, witnessed.location,
                                          f"no verified head of size {head.size} in the archive to compare the "
                                          "cosigned head with"))
            return
        if root != head.root_hash:
            self.violations.append(Violation(
                WITNESS_FORK, chain_id, head.size - 1, witnessed.location,
                f"the witnesses cosigned {head.describe()} with root {head.root_hash.hex()[:16]}…, the archive's "
                f"entries give root {root.hex()[:16]}… at that size: the archive holds another history than the "
                "one the witnesses saw (rewritten or forked)"))
            return
        chain.cosigned_times.append((head.size, witnessed.quorum_time))
        if head.size > chain.covered:
            chain.covered = head.size
            while chain.uncovered and chain.uncovered[0][0] <= head.size:
                chain.uncovered.popleft()

    def finish(self) -> list[Violation]:
        """Compare the external cosigned heads, then report what no quorum covers; returns the violations."""
        for witnessed in self.external:
            chain_id = next((c for c, chain in self.chains.items() if chain.origin == witnessed.head.origin), None)
            if chain_id is None:
                # the verifier was given this head: the archive should hold its log, and holds none of it
                # (a chain id is the last two parts of an origin: topic names hold no '/')
                missing = "/".join(witnessed.head.origin.split("/")[-2:])
                self.violations.append(Violation(
                    WITNESSED_TAIL_TRUNCATED, missing, None, witnessed.location,
                    f"the witnesses cosigned {witnessed.head.describe()}, and the archive holds no verified head of "
                    "that log: its objects were removed, or it is another log's archive"))
                continue
            chain = self.chains[chain_id]
            if witnessed.head.size > chain.size:
                self.violations.append(Violation(
                    WITNESSED_TAIL_TRUNCATED, chain_id, chain.size, witnessed.location,
                    f"the witnesses cosigned {witnessed.head.describe()}, the archive's chain reaches size "
                    f"{chain.size} only: entries the witnesses saw are missing (its tail was removed or rewritten)"))
                continue
            self._witnessed(chain_id, witnessed)
        for chain_id, chain in self.chains.items():
            cutoff = self.as_of_micros - self.tolerance_micros
            if chain.uncovered and chain.uncovered[0][1] < cutoff:
                size, issued, location = chain.uncovered[0]
                count = len(chain.uncovered)
                self.violations.append(Violation(
                    UNWITNESSED_HEAD, chain_id, size - 1, location,
                    f"{count} tree head(s) from size {size} on are not covered by a head the policy's quorum "
                    f"({self.policy.quorum}) cosigned (largest cosigned size: "
                    f"{chain.covered if chain.covered >= 0 else 'none'}); the oldest is "
                    f"{(self.as_of_micros - issued) / 1e6:.0f} s old: the witnesses refused or never saw this history"))
            for size, issued, location, key_id, since in chain.claimed_after:
                if self._cosigned_before(chain, size, since):
                    self._vouched.add((chain_id, location))
                    self.notices.append(Violation(
                        COMPROMISED_KEY_VOUCHED, chain_id, size - 1, location,
                        f"tree head of size {size} signed by key {key_id}, compromised since {since}, claims time "
                        f"{issued}, yet a head the quorum cosigned before {since} covers it: it existed before the "
                        "compromise (the signer's clock ran ahead), so it is not reported"))
            for size, issued, location, key_id, since in chain.claimed_before:
                if not self._cosigned_before(chain, size, since):
                    self.violations.append(Violation(
                        ViolationKind.COMPROMISED_KEY, chain_id, size - 1, location,
                        f"tree head of size {size} signed by key {key_id}, compromised since {since}, claims time "
                        f"{issued} before that, and no head cosigned by the quorum before {since} covers it: it may "
                        "have been backdated"))
        return self.violations

    @staticmethod
    def _cosigned_before(chain: _ChainWitnessing, size: int, since: int) -> bool:
        # a head of at least this size that the quorum cosigned before `since` (cosignature times are seconds)
        return any(s >= size and t * 1_000_000 < since for s, t in chain.cosigned_times)

    def defers(self, violation: Violation) -> bool:
        """Whether the chain auditor's ``violation`` is a ``compromised_key`` report of a tree head, which waits for
        :meth:`finish` (a quorum cosignature older than the compromise withdraws it); it is then held here."""
        if violation.kind != ViolationKind.COMPROMISED_KEY or not violation.detail.startswith("tree head "):
            return False
        self._deferred.append(violation)
        return True

    def confirms(self, violation: Violation) -> bool:
        """After :meth:`finish`: whether a deferred report stands (no cosignature showed the head was earlier)."""
        return (violation.chain_id, violation.location) not in self._vouched

    def confirmed(self) -> list[Violation]:
        """After :meth:`finish`: the deferred reports that stand."""
        return [v for v in self._deferred if self.confirms(v)]
