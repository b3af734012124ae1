"""Witness policies, C2SP tlog-policy (https://c2sp.org/tlog-policy): which logs, which witnesses, what quorum.

    log <vkey> [<url>]                          a log key (type 0x01); its key name is the log's origin; a log may
                                                have several keys (a key change-over: one line per key, all
                                                accepted), never the same key twice
    witness <name> <vkey> [<url>]               a witness cosignature key (type 0x04; a 0x01 key is read as 0x04,
                                                as transparency-dev/formats does); the URL is its submission prefix
    group <name> <threshold|any|all> <member>...   members are witnesses or groups defined above
    quorum <name|none>                          exactly one; `none` requires no cosignature

`#` starts a comment, blank lines are ignored, fields are separated by spaces or tabs. A tree head
is valid under the policy when one of the logs signed it and the quorum's witnesses cosigned it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.integrity.errors import MalformedNoteError, NoteVerificationError, PolicyError, QuorumError
from pipeline.integrity.note import ALG_COSIGNATURE_V1, ALG_ED25519, Note, NoteVerifier, verified_signatures
from pipeline.integrity.tree_head import TreeHead, parse_tree_head

_KEYWORDS = {"log", "witness", "group", "quorum", "any", "all", "none"}


@dataclass(frozen=True)
class PolicyWitness:
    """One witness of a policy: its policy name, cosignature key and optional submission URL."""

    name: str
    verifier: NoteVerifier
    url: str | None


@dataclass(frozen=True)
class PolicyGroup:
    """A witness group: satisfied when `threshold` of its members are."""

    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class WitnessPolicy:
    """A parsed tlog-policy: logs by origin, witnesses and groups by name, and the quorum's name."""

    logs: dict[str, NoteVerifier]
    witnesses: dict[str, PolicyWitness]
    groups: dict[str, PolicyGroup] = field(default_factory=dict)
    quorum: str = "none"
    log_urls: dict[str, str] = field(default_factory=dict)
    # origin -> every key the policy lists for that log (``logs`` holds the first; more during a change-over)
    log_keys: dict[str, tuple[NoteVerifier, ...]] = field(default_factory=dict)

    def keys_of(self, origin: str) -> tuple[NoteVerifier, ...]:
        """Every log key the policy accepts for ``origin`` (none if it lists no such log)."""
        keys = self.log_keys.get(origin)
        if keys is not None:
            return keys
        log = self.logs.get(origin)
        return () if log is None else (log,)

    def satisfied_by(self, cosigned: Iterable[str]) -> bool:
        """Whether witnesses named `cosigned` (policy names) meet the quorum."""
        names = set(cosigned)
        return self._satisfied(self.quorum, names)

    def _satisfied(self, name: str, cosigned: set[str]) -> bool:
        if name == "none":
            return True
        if name in self.witnesses:
            return name in cosigned
        group = self.groups[name]
        return sum(self._satisfied(member, cosigned) for member in group.members) >= group.threshold

    def cosigners_of(self, note: Note) -> list[str]:
        """The policy names of the witnesses whose cosignature on `note` verifies.

        Raises NoteVerificationError if a line names a policy witness's key and does not verify.
        """
        verifiers = [witness.verifier for witness in self.witnesses.values()]
        verified = {(v.name, v.key_hash) for v, _ in verified_signatures(note, verifiers)}
        return sorted(
            name
            for name, witness in self.witnesses.items()
            if (witness.verifier.name, witness.verifier.key_hash) in verified
        )

    def check(self, note: Note) -> tuple[TreeHead, list[str]]:
        """Check a signed tree head against the policy: a known log signed it and the quorum cosigned it.

        Returns the head and the policy names of its verified cosigners. Raises MalformedNoteError
        (not a tree head, or an origin the policy does not list), NoteVerificationError (no valid
        log signature, or a bad signature by a known key) or QuorumError naming who cosigned.
        """
        head = parse_tree_head(note.text)
        log = self.logs.get(head.origin)
        if log is None:
            known = ", ".join(sorted(self.logs)) or "none"
            raise MalformedNoteError(f"{head.describe()}: the policy lists no log of that origin (logs: {known})")
        keys = self.keys_of(head.origin)
        if not verified_signatures(note, list(keys)):
            expected = " or ".join(key.vkey for key in keys)
            raise NoteVerificationError(f"{head.describe()}: expected a signature of log key {expected}, found none")
        cosigners = self.cosigners_of(note)
        if not self.satisfied_by(cosigners):
            raise QuorumError(
                f"{head.describe()}: cosigned by {', '.join(cosigners) or 'no witness'}, "
                f"which does not meet the policy's quorum {self.quorum!r}"
            )
        return head, cosigners


def parse_policy(text: str, source: str = "policy") -> WitnessPolicy:
    """Parse a tlog-policy; PolicyError naming the source, the line and the problem."""
    logs: dict[str, NoteVerifier] = {}
    log_keys: dict[str, tuple[NoteVerifier, ...]] = {}
    log_urls: dict[str, str] = {}
    witnesses: dict[str, PolicyWitness] = {}
    groups: dict[str, PolicyGroup] = {}
    keys_seen: set[bytes] = set()
    quorum: str | None = None

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip(" \t\r")
        if not line:
            continue
        fields = line.replace("\t", " ").split()

        def fail(problem: str, number: int = number) -> PolicyError:
            return PolicyError(f"{source} line {number}: {problem}")

        keyword, args = fields[0], fields[1:]
        if keyword == "log":
            if len(args) not in (1, 2):
                raise fail(f"expected 'log <vkey> [<url>]', found {line!r}")
            verifier = _vkey(args[0], fail)
            if verifier.key_type != ALG_ED25519:
                raise fail(f"a log key must be of type 0x01, found 0x{verifier.key_type:02x}")
            # one key may sign several logs (a sealer signs each chain under its own origin): a log is its origin;
            # a log may have several keys (tlog-policy: every listed log key is accepted), never one key twice
            if any(key.public_key_bytes == verifier.public_key_bytes for key in log_keys.get(verifier.name, ())):
                raise fail(f"duplicate log key {verifier.name!r}")
            keys_seen.add(verifier.public_key_bytes)
            logs.setdefault(verifier.name, verifier)
            log_keys[verifier.name] = (*log_keys.get(verifier.name, ()), verifier)
            if len(args) == 2:
                log_urls[verifier.name] = args[1]
        elif keyword == "witness":
            if len(args) not in (2, 3):
                raise fail(f"expected 'witness <name> <vkey> [<url>]', found {line!r}")
            name = _new_name(args[0], witnesses, groups, fail)
            verifier = _vkey(args[1], fail)
            if verifier.key_type == ALG_ED25519:
                verifier = NoteVerifier(verifier.name, ALG_COSIGNATURE_V1, verifier.public_key)
            if verifier.public_key_bytes in keys_seen:
                raise fail(f"witness {name!r} repeats a key already in the policy")
            keys_seen.add(verifier.public_key_bytes)
            witnesses[name] = PolicyWitness(name, verifier, args[2] if len(args) == 3 else None)
        elif keyword == "group":
            if len(args) < 2:
                raise fail(f"expected 'group <name> <threshold|any|all> <member>...', found {line!r}")
            name = _new_name(args[0], witnesses, groups, fail)
            members = tuple(args[2:])
            for member in members:
                if member not in witnesses and member not in groups:
                    raise fail(f"group {name!r} names {member!r}, which no earlier line defines")
            if len(set(members)) != len(members):
                raise fail(f"group {name!r} names a member twice")
            threshold = _threshold(args[1], len(members), fail)
            groups[name] = PolicyGroup(name, threshold, members)
        elif keyword == "quorum":
            if len(args) != 1:
                raise fail(f"expected 'quorum <name>', found {line!r}")
            if quorum is not None:
                raise fail("a policy has exactly one quorum line, found a second")
            if args[0] != "none" and args[0] not in witnesses and args[0] not in groups:
                raise fail(f"quorum names {args[0]!r}, which no earlier line defines")
            quorum = args[0]
        else:
            raise fail(f"unknown keyword {keyword!r} (expected log, witness, group or quorum)")
    if quorum is None:
        raise PolicyError(f"{source}: a policy needs a quorum line (use 'quorum none' to require no witness)")
    return WitnessPolicy(logs, witnesses, groups, quorum, log_urls, log_keys)


def load_policy(path: str | os.PathLike[str]) -> WitnessPolicy:
    """Read and parse a tlog-policy file; PolicyError if it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: cannot read the witness policy: {error}") from None
    return parse_policy(text, str(path))


def format_policy(
    logs: Sequence[NoteVerifier], witnesses: Sequence[PolicyWitness], quorum: str, groups: Sequence[PolicyGroup] = ()
) -> str:
    """The tlog-policy text of these logs, witnesses, groups and quorum (the inverse of parse_policy)."""
    lines = [f"log {log.vkey}" for log in logs]
    lines += [f"witness {w.name} {w.verifier.vkey}" + (f" {w.url}" if w.url else "") for w in witnesses]
    lines += [f"group {g.name} {g.threshold} {' '.join(g.members)}" for g in groups]
    lines.append(f"quorum {quorum}")
    return "\n".join(lines) + "\n"


def _vkey(text: str, fail: Callable[[str], PolicyError]) -> NoteVerifier:
    try:
        return NoteVerifier.from_vkey(text)
    except MalformedNoteError as error:
        raise fail(str(error)) from None
    except ValueError as error:
        raise fail(f"not an Ed25519 verifier key: {error}") from None


def _new_name(name: str, witnesses: Mapping[str, object], groups: Mapping[str, object],
              fail: Callable[[str], PolicyError]) -> str:
    if name in _KEYWORDS:
        raise fail(f"{name!r} is a keyword, not a name")
    if name in witnesses or name in groups:
        raise fail(f"duplicate name {name!r}")
    return name


def _threshold(text: str, members: int, fail: Callable[[str], PolicyError]) -> int:
    if text == "any":
        return 1
    if text == "all":
        return members
    if not text.isdigit():
        raise fail(f"a group threshold is a number, 'any' or 'all', found {text!r}")
    threshold = int(text)
    if not 1 <= threshold <= members:
        raise fail(f"a group threshold must be in [1, {members}], found {threshold}")
    return threshold


def with_log_key_added(text: str, old_key: bytes, new_key: bytes, source: str = "policy") -> tuple[str, int]:
    """The policy text with a ``log`` line for ``new_key`` (raw Ed25519 public key) after each log line of
    ``old_key``, under the same origin and URL: the change-over of a log key. Comments and order are kept; a log
    that already lists the new key is left as it is. Returns the text and how many lines were added; PolicyError
    if the text does not parse, before or after."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    policy = parse_policy(text, source)
    public_key = Ed25519PublicKey.from_public_bytes(new_key)
    out: list[str] = []
    added = 0
    for raw in text.split("\n"):
        out.append(raw)
        fields = raw.split("#", 1)[0].replace("\t", " ").split()
        if len(fields) not in (2, 3) or fields[0] != "log":
            continue
        verifier = NoteVerifier.from_vkey(fields[1])
        if verifier.public_key_bytes != old_key:
            continue
        if any(key.public_key_bytes == new_key for key in policy.keys_of(verifier.name)):
            continue
        new = NoteVerifier(verifier.name, ALG_ED25519, public_key)
        out.append(" ".join(["log", new.vkey, *fields[2:]]))
        added += 1
    updated = "\n".join(out)
    parse_policy(updated, source)
    return updated, added
