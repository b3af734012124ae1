"""``auditseal reconcile``: the reconciler as a service, a round every few seconds, each round attested.

Per round and chain with new entries: one ``reconcile.attest`` AuditEvent (SUCCESS, or FAILURE with the
mismatch count) and one ``reconcile.mismatch`` event (FAILURE) per mismatch, each signed with the
reconciler's own key (:mod:`pipeline.reconciler.attestation`) and written to ``audit.reconciliation``, which
only the reconciler may write; a sealer seals that topic into ``audit.sealed.reconciliation``. A mismatch is
also logged and counted (``auditseal_reconciler_mismatches_total``: the shipped Prometheus rule pages on
any increase), and the detector's ``verification_failure`` rule alerts on ``reconcile.mismatch``.

The position of each source is the committed offset of its group (``auditseal-reconciler-<source>``) on the
sealed partitions, committed after every round once its events are delivered: a restart resumes after the last
attested round (:meth:`Reconciler.commit`), and ``auditseal verify --reconciler-keyring`` reports any archived
range no attestation covers (:mod:`pipeline.verifier.attestations`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from pipeline.config import KafkaSettings
from pipeline.integrity.keyring import Signer
from pipeline.producer.event import new_event
from pipeline.reconciler.attestation import sign_attestation
from pipeline.reconciler.reconciler import Reconciler, Round

log = logging.getLogger(__name__)

RECONCILER_SERVICE = "auditseal-reconciler"
ATTEST_ACTION, MISMATCH_ACTION = "reconcile.attest", "reconcile.mismatch"
# event ids derived from what is attested: a replayed round carries the ids it had the first time
EVENT_ID_NAMESPACE = uuid.UUID("0f4b7c1e-3a52-4d6b-9e1f-7c2d8a5b6e30")

MISMATCHES = Counter("auditseal_reconciler_mismatches_total", "Sealed entries that disagree with their source",
                     ["chain", "kind"])
CHECKED = Counter("auditseal_reconciler_entries_checked_total", "Sealed entries compared with their raw record",
                  ["chain"])
LAST_ROUND = Gauge("auditseal_reconciler_last_round_timestamp_seconds", "When the last round ended")


def round_events(round_: Round, signer: Signer, principal: str) -> list[dict]:
    """The signed events of one round: an attestation, then one event per mismatch."""
    resource = {"type": "audit.chain", "id": round_.chain_id}
    base = {"chain_id": round_.chain_id, "sealed_topic": round_.sealed_topic,
            "sealed_partition": str(round_.sealed_partition)}
    attested = {**base, "sealed_from_offset": str(round_.sealed_first if round_.sealed_from is None
                                                   else round_.sealed_from),
                "sealed_first_offset": str(round_.sealed_first), "sealed_last_offset": str(round_.sealed_last),
                "source_first_offset": str(round_.source_first), "source_last_offset": str(round_.source_last),
                "entries": str(round_.entries), "mismatches": str(len(round_.mismatches)),
                "unverifiable": str(round_.unverifiable)}
    key = f"{round_.sealed_topic}/{round_.sealed_partition}/{round_.sealed_first}-{round_.sealed_last}"
    failed = bool(round_.mismatches)
    events = [_event(ATTEST_ACTION, resource, sign_attestation(attested, signer), principal, f"attest/{key}",
                     "FAILURE" if failed else "SUCCESS",
                     f"{len(round_.mismatches)} mismatch(es)" if failed else None)]
    for mismatch in round_.mismatches:
        # the round's range: the verifier counts each round's mismatch records against its attestation
        attributes = {**base, "sealed_from_offset": attested["sealed_from_offset"],
                      "sealed_last_offset": attested["sealed_last_offset"], "kind": mismatch.kind, "source_offset": str(mismatch.source_offset),
                      "sealed_offset": str(mismatch.sealed_offset), "detail": mismatch.detail[:900]}
        events.append(_event(MISMATCH_ACTION, resource, sign_attestation(attributes, signer), principal,
                             f"mismatch/{key}/{mismatch.kind}/{mismatch.source_offset}", "FAILURE",
                             mismatch.describe()[:1000]))
    return events


def _event(action: str, resource: dict, attributes: dict, principal: str, key: str, status: str,
           reason: str | None) -> dict:
    return new_event(event_id=str(uuid.uuid5(EVENT_ID_NAMESPACE, key)), actor={"id": principal, "type": "SYSTEM"},
                     action=action, resource=resource, outcome={"status": status, "reason": reason},
                     source_service=RECONCILER_SERVICE, attributes=attributes)


def record_round(round_: Round, report: Callable[[str], object]) -> None:
    """Count and log one round's findings."""
    CHECKED.labels(round_.chain_id).inc(round_.entries)
    for mismatch in round_.mismatches:
        MISMATCHES.labels(round_.chain_id, mismatch.kind).inc()
        log.error("reconcile: %s", mismatch.describe())
        report(f"reconcile: MISMATCH {mismatch.describe()}")


def run_reconciler(settings: KafkaSettings, signer: Signer, *, pairs: list[tuple[str, str]], output_topic: str,
                   interval: float = 5.0, once: bool = False, report: Callable[[str], object] = print) -> int:
    """Reconcile each (source topic, sealed topic) pair every ``interval`` seconds until interrupted (``once``:
    one round); returns the number of mismatches found."""
    from pipeline.producer.client import AuditProducer

    principal = f"User:{settings.username}"
    # each source's position is its group's committed offsets on the sealed topic: a restart resumes there
    reconcilers = [Reconciler(settings, source_topic=s, sealed_topic=t, group_id=f"auditseal-reconciler-{s}",
                              resume=True) for s, t in pairs]
    found = 0
    try:
        with AuditProducer(settings, topic=output_topic, config={"client.id": RECONCILER_SERVICE}) as producer:
            producer.check()
            while True:
                started = time.monotonic()
                for reconciler in reconcilers:
                    for round_ in reconciler.step():
                        record_round(round_, report)
                        found += len(round_.mismatches)
                        for event in round_events(round_, signer, principal):
                            producer.emit(event, key=round_.chain_id)
                producer.flush(60)
                # only now, with every attestation delivered (flush raises otherwise), does the position move on
                for reconciler in reconcilers:
                    reconciler.commit()
                LAST_ROUND.set(time.time())
                if once:
                    return found
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        for reconciler in reconcilers:
            reconciler.close()
