"""The records of the key store topic (``audit.keys``): their Kafka keys and JSON values, no I/O.

The topic is compacted: the newest record of each Kafka key is what survives, and a record with a
null value (a tombstone) removes its key altogether once the cleaner has run. So each key names one
thing that is never rewritten with another content:

=================================  ==========================================================
Kafka key                          value (UTF-8 JSON, sorted keys)
=================================  ==========================================================
``subject/<pseudonym>/<key id>``   one key of a data subject, wrapped: ``{v, kek_id, wrapped,
                                   created_at}``; a tombstone once the subject is erased
``pseudonym-key/<version>``        one version of the pseudonym key, wrapped the same way
``erased/<pseudonym>``             the erasure of a subject: ``{v, erased_at, erased_by,
                                   key_ids, erasure_event_id}`` (no key material, no reason text)
``roll``                           the time of the last erasure's segment roll (see ``erase``)
=================================  ==========================================================

A subject may hold several keys (two producers meeting a new subject at once each create one; both
stay valid because their Kafka keys differ, where one compacted key would silently drop the other).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from pipeline.privacy.crypto import PrivacyError

SUBJECT_PREFIX = "subject/"
PSEUDONYM_KEY_PREFIX = "pseudonym-key/"
ERASED_PREFIX = "erased/"
ROLL_KEY = "roll"
RECORD_VERSION = 1


class KeyStoreRecordError(PrivacyError):
    """A record of the key store topic is not in the format of this module."""


@dataclass(frozen=True)
class WrappedKey:
    """A key as stored: wrapped with the KEK named by ``kek_id``."""

    kek_id: str
    wrapped: bytes
    created_at: str

    def to_value(self) -> bytes:
        """The record value (JSON)."""
        return _dumps({"v": RECORD_VERSION, "kek_id": self.kek_id,
                       "wrapped": base64.b64encode(self.wrapped).decode(), "created_at": self.created_at})

    @classmethod
    def from_value(cls, value: bytes, where: str) -> WrappedKey:
        """Parse a record value; KeyStoreRecordError naming ``where`` otherwise."""
        body = _loads(value, where)
        try:
            return cls(str(body["kek_id"]), base64.b64decode(body["wrapped"], validate=True), str(body["created_at"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeyStoreRecordError(f"{where}: not a wrapped key record ({exc})") from None


@dataclass(frozen=True)
class Erasure:
    """That a subject was erased: when, by whom, which keys, and the event that sealed it."""

    pseudonym: str
    erased_at: str
    erased_by: str
    key_ids: tuple[str, ...]
    erasure_event_id: str

    def to_value(self) -> bytes:
        """The record value (JSON)."""
        return _dumps({"v": RECORD_VERSION, "erased_at": self.erased_at, "erased_by": self.erased_by,
                       "key_ids": list(self.key_ids), "erasure_event_id": self.erasure_event_id})

    @classmethod
    def from_value(cls, pseudonym: str, value: bytes, where: str) -> Erasure:
        """Parse a record value; KeyStoreRecordError naming ``where`` otherwise."""
        body = _loads(value, where)
        try:
            return cls(pseudonym, str(body["erased_at"]), str(body["erased_by"]),
                       tuple(str(k) for k in body["key_ids"]), str(body["erasure_event_id"]))
        except (KeyError, TypeError) as exc:
            raise KeyStoreRecordError(f"{where}: not an erasure record ({exc})") from None


def subject_key_name(pseudonym: str, key_id: str) -> str:
    """The Kafka key of one subject key."""
    return f"{SUBJECT_PREFIX}{pseudonym}/{key_id}"


def pseudonym_key_name(version: int) -> str:
    """The Kafka key of one pseudonym key version."""
    return f"{PSEUDONYM_KEY_PREFIX}{version}"


def erased_name(pseudonym: str) -> str:
    """The Kafka key of a subject's erasure record."""
    return f"{ERASED_PREFIX}{pseudonym}"


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _loads(value: bytes, where: str) -> dict[str, Any]:
    try:
        body = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyStoreRecordError(f"{where}: not JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("v") != RECORD_VERSION:
        raise KeyStoreRecordError(f"{where}: expected a version {RECORD_VERSION} record, found {str(body)[:80]}")
    return body
