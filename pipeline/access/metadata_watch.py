"""Turning the KRaft metadata log's changes into AuditEvents: who may do what, with every detail.

:class:`MetadataWatch` reads the segments of ``__cluster_metadata-0`` on the controller's disk from a durable
position (segment, byte, next offset) and maps each change decoded by :mod:`pipeline.access.metadata_log`
to an event: ``user.credential_set`` / ``user.credential_delete`` naming the user (and whether the credential
was created or changed, and whether ``auditseal acl apply`` (or ``dev up``) announced it), ``acl.create`` /
``acl.delete`` with the binding, ``config.set`` / ``config.delete`` naming the resource and the key (and the
value, unless it is a secret), ``topic.create`` / ``topic.delete``.

The metadata log does not name who asked for a change; the broker's authorizer log does (the
``cluster.alter`` / ``topic.alter_configs`` decision of the same moment, forwarded by the same auditor).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.access.authorizer_log import EVENT_ID_NAMESPACE
from pipeline.access.metadata_log import MetadataChange, MetadataLogError, is_secret_config, read_batch
from pipeline.access.tail import save_json_atomically
from pipeline.producer.event import new_event

METADATA_SERVICE = "kafka-metadata"
CONTROLLER_ACTOR = {"id": "kafka-controller", "type": "SYSTEM"}
ROTATE_ACTION = "credential.rotate"
_SEGMENT = re.compile(r"^(\d{20})\.log$")


@dataclass
class WatchState:
    """Where reading stopped, and what earlier records said (to name what a removal removes)."""

    segment: int = -1  # base offset of the segment file being read (-1: none yet)
    byte: int = 0
    next_offset: int = 0
    topics: dict[str, str] = field(default_factory=dict)  # topic id -> name
    acls: dict[str, dict[str, str]] = field(default_factory=dict)  # acl id -> binding
    credentials: dict[str, str] = field(default_factory=dict)  # "user/mechanism" -> salt digest

    @classmethod
    def load(cls, path: Path) -> WatchState:
        """The saved state (a fresh one if the file does not exist yet)."""
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return cls()

    def save(self, path: Path) -> None:
        """Write the state atomically."""
        save_json_atomically(path, self.__dict__)


class MetadataWatch:
    """Reads new metadata-log changes and returns them as events; :meth:`commit` saves the position once
    the caller has delivered them."""

    def __init__(self, directory: Path, state_file: Path, *, start_at_end: bool = False) -> None:
        self.directory = directory
        self.state_file = state_file
        self.state = WatchState.load(state_file)
        self._pending: WatchState | None = None
        self.announced: dict[str, int] = {}  # user -> time (µs) of the latest rotation announcement
        if start_at_end and self.state.segment < 0:
            while self.read(10_000):
                self.commit()

    def segments(self) -> list[tuple[int, Path]]:
        """Segment files by base offset, oldest first."""
        found = []
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                match = _SEGMENT.match(path.name)
                if match:
                    found.append((int(match.group(1)), path))
        return sorted(found)

    def announce_rotation(self, user: str, at_micros: int) -> None:
        """Remember that ``acl apply`` announced a new credential for ``user``."""
        self.announced[user] = max(at_micros, self.announced.get(user, 0))

    def read(self, max_changes: int = 1000) -> list[dict[str, Any]]:
        """Events of the changes after the saved position (at most about ``max_changes``)."""
        state = WatchState(**json.loads(json.dumps(self.state.__dict__)))
        events: list[dict[str, Any]] = []
        segments = self.segments()
        if not segments:
            self._pending = state
            return events
        bases = [base for base, _path in segments]
        if state.segment not in bases:
            # first start, or the segment read last was deleted (after a snapshot): go on from the oldest
            # segment still there; offsets already seen are skipped, offsets never seen are a gap
            if bases[0] > state.next_offset:
                events.append(self._gap_event(state.next_offset, bases[0]))
            state.segment, state.byte = bases[0], 0
        index = bases.index(state.segment)
        while len(events) < max_changes:
            data = segments[index][1].read_bytes()
            progressed = False
            while len(events) < max_changes:
                try:
                    batch = read_batch(data, state.byte)
                except MetadataLogError as exc:
                    raise MetadataLogError(f"{segments[index][1]} at byte {state.byte}: {exc}") from None
                if batch is None:
                    break
                state.byte += batch.size
                progressed = True
                if batch.last_offset < state.next_offset:
                    continue
                for change in batch.changes:
                    if change.offset >= state.next_offset:
                        event = self._event(change, state)
                        if event is not None:
                            events.append(event)
                state.next_offset = batch.last_offset + 1
            if index + 1 >= len(segments) or (progressed and len(events) >= max_changes):
                break
            if read_batch(data, state.byte) is None and state.byte >= _used_length(data):
                index += 1
                state.segment, state.byte = segments[index][0], 0
            else:
                break
        self._pending = state
        return events

    def commit(self) -> None:
        """Save the position reached by the last :meth:`read` (after its events were delivered)."""
        if self._pending is not None:
            self.state = self._pending
            self.state.save(self.state_file)
            self._pending = None

    def _event(self, change: MetadataChange, state: WatchState) -> dict[str, Any] | None:
        f = change.fields
        attributes = {"metadata_offset": str(change.offset)}
        if change.kind == "scram":
            key = f"{f['user']}/{f['mechanism']}"
            digest = hashlib.sha256(bytes.fromhex(f["salt"])).hexdigest()[:16]
            previous = state.credentials.get(key)
            state.credentials[key] = digest
            announced = self.announced.get(f["user"])
            attributes.update(mechanism=f["mechanism"], iterations=str(f["iterations"]), salt_sha256=digest,
                              change="changed" if previous else "created",
                              rotation_announced="yes" if announced and announced <= change.timestamp_ms * 1000
                              else "no")
            return self._new(change, "user.credential_set", {"type": "kafka.user", "id": f["user"]}, attributes)
        if change.kind == "remove_scram":
            state.credentials.pop(f"{f['user']}/{f['mechanism']}", None)
            attributes["mechanism"] = f["mechanism"]
            return self._new(change, "user.credential_delete", {"type": "kafka.user", "id": f["user"]}, attributes)
        if change.kind == "acl":
            binding = {k: v for k, v in f.items() if k != "acl_id"}
            state.acls[f["acl_id"]] = binding
            return self._new(change, "acl.create", {"type": "kafka.acl", "id": describe_binding(binding)},
                             {**attributes, **binding})
        if change.kind == "remove_acl":
            binding = state.acls.pop(f["acl_id"], None)
            if binding is None:
                binding = {"unknown": f"ACL id {f['acl_id']} created before the watched part of the log"}
                resource_id = f"acl {f['acl_id']}"
            else:
                resource_id = describe_binding(binding)
            return self._new(change, "acl.delete", {"type": "kafka.acl", "id": resource_id}, {**attributes, **binding})
        if change.kind == "config":
            attributes["key"] = f["key"]
            if f["value"] is not None:
                attributes["value"] = "(secret, not copied)" if is_secret_config(f["key"]) else f["value"]
            resource = {"type": f"kafka.{f['resource_type']}", "id": f["resource"] or "(cluster default)"}
            return self._new(change, "config.set" if f["value"] is not None else "config.delete", resource, attributes)
        if change.kind == "topic":
            state.topics[f["topic_id"]] = f["name"]
            return self._new(change, "topic.create", {"type": "kafka.topic", "id": f["name"]},
                             {**attributes, "topic_id": f["topic_id"]})
        if change.kind == "remove_topic":
            name = state.topics.pop(f["topic_id"], f"topic id {f['topic_id']}")
            return self._new(change, "topic.delete", {"type": "kafka.topic", "id": name},
                             {**attributes, "topic_id": f["topic_id"]})
        return None

    def _new(self, change: MetadataChange, action: str, resource: dict[str, str],
             attributes: dict[str, str]) -> dict[str, Any]:
        return new_event(event_id=str(uuid.uuid5(EVENT_ID_NAMESPACE, f"metadata/{self.directory}/{change.offset}")),
                         occurred_at=change.timestamp_ms * 1000, actor=dict(CONTROLLER_ACTOR), action=action,
                         resource=resource, outcome={"status": "SUCCESS"}, source_service=METADATA_SERVICE,
                         attributes={k: str(v)[:1000] for k, v in attributes.items()})

    def _gap_event(self, expected: int, oldest: int) -> dict[str, Any]:
        return new_event(event_id=str(uuid.uuid5(EVENT_ID_NAMESPACE, f"metadata-gap/{self.directory}/{expected}")),
                         actor=dict(CONTROLLER_ACTOR), action="metadata_log.gap",
                         resource={"type": "file", "id": str(self.directory)},
                         outcome={"status": "FAILURE", "reason": f"metadata offsets {expected}..{oldest - 1} were "
                                                                   "deleted before they were read"},
                         source_service=METADATA_SERVICE)


def describe_binding(binding: dict[str, str]) -> str:
    """Human form of an ACL binding, e.g. ``ALLOW User:admin ALTER_CONFIGS on cluster kafka-cluster``."""
    pattern = " (prefixed)" if binding.get("pattern") == "prefixed" else ""
    return (f"{binding['permission'].upper()} {binding['principal']} {binding['operation'].upper()} on "
            f"{binding['resource_type']} {binding['resource']}{pattern}")


def _used_length(data: bytes) -> int:
    # segments are not preallocated on Linux, but stay safe: trailing zeros are not data
    return len(data.rstrip(b"\0"))


def rotation_user(event: dict[str, Any]) -> str | None:
    """The user a spooled ``credential.rotate`` announcement names, or None for any other event."""
    if event.get("action") == ROTATE_ACTION and event.get("resource", {}).get("type") == "kafka.user":
        return event["resource"]["id"]
    return None


