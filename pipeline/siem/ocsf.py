"""Sealed records as OCSF events with the integrity evidence attached (pure: no I/O).

Every record on ``audit.sealed`` becomes one OCSF 1.9 event (the schema source AuditSeal validates
against is OCSF 1.9.0-dev, the first with the ``record_integrity`` profile). The class is chosen by
this table (docs/SIEM.md repeats it):

==========================================================  =============================  ===========
sealed record                                               OCSF class                     activity
==========================================================  =============================  ===========
event, ``action`` verb login/logon/signin/authenticate      Authentication (3002)          Logon 1
event, ``action`` verb logout/logoff/signout                Authentication (3002)          Logoff 2
event ``alert.raised`` from ``auditseal-detector``          Detection Finding (2004)       Create 1
any other event                                             API Activity (6003)            by verb:
                                                                                           Create 1,
                                                                                           Read 2,
                                                                                           Update 3,
                                                                                           Delete 4,
                                                                                           Other 99
rejection (a raw record the sealer refused)                 Application Error (6008)       General 1
checkpoint (signed Merkle checkpoint)                       Event Log Activity (1008)      Other 99
anything the mapping cannot read (unknown kind, a future    Base Event (0)                 Other 99
schema version, damaged bytes): the "unmapped" record
==========================================================  =============================  ===========

The ``record_integrity`` profile: ``attestation_list`` holds one attestation per record, by the
sealer (``authority_uid`` ``auditseal-sealer``):

- ``chain_uid`` the chain id, ``uid`` ``<chain_id>:<seq>`` (the record's ``metadata.uid`` too);
- ``fingerprint``: the entry's chain hash, SHA-256 (``algorithm_id`` 3) over the serialization
  ``auditseal/chain/v1`` (``serialization_id`` 99 Other), hex;
- ``prev_event``: ``<chain_id>:<seq - 1>`` and its chain hash (= this entry's ``prev_hash``); absent at seq 0;
- ``signatures[0]``: the covering checkpoint's Ed25519 signature (``algorithm_id`` 99 Other,
  ``algorithm`` ``Ed25519``, serialization ``auditseal/checkpoint/v1``), ``digest`` = the checkpoint's
  ``checkpoint_hash``, ``certificate.uid`` = the key id. Witness cosignatures of the chain head (once
  witnessing lands) will be appended to the same array, one ``digital_signature`` per witness, and their
  cosigned note to ``unmapped.auditseal.witness``: both are absent today.

One honest difference from the OCSF text: OCSF describes the fingerprint as a hash of the OCSF event's
canonical JSON. AuditSeal's fingerprint is the hash the chain already commits to (of the raw event bytes
and their position), so the OCSF JSON can be re-rendered or enriched by a SIEM without breaking the
evidence, and the signature covers the fingerprint through the checkpoint's Merkle root rather than
directly; the inclusion proof that links the two is in ``unmapped.auditseal.inclusion``.

``unmapped.auditseal`` carries what re-verification needs, exactly (bytes as lowercase hex, the entry
as standard base64): ``entry`` = the hashed entry payload (:mod:`pipeline.wire.sealed`), ``prev_hash``,
``seq``, ``hash``, the checkpoint's every signed field, its signature, and the RFC 6962 audit path of
the entry in the checkpoint's batch. :mod:`pipeline.siem.evidence` checks all of it.

This module is the reference: :mod:`pipeline.native.ocsf_writer` writes the same bytes for sealed
events (``orjson.dumps`` of :func:`event_record`'s dict, held equal by tests/differential/test_ocsf_writer.py)
and :mod:`pipeline.siem.batches` runs this module for everything the compiled writer declines.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from binascii import b2a_base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OCSF_VERSION = "1.9.0-dev"
PROFILES = ("record_integrity",)
EVIDENCE_VERSION = 1
AUTHORITY = "auditseal-sealer"

API_ACTIVITY, AUTHENTICATION, DETECTION_FINDING = 6003, 3002, 2004
APPLICATION_ERROR, EVENT_LOG_ACTIVITY, BASE_EVENT = 6008, 1008, 0

_CLASSES = {
    API_ACTIVITY: ("API Activity", 6, "Application Activity"),
    AUTHENTICATION: ("Authentication", 3, "Identity & Access Management"),
    DETECTION_FINDING: ("Detection Finding", 2, "Findings"),
    APPLICATION_ERROR: ("Application Error", 6, "Application Activity"),
    EVENT_LOG_ACTIVITY: ("Event Log Activity", 1, "System Activity"),
    BASE_EVENT: ("Base Event", 0, "Uncategorized"),
}

LOGON_VERBS = frozenset({"login", "logon", "signin", "sign_in", "authenticate"})
LOGOFF_VERBS = frozenset({"logout", "logoff", "signout", "sign_out"})
ALERT_ACTION, DETECTOR_SERVICE = "alert.raised", "auditseal-detector"
_API_VERBS = {
    1: ("Create", frozenset({"create", "write", "produce", "add", "insert", "upload", "emit", "register"})),
    2: ("Read", frozenset({"read", "get", "list", "describe", "fetch", "view", "download", "search", "export"})),
    3: ("Update", frozenset({"update", "alter", "modify", "change", "grant", "set", "rotate", "edit", "patch"})),
    4: ("Delete", frozenset({"delete", "remove", "revoke", "purge", "destroy", "erase"})),
}
_USER_TYPES = {"USER": (1, "User"), "SERVICE": (4, "Service"), "SYSTEM": (3, "System"), "UNKNOWN": (0, "Unknown")}
# OCSF status_id: 1 Success, 2 Failure (a DENIED outcome is a failure whose status_code says DENIED)
_STATUS = {"SUCCESS": (1, "Success"), "FAILURE": (2, "Failure"), "DENIED": (2, "Failure"), "UNKNOWN": (0, "Unknown")}
# OCSF severity_id for an outcome: a refusal is worth a look, a plain success is informational
_OUTCOME_SEVERITY = {"SUCCESS": (1, "Informational"), "FAILURE": (2, "Low"), "DENIED": (3, "Medium"),
                     "UNKNOWN": (0, "Unknown")}
_ALERT_SEVERITY = {"INFO": (1, "Informational"), "WARNING": (3, "Medium"), "CRITICAL": (5, "Critical")}

SHA256_ID, OTHER_ID, HEX_ID, FLAT_ID = 3, 99, 1, 1
CHAIN_SERIALIZATION = "auditseal/chain/v1"
CHECKPOINT_SERIALIZATION = "auditseal/checkpoint/v1"


@dataclass(frozen=True)
class Position:
    """Where a sealed record was read: the topic, partition and offset of ``audit.sealed`` (or its archive)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the timestamp only when known)."""
        found = {"topic": self.topic, "partition": self.partition, "offset": self.offset}
        if self.timestamp_ms is not None:
            found["timestamp_ms"] = self.timestamp_ms
        return found


@dataclass(frozen=True)
class CoveringCheckpoint:
    """A checkpoint's evidence and OCSF signature, rendered once and shared by every entry of its batch."""

    evidence: Mapping[str, Any]
    signature: Mapping[str, Any]


def covering_checkpoint(checkpoint: Mapping[str, Any], position: Position) -> CoveringCheckpoint:
    """The rendered evidence of a checkpoint record read at ``position``."""
    return CoveringCheckpoint(checkpoint_evidence(checkpoint, position), checkpoint_signature(checkpoint))


@dataclass(frozen=True)
class Inclusion:
    """The covering checkpoint of an entry and the entry's RFC 6962 audit path in its batch."""

    covering: CoveringCheckpoint
    leaf_index: int
    tree_size: int
    audit_path: Sequence[bytes]


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def micros(value: int | datetime.datetime) -> int:
    """Microseconds since the Unix epoch of an Avro ``timestamp-micros`` as the codec decodes it (exact)."""
    if isinstance(value, datetime.datetime):
        return (value - _EPOCH) // _MICROSECOND
    return value


def entry_uid(chain_id: str, seq: int) -> str:
    """``metadata.uid`` of a chain entry's OCSF record: ``audit.raw/3:1234``."""
    return f"{chain_id}:{seq}"


def checkpoint_uid(chain_id: str, last_seq: int) -> str:
    """``metadata.uid`` of a checkpoint's OCSF record: ``audit.raw/3:checkpoint:1999``."""
    return f"{chain_id}:checkpoint:{last_seq}"


# verb -> (class_uid, activity_id, activity_name): the table above as one lookup (the mapping's hot path)
_CLASS_OF_VERB: dict[str, tuple[int, int, str]] = {
    **{verb: (API_ACTIVITY, activity_id, name) for activity_id, (name, verbs) in _API_VERBS.items() for verb in verbs},
    **{verb: (AUTHENTICATION, 1, "Logon") for verb in LOGON_VERBS},
    **{verb: (AUTHENTICATION, 2, "Logoff") for verb in LOGOFF_VERBS},
}
_API_OTHER = (API_ACTIVITY, 99, "Other")


def api_activity_of(action: str) -> tuple[int, str]:
    """(activity_id, activity_name) of an API Activity from the verb ending ``action``."""
    verb = action.rsplit(".", 1)[-1]
    for activity_id, (name, verbs) in _API_VERBS.items():
        if verb in verbs:
            return activity_id, name
    return 99, "Other"


def class_of_event(event: Mapping[str, Any]) -> tuple[int, int, str]:
    """(class_uid, activity_id, activity_name) of an AuditEvent, by the module's table."""
    action = event["action"]
    found = _CLASS_OF_VERB.get(action.rpartition(".")[2], _API_OTHER)
    if found[0] != AUTHENTICATION and action == ALERT_ACTION and event["source_service"] == DETECTOR_SERVICE:
        return DETECTION_FINDING, 1, "Create"
    return found


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (what OCSF's ``ip_t`` holds), as :mod:`ipaddress` reads it."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def source_endpoint(source_ip: str | None) -> dict[str, str]:
    """``src_endpoint`` of an actor's ``source_ip``: OCSF's ``ip`` only for an IP address; anything else
    (a pseudonym of :mod:`pipeline.privacy`, a host name) is the endpoint's ``name`` alone."""
    if not source_ip:
        return {"name": "unknown"}
    if is_ip_address(source_ip):
        return {"ip": source_ip, "name": source_ip}
    return {"name": source_ip}


def _base(class_uid: int, activity_id: int, activity_name: str, time_ms: int, severity: tuple[int, str],
          metadata: dict[str, Any]) -> dict[str, Any]:
    class_name, category_uid, category_name = _CLASSES[class_uid]
    return {
        "class_uid": class_uid, "class_name": class_name, "category_uid": category_uid,
        "category_name": category_name, "activity_id": activity_id, "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{class_name}: {activity_name}",
        "time": time_ms, "severity_id": severity[0], "severity": severity[1], "metadata": metadata,
    }


def _metadata(uid: str, position: Position, *, original_uid: str | None = None,
              product_version: str | None = None) -> dict[str, Any]:
    product = {"name": "AuditSeal", "vendor_name": "AuditSeal"}
    if product_version:
        product["version"] = product_version
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION, "profiles": list(PROFILES), "uid": uid, "product": product,
        "log_provider": "auditseal", "log_name": position.topic,
    }
    if original_uid is not None:
        metadata["original_event_uid"] = original_uid
    if position.timestamp_ms is not None:
        metadata["logged_time"] = position.timestamp_ms
    return metadata


def _hex_fingerprint(value: bytes, serialization: str | None) -> dict[str, Any]:
    if serialization is None:
        return {"algorithm_id": SHA256_ID, "algorithm": "SHA-256", "value": value.hex(), "encoding_id": HEX_ID,
                "encoding": "Hex", "serialization_id": FLAT_ID, "serialization": "Flat"}
    return {"algorithm_id": SHA256_ID, "algorithm": "SHA-256", "value": value.hex(), "encoding_id": HEX_ID,
            "encoding": "Hex", "serialization_id": OTHER_ID, "serialization": serialization}


def checkpoint_signature(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The OCSF ``digital_signature`` of a checkpoint (its Ed25519 signature's bytes are in
    ``unmapped.auditseal.checkpoint.signature``: OCSF has no attribute for signature bytes)."""
    return {
        "algorithm_id": OTHER_ID, "algorithm": "Ed25519",
        "serialization_id": OTHER_ID, "serialization": CHECKPOINT_SERIALIZATION,
        "created_time": checkpoint["issued_at_micros"] // 1000,
        "digest": _hex_fingerprint(checkpoint["checkpoint_hash"], CHECKPOINT_SERIALIZATION),
        "certificate": {"uid": checkpoint["key_id"], "issuer": AUTHORITY, "serial_number": checkpoint["key_id"]},
    }


def checkpoint_evidence(checkpoint: Mapping[str, Any], position: Position) -> dict[str, Any]:
    """Every field of a checkpoint record, bytes as hex, and where it was read."""
    return {
        "chain_id": checkpoint["chain_id"], "first_seq": checkpoint["first_seq"], "last_seq": checkpoint["last_seq"],
        "merkle_root": checkpoint["merkle_root"].hex(), "chain_head": checkpoint["chain_head"].hex(),
        "prev_checkpoint_hash": checkpoint["prev_checkpoint_hash"].hex(), "key_id": checkpoint["key_id"],
        "issued_at_micros": checkpoint["issued_at_micros"], "signature": checkpoint["signature"].hex(),
        "checkpoint_hash": checkpoint["checkpoint_hash"].hex(),
        "last_source_offset": checkpoint["last_source_offset"], "sealed": position.as_dict(),
        # version 2 (signed): the log's origin and the first raw offset; absent for a version 1 checkpoint
        **({"origin": checkpoint["origin"], "first_source_offset": checkpoint["first_source_offset"]}
           if checkpoint.get("origin") else {}),
    }


def _entry_attestation(record: Mapping[str, Any], inclusion: Inclusion | None, hash_hex: str | None = None,
                       prev_hex: str | None = None) -> dict[str, Any]:
    chain_id, seq = record["chain_id"], record["seq"]
    attestation: dict[str, Any] = {
        "uid": f"{chain_id}:{seq}", "authority_uid": AUTHORITY, "chain_uid": chain_id,
        "fingerprint": {"algorithm_id": SHA256_ID, "algorithm": "SHA-256",
                        "value": hash_hex or record["hash"].hex(), "encoding_id": HEX_ID, "encoding": "Hex",
                        "serialization_id": OTHER_ID, "serialization": CHAIN_SERIALIZATION},
    }
    if seq > 0:
        attestation["prev_event"] = {
            "uid": f"{chain_id}:{seq - 1}",
            "fingerprint": {"algorithm_id": SHA256_ID, "algorithm": "SHA-256",
                            "value": prev_hex or record["prev_hash"].hex(), "encoding_id": HEX_ID, "encoding": "Hex",
                            "serialization_id": OTHER_ID, "serialization": CHAIN_SERIALIZATION}}
    if inclusion is not None:
        attestation["signatures"] = [inclusion.covering.signature]
    return attestation


def _entry_evidence(kind: str, record: Mapping[str, Any], payload: bytes, position: Position,
                    inclusion: Inclusion | None, evidence_error: str | None, hash_hex: str | None = None,
                    prev_hex: str | None = None) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "version": EVIDENCE_VERSION, "kind": kind, "chain_id": record["chain_id"], "seq": record["seq"],
        "prev_hash": prev_hex or record["prev_hash"].hex(), "hash": hash_hex or record["hash"].hex(),
        "entry": b2a_base64(payload, newline=False).decode("ascii"),
        "source": {"partition": record["source_partition"], "offset": record["source_offset"],
                   "timestamp_micros": record["source_timestamp_micros"]},
        "sealed": position.as_dict(),
    }
    if inclusion is not None:
        evidence["checkpoint"] = inclusion.covering.evidence
        evidence["inclusion"] = {"leaf_index": inclusion.leaf_index, "tree_size": inclusion.tree_size,
                                 "audit_path": [node.hex() for node in inclusion.audit_path]}
    if evidence_error is not None:
        evidence["evidence_error"] = evidence_error
    return evidence


def event_record(record: Mapping[str, Any], event: Mapping[str, Any], payload: bytes, position: Position,
                 inclusion: Inclusion | None, *, evidence_error: str | None = None,
                 product_version: str | None = None) -> dict[str, Any]:
    """The OCSF event of a sealed AuditEvent (``event`` decoded from ``record["event"]``)."""
    # Written flat (no helper per nested object): this runs once per sealed record in the bridge and export.
    class_uid, activity_id, activity_name = class_of_event(event)
    outcome, actor, resource_in = event["outcome"], event["actor"], event["resource"]
    status = str(outcome["status"])
    metadata = _metadata(f"{record['chain_id']}:{record['seq']}", position, original_uid=str(event["event_id"]),
                         product_version=product_version)
    request_id = event.get("request_id")
    if request_id:
        metadata["correlation_uid"] = request_id
    attributes = dict(event.get("attributes") or {})
    if class_uid == DETECTION_FINDING:
        severity = _ALERT_SEVERITY.get(attributes.get("severity", ""), (0, "Unknown"))
    else:
        severity = _OUTCOME_SEVERITY.get(status, (0, "Unknown"))
    occurred_ms = micros(event["occurred_at"]) // 1000
    found = _base(class_uid, activity_id, activity_name, occurred_ms, severity, metadata)
    status_id, status_name = _STATUS.get(status, (0, "Unknown"))
    found["status_id"], found["status"], found["status_code"] = status_id, status_name, status
    if outcome.get("reason"):
        found["status_detail"] = outcome["reason"]
    actor_id = actor["id"]
    user_type_id, user_type = _USER_TYPES.get(str(actor["type"]), (0, "Unknown"))
    user = {"uid": actor_id, "name": actor_id, "type_id": user_type_id, "type": user_type}
    session_id, source_ip = actor.get("session_id"), actor.get("source_ip")
    session = {"uid": session_id} if session_id else None
    endpoint = source_endpoint(source_ip)
    resource_type, resource_id = resource_in["type"], resource_in["id"]
    resource = {"type": resource_type, "uid": resource_id, "name": resource_id}
    action = event["action"]
    found["message"] = f"{actor_id} {action} {resource_type}/{resource_id}: {status}"
    if class_uid == API_ACTIVITY:
        found["actor"] = {"user": user, "session": session} if session else {"user": user}
        api: dict[str, Any] = {"operation": action, "service": {"name": event["source_service"]}}
        if request_id:
            api["request"] = {"uid": request_id}
        found["api"] = api
        found["src_endpoint"] = endpoint
        found["resources"] = [resource]
    elif class_uid == AUTHENTICATION:
        found["user"] = user
        found["src_endpoint"] = endpoint
        found["service"] = {"name": event["source_service"]}
        if session:
            found["session"] = session
    else:  # DETECTION_FINDING
        found["finding_info"] = {
            "uid": str(event["event_id"]), "title": attributes.get("rule", action),
            "desc": attributes.get("summary", found["message"]), "types": [attributes.get("rule", "unknown")],
            "created_time": occurred_ms,
            "related_events": [{"uid": uid} for uid in attributes.get("evidence_event_ids", "").split(",") if uid],
        }
        found["message"] = attributes.get("summary", found["message"])
        found["is_alert"] = True
        found["resources"] = [resource]
    if actor.get("user_agent"):
        found["http_request"] = {"user_agent": actor["user_agent"]}
    hash_hex, prev_hex = record["hash"].hex(), record["prev_hash"].hex()
    found["attestation_list"] = [_entry_attestation(record, inclusion, hash_hex, prev_hex)]
    unmapped: dict[str, Any] = {"auditseal": _entry_evidence("event", record, payload, position, inclusion,
                                                             evidence_error, hash_hex, prev_hex)}
    if attributes:
        unmapped["attributes"] = attributes
    if event.get("trace_id"):
        unmapped["trace_id"] = event["trace_id"]
    found["unmapped"] = unmapped
    return found


def rejection_record(record: Mapping[str, Any], payload: bytes, position: Position, inclusion: Inclusion | None, *,
                     evidence_error: str | None = None, product_version: str | None = None) -> dict[str, Any]:
    """The OCSF Application Error of a raw record the sealer refused."""
    metadata = _metadata(entry_uid(record["chain_id"], record["seq"]), position, product_version=product_version)
    found = _base(APPLICATION_ERROR, 1, "General Error", record["source_timestamp_micros"] // 1000, (3, "Medium"),
                  metadata)
    found.update(status_id=2, status="Failure", status_code="REJECTED", status_detail=record["reason"],
                 message=f"the sealer refused raw record {record['source_partition']}@{record['source_offset']} "
                         f"({record['raw_size']} bytes, sha256 {record['raw_sha256'].hex()}): {record['reason']}")
    found["attestation_list"] = [_entry_attestation(record, inclusion)]
    evidence = _entry_evidence("rejection", record, payload, position, inclusion, evidence_error)
    evidence["rejected"] = {"raw_sha256": record["raw_sha256"].hex(), "raw_size": record["raw_size"],
                            "reason": record["reason"]}
    found["unmapped"] = {"auditseal": evidence}
    return found


def checkpoint_record(checkpoint: Mapping[str, Any], position: Position, *,
                      product_version: str | None = None) -> dict[str, Any]:
    """The OCSF Event Log Activity of a signed checkpoint."""
    chain_id = checkpoint["chain_id"]
    metadata = _metadata(checkpoint_uid(chain_id, checkpoint["last_seq"]), position, product_version=product_version)
    found = _base(EVENT_LOG_ACTIVITY, 99, "Checkpoint", checkpoint["issued_at_micros"] // 1000, (1, "Informational"),
                  metadata)
    found.update(status_id=1, status="Success", log_name=chain_id, log_provider=AUTHORITY,
                 message=f"{chain_id}: entries {checkpoint['first_seq']}..{checkpoint['last_seq']} signed by key "
                         f"{checkpoint['key_id']}, Merkle root {checkpoint['merkle_root'].hex()}")
    attestation: dict[str, Any] = {
        "uid": checkpoint_uid(chain_id, checkpoint["last_seq"]), "authority_uid": AUTHORITY, "chain_uid": chain_id,
        "fingerprint": _hex_fingerprint(checkpoint["checkpoint_hash"], CHECKPOINT_SERIALIZATION),
        "signatures": [checkpoint_signature(checkpoint)],
    }
    if checkpoint["first_seq"] > 0:
        attestation["prev_event"] = {
            "uid": checkpoint_uid(chain_id, checkpoint["first_seq"] - 1),
            "fingerprint": _hex_fingerprint(checkpoint["prev_checkpoint_hash"], CHECKPOINT_SERIALIZATION)}
    found["attestation_list"] = [attestation]
    found["unmapped"] = {"auditseal": {"version": EVIDENCE_VERSION, "kind": "checkpoint", "sealed": position.as_dict(),
                                       "checkpoint": checkpoint_evidence(checkpoint, position)}}
    return found


def unmapped_record(value: bytes, position: Position, reason: str, *, kind: str | None = None,
                    record: Mapping[str, Any] | None = None, payload: bytes | None = None,
                    inclusion: Inclusion | None = None, time_ms: int | None = None,
                    product_version: str | None = None) -> dict[str, Any]:
    """The OCSF Base Event standing for a sealed record the mapping cannot read.

    It carries the SHA-256 and size of the record's bytes (its ``attestation`` fingerprint is that
    hash, serialization Flat) and the reason, so nothing is dropped silently. When the record is a
    chain entry whose inner event alone is unreadable (a future AuditEvent version, say), ``record``
    and ``payload`` attach the full chain evidence as for any entry.
    """
    digest = hashlib.sha256(value).digest()
    uid = (entry_uid(record["chain_id"], record["seq"]) if record is not None
           else f"{position.topic}/{position.partition}@{position.offset}")
    when = time_ms if time_ms is not None else (position.timestamp_ms or 0)
    found = _base(BASE_EVENT, 99, "Unmapped", when, (3, "Medium"), _metadata(uid, position,
                                                                              product_version=product_version))
    found.update(status_id=0, status="Unknown", status_detail=reason,
                 message=f"unmappable record on {position.topic}[{position.partition}]@{position.offset} "
                         f"({len(value)} bytes, sha256 {digest.hex()}): {reason}")
    attestations = [{"uid": uid, "authority_uid": AUTHORITY, "fingerprint": _hex_fingerprint(digest, None)}]
    evidence: dict[str, Any] = {"version": EVIDENCE_VERSION, "kind": "unmapped", "reason": reason,
                                "value_sha256": digest.hex(), "value_size": len(value),
                                "schema_fingerprint": bytes(value[2:10]).hex() if len(value) >= 10 else None,
                                "sealed": position.as_dict()}
    if kind is not None:
        evidence["record_kind"] = kind
    if record is not None and payload is not None:
        attestations.append(_entry_attestation(record, inclusion))
        evidence["entry_evidence"] = _entry_evidence(kind or "event", record, payload, position, inclusion, None)
    found["attestation_list"] = attestations
    found["unmapped"] = {"auditseal": evidence}
    return found
