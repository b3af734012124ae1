"""The compiled OCSF rendering (:mod:`pipeline.native.ocsf_writer`) set up from the reference's own tables.

:func:`event_writer` gives the process's :class:`~pipeline.native.ocsf_writer.EventWriter` for one
sealed topic: its constant JSON pieces are ``orjson.dumps`` of the values :mod:`pipeline.siem.ocsf`
holds (class names, severities, statuses, user types, the fingerprint object), so the table stays
in one place; it reads the AuditEvent versions of the catalog whose layout is the one it was
written for (any other version, a future one say, goes to the reference). None when the compiled
module is not built or ``AUDITSEAL_SIEM_NATIVE=0`` (then everything is mapped by the reference).
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from pipeline.siem import ocsf
from pipeline.wire.codec import MARKER, EventCodec, default_codec

# What the compiled reader reads, field by field (AuditEvent v1; v2 adds protected_fields, v3 protected_subjects)
_V1_LAYOUT = (
    ("event_id", "string"), ("occurred_at", "long"),
    ("actor", (("id", "string"), ("type", ("enum", "USER", "SERVICE", "SYSTEM", "UNKNOWN")),
               ("source_ip", "?string"), ("user_agent", "?string"), ("session_id", "?string"))),
    ("action", "string"), ("resource", (("type", "string"), ("id", "string"))),
    ("outcome", (("status", ("enum", "SUCCESS", "FAILURE", "DENIED", "UNKNOWN")), ("reason", "?string"))),
    ("source_service", "string"), ("request_id", "?string"), ("trace_id", "?string"),
    ("attributes", ("map", "string")),
)
_PROTECTED = ("protected_fields", ("array", (("field", "string"), ("subject", "string"), ("key_id", "string"),
                                             ("ciphertext", "string"))))
_PROTECTED_SUBJECTS = ("protected_subjects", ("array", (("subject", "string"), ("key_id", "string"),
                                                         ("fields", ("array", "string")), ("ciphertext", "bytes"))))
ACTOR_TYPES = _V1_LAYOUT[2][1][1][1][1:]
STATUSES = _V1_LAYOUT[5][1][0][1][1:]


def _shape(schema: Any) -> Any:
    # a parsed Avro type as the layout tuples above write it (names, types, symbols; docs and defaults aside)
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        if len(schema) == 2 and schema[0] == "null" and schema[1] == "string":
            return "?string"
        return ("union", *(_shape(branch) for branch in schema))
    kind = schema["type"]
    if kind == "record":
        return tuple((field["name"], _shape(field["type"])) for field in schema["fields"])
    if kind == "enum":
        return ("enum", *schema["symbols"])
    if kind == "map":
        return ("map", _shape(schema["values"]))
    if kind == "array":
        return ("array", _shape(schema["items"]))
    if isinstance(kind, str) and kind in ("string", "long", "int", "bytes"):
        return kind  # a primitive with a logical type: the bytes are the primitive's
    return ("other", kind)


def readable_headers(codec: EventCodec) -> dict[bytes, int]:
    """Single-object header -> how many protected arrays follow the v1 fields (0 for v1, 1 for v2's
    protected_fields, 2 for v3's protected_fields and protected_subjects), of each AuditEvent version the
    compiled reader reads."""
    layouts = {_V1_LAYOUT: 0, (*_V1_LAYOUT, _PROTECTED): 1, (*_V1_LAYOUT, _PROTECTED, _PROTECTED_SUBJECTS): 2}
    found = {}
    for version in codec.catalog.versions(codec.schema.family):
        arrays = layouts.get(_shape(version.parsed))
        if arrays is not None:
            found[MARKER + version.fingerprint] = arrays
    return found


def _fields(document: dict[str, Any]) -> bytes:
    # ``,"k":v,...`` of a dict: the inside of its JSON object, to follow other members
    return b"," + orjson.dumps(document)[1:-1]


def _head(class_uid: int, activity_id: int, activity_name: str) -> bytes:
    base = ocsf._base(class_uid, activity_id, activity_name, 0, (0, ""), {})
    head = {key: base[key] for key in list(base)[:list(base).index("time")]}
    return orjson.dumps(head)[:-1] + b',"time":'


def event_writer(topic: str, partition: int, product_version: str | None = None, codec: EventCodec | None = None):
    """The compiled writer of OCSF events read from ``topic[partition]``, or None (module docstring)."""
    if os.environ.get("AUDITSEAL_SIEM_NATIVE", "1") == "0":
        return None
    try:
        from pipeline.native.ocsf_writer import EventWriter
    except ImportError:
        return None
    codec = codec or default_codec()
    classes = {verb.encode(): (found[0], _head(*found)) for verb, found in ocsf._CLASS_OF_VERB.items()}
    metadata = ocsf._metadata("", ocsf.Position(topic, partition, 0), original_uid="", product_version=product_version)
    keys = list(metadata)
    mid = {key: metadata[key] for key in keys[keys.index("uid") + 1:keys.index("original_event_uid")]}
    fingerprint = orjson.dumps(ocsf._hex_fingerprint(b"\x00", ocsf.CHAIN_SERIALIZATION))
    open_, close = fingerprint.split(b'"value":"00"')
    sealed = orjson.dumps(ocsf.Position(topic, partition, 0).as_dict())
    return EventWriter(
        readable_headers(codec), classes, (ocsf._API_OTHER[0], _head(*ocsf._API_OTHER)),
        ocsf.ALERT_ACTION.encode(), ocsf.DETECTOR_SERVICE.encode(),
        [_fields(dict(zip(("severity_id", "severity"), ocsf._OUTCOME_SEVERITY[s], strict=True))) for s in STATUSES],
        [_fields({"status_id": ocsf._STATUS[s][0], "status": ocsf._STATUS[s][1], "status_code": s}) for s in STATUSES],
        [orjson.dumps(s)[1:-1] for s in STATUSES],
        [_fields({"type_id": ocsf._USER_TYPES[t][0], "type": ocsf._USER_TYPES[t][1]}) + b"}" for t in ACTOR_TYPES],
        b',"metadata":{' + orjson.dumps({key: metadata[key] for key in keys[:keys.index("uid")]})[1:-1] + b',"uid":',
        _fields(mid) + b',"original_event_uid":',
        sealed[:sealed.rindex(b"0")],
        open_ + b'"value":"', b'"' + close,
        orjson.dumps(ocsf.AUTHORITY),
    )
