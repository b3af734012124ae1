"""The evidence bundle of a timeline: its events with their inclusion proofs, checked offline (pure).

``auditseal timeline --bundle FILE`` writes, and ``auditseal verify-proof FILE`` checks, with the public
keyring alone::

    {"format": "auditseal-timeline-bundle", "version": 1,
     "source": "s3://...", "query": {...TimelineQuery.as_dict()},
     "complete": bool, "problems": [{kind, chain_id, seq, location, detail}, ...],   as the timeline found them
     "events": [{"event_id", "occurred_at_micros", "status", "problem", "proof": {v1 JSON proof} | null}, ...]}

What :func:`verify_bundle` establishes: every proof is valid (:func:`pipeline.verifier.proofs.verify_proof`:
the entry hashes to a leaf of a checkpoint signed under the keyring); the event each proof carries is the one
listed (id and time) and matches the bundle's query; events are in time order and no chain entry is listed twice.
What a bundle cannot prove by itself: that no other event matches (completeness is what the timeline found
when it ran, recorded in ``complete`` and ``problems``; ``auditseal verify`` over the archive proves it).
An event listed without a proof (UNVERIFIED) makes the bundle fail: the proof it lacks is the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.integrity.keyring import Keyring
from pipeline.timeline.query import TimelineQuery
from pipeline.timeline.scan import VERIFIED, Timeline
from pipeline.verifier.proofs import InvalidProofError, verify_proof
from pipeline.wire.codec import DecodeError
from pipeline.wire.event_head import read_event_head

BUNDLE_FORMAT = "auditseal-timeline-bundle"
BUNDLE_VERSION = 1


def is_bundle(document: Any) -> bool:
    """Whether a parsed JSON document is a timeline bundle (rather than a single proof)."""
    return isinstance(document, dict) and document.get("format") == BUNDLE_FORMAT


def make_bundle(timeline: Timeline) -> dict[str, Any]:
    """The JSON-ready bundle of a timeline built with proofs."""
    return {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "source": timeline.source,
            "query": timeline.query.as_dict(), "complete": timeline.complete,
            "problems": [problem.as_dict() for problem in timeline.problems],
            "events": [{"event_id": event.head.event_id, "occurred_at_micros": event.head.occurred_at_micros,
                        "chain_id": event.chain_id, "seq": event.seq, "status": event.status,
                        "problem": event.problem, "proof": event.proof} for event in timeline.events]}


@dataclass
class BundleVerdict:
    """What checking a bundle found: the events proven, and each failure (``event_id: why``)."""

    events: int = 0
    proven: int = 0
    failures: list[str] = field(default_factory=list)
    complete_claimed: bool = False
    problems_claimed: int = 0

    @property
    def valid(self) -> bool:
        """True if every listed event is proven and the listing is consistent."""
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"valid": self.valid, "events": self.events, "proven": self.proven, "failures": self.failures,
                "complete_claimed": self.complete_claimed, "problems_claimed": self.problems_claimed}


def verify_bundle(bundle: Any, keyring: Keyring) -> BundleVerdict:
    """Check a parsed bundle offline (module docstring); never raises for what it finds."""
    verdict = BundleVerdict()
    if not is_bundle(bundle) or bundle.get("version") != BUNDLE_VERSION:
        verdict.failures.append(f"not a timeline bundle of version {BUNDLE_VERSION}")
        return verdict
    try:
        query = TimelineQuery.from_dict(bundle.get("query"))
    except ValueError as exc:
        verdict.failures.append(f"query: {exc}")
        return verdict
    events = bundle.get("events")
    if not isinstance(events, list):
        verdict.failures.append("events must be a list")
        return verdict
    verdict.complete_claimed = bundle.get("complete") is True
    verdict.problems_claimed = len(bundle.get("problems") or [])
    seen: set[tuple[str, int]] = set()
    previous = None
    for number, listed in enumerate(events):
        verdict.events += 1
        if not isinstance(listed, dict):
            verdict.failures.append(f"events[{number}]: not a JSON object")
            continue
        event_id = str(listed.get("event_id"))
        proof = listed.get("proof")
        if listed.get("status") != VERIFIED or proof is None:
            verdict.failures.append(f"{event_id}: no proof ({listed.get('problem') or 'unverified'})")
            continue
        try:
            verified = verify_proof(proof, keyring)
        except InvalidProofError as exc:
            verdict.failures.append(f"{event_id}: {exc}")
            continue
        try:
            head = read_event_head(bytes.fromhex(proof["entry"]["event"]))
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            verdict.failures.append(f"{event_id}: the proven event does not decode: {exc}")
            continue
        if verified.event_id != event_id or head.occurred_at_micros != listed.get("occurred_at_micros"):
            verdict.failures.append(f"{event_id}: the proof is of event {verified.event_id} at "
                                    f"{head.occurred_at_micros}, not the one listed")
            continue
        if not query.matches(head):
            verdict.failures.append(f"{event_id}: the proven event does not match the bundle's query")
            continue
        key = (head.occurred_at_micros, verified.chain_id, verified.seq)
        if key[1:] in seen:  # one chain entry listed twice (one event id may be sealed twice: a producer retry)
            verdict.failures.append(f"{event_id}: chain {verified.chain_id} seq {verified.seq} listed twice")
        seen.add(key[1:])
        if previous is not None and key < previous:
            verdict.failures.append(f"{event_id}: listed out of time order")
        previous = key
        verdict.proven += 1
    return verdict
