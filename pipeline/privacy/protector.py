"""Protect an event's personal fields before it is encoded, and reveal them again: the event-level logic.

:class:`Protector` is the hook a producer runs in its emit path (``AuditProducer(protector=...)``):
it returns the event as schema ``audit_event.v2`` carries it protected. For each personal value
(the fields the schema marks with ``"personal"``, :func:`personal_fields`, plus the attribute values
the service flags):

- the value is replaced, in place, by its keyed pseudonym (the actor id by the subject's pseudonym);
- ``protected_fields`` gets ``{field, subject, key_id, ciphertext}``: the value encrypted under the
  key of its data subject (the actor for the actor's fields; whoever the service names for a flagged
  attribute), so an event about several people uses one key each.

The actor's fields are protected unless the actor is a ``SERVICE`` or ``SYSTEM`` (a workload is not a
data subject). A service flags attributes with the event key ``personal_attributes``: ``{attribute key:
subject id}``; it never reaches the wire (and an unprotected producer refuses it as an unknown field, so
flagged values are never sent in plaintext).

Because AES-SIV is deterministic, the protected form of one actor (or one flagged value) is the same
every time: it is cached, bounded in size and time, so a key lookup and the cipher run once per actor
per ``cache_ttl``, and the cache is emptied when the key store reports an erasure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from pipeline.privacy.crypto import PseudonymKey
from pipeline.privacy.keystore import KeyStore
from pipeline.wire.catalog import AUDIT_EVENT, default_catalog
from pipeline.wire.validation import InvalidEventError

PERSONAL_ATTRIBUTES = "personal_attributes"
PROTECTED_FIELDS = "protected_fields"
ATTRIBUTE_PREFIX = "attributes."
_NOT_SUBJECTS = ("SERVICE", "SYSTEM")


@lru_cache(maxsize=1)
def personal_fields() -> tuple[str, ...]:
    """The dotted names of the fields the newest AuditEvent schema marks ``"personal"`` (``attributes`` for
    the flagged attribute values), read from the schema file: the schema is the declaration."""
    found: list[str] = []

    def walk(fields: list[Mapping[str, Any]], prefix: str) -> None:
        for field in fields:
            name = prefix + field["name"]
            if field.get("personal"):
                found.append(name)
            kind = field["type"]
            if isinstance(kind, dict) and kind.get("type") == "record":
                walk(kind["fields"], name + ".")

    walk(default_catalog().latest(AUDIT_EVENT).raw["fields"], "")
    return tuple(found)


def actor_fields() -> tuple[str, ...]:
    """The personal fields of the actor record, e.g. ``("id", "source_ip", "user_agent", "session_id")``."""
    return tuple(name.split(".", 1)[1] for name in personal_fields() if name.startswith("actor."))


class _ExpiringTable:
    """A dict whose entries expire ``ttl`` seconds after they were stored and which is emptied whenever it
    reaches ``size`` entries: bounded in size and time like ``cachetools.TTLCache``, at the cost of one dict
    lookup per hit (``TTLCache.get`` costs more than all the rest of :meth:`Protector.protect`)."""

    __slots__ = ("_items", "_size", "_ttl")

    def __init__(self, size: int, ttl: float) -> None:
        self._items: dict[Any, tuple[Any, float]] = {}
        self._size, self._ttl = size, ttl

    def get(self, key: Any) -> Any:
        """The value stored under ``key`` if it has not expired, else None (TypeError if unhashable)."""
        item = self._items.get(key)
        if item is None or item[1] < time.monotonic():
            return None
        return item[0]

    def put(self, key: Any, value: Any) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""
        if len(self._items) >= self._size:
            self._items.clear()
        self._items[key] = (value, time.monotonic() + self._ttl)

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()


_NOT_PERSONAL = object()  # cached for actors that are workloads, not data subjects


class Protector:
    """Turns events into their protected form with keys from ``store`` (see the module doc).

    The protected actor and its ``protected_fields`` entries are cached and shared between the events
    returned: encode them, do not change them.
    """

    def __init__(self, store: KeyStore, *, cache_size: int = 100_000, cache_ttl: float = 600.0) -> None:
        """Reads the pseudonym key from ``store`` (which must be open)."""
        self.store = store
        self.pseudonym_key: PseudonymKey = store.pseudonym_key()
        self._actor_fields = actor_fields()
        self._actors = _ExpiringTable(cache_size, cache_ttl)
        self._values = _ExpiringTable(cache_size, cache_ttl)
        self._cache_size, self._cache_ttl = cache_size, cache_ttl
        self._encoders: dict[Any, Any] = {}  # the codec's NativeEncoder -> its ProtectedEncoder
        self._generation = 0  # counts erasures, so an encoder never learns parts protected before one
        store.on_erasure(self._forget_all)

    def _forget_all(self, pseudonym: str) -> None:
        # erasures are rare: dropping everything is simpler than an index from subjects to entries
        self._generation += 1
        self._actors.clear()
        self._values.clear()
        for encoder in list(self._encoders.values()):
            encoder.clear()

    def subject_pseudonym(self, subject_id: str) -> str:
        """The pseudonym of a data subject, as ``actor.id`` and ``protected_fields[].subject`` hold it."""
        return self.pseudonym_key.subject_pseudonym(subject_id)

    def protect(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """The protected form of ``event`` (a new dict; ``event`` is left as it is).

        Raises InvalidEventError for a malformed ``personal_attributes``, and the key store's errors
        (KeyStoreUnavailableError, WrongKekError): then the event must not be sent.
        """
        flagged = event.get(PERSONAL_ATTRIBUTES)
        actor = event.get("actor")
        try:
            # the whole actor, extra (invalid) keys included: the validator must see what was given
            cache_key: Any = tuple(actor.items())  # type: ignore[union-attr]
            hit = self._actors.get(cache_key)
        except (AttributeError, TypeError):  # not a mapping, or an unhashable value: the validator names it
            cache_key = hit = None
        if hit is None:
            protect_actor = isinstance(actor, Mapping) and actor.get("type") not in _NOT_SUBJECTS \
                and isinstance(actor.get("id"), str)
            hit = self._actor(actor) if protect_actor else _NOT_PERSONAL
            if cache_key is not None:
                self._actors.put(cache_key, hit)
        if hit is _NOT_PERSONAL and flagged is None:
            return event
        out = dict(event)
        if hit is not _NOT_PERSONAL:
            out["actor"] = hit[0]
            out[PROTECTED_FIELDS] = hit[1]
        if flagged is not None:
            del out[PERSONAL_ATTRIBUTES]
            out["attributes"], fields = self._attributes(event.get("attributes"), flagged)
            out[PROTECTED_FIELDS] = [*out.get(PROTECTED_FIELDS, ()), *fields]
        return out

    def _actor(self, actor: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
        subject = self.pseudonym_key.subject_pseudonym(actor["id"])
        cipher = self.store.cipher_for(subject)
        new_actor = dict(actor)
        fields = []
        for name in self._actor_fields:
            value = actor.get(name)
            if not isinstance(value, str):
                continue  # null (absent) fields carry nothing; a wrong type is the validator's to report
            dotted = "actor." + name
            new_actor[name] = subject if name == "id" else self.pseudonym_key.pseudonym(dotted, value)
            fields.append({"field": dotted, "subject": subject, "key_id": cipher.key_id,
                           "ciphertext": cipher.encrypt(dotted, value)})
        return new_actor, fields

    def _attributes(self, attributes: Any, flagged: Any) -> tuple[dict[str, str], list[dict[str, str]]]:
        if not isinstance(flagged, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                       for k, v in flagged.items()):
            raise InvalidEventError(PERSONAL_ATTRIBUTES, "must map attribute keys to the id of the data subject "
                                    "each value is about, e.g. {\"email\": \"user-17\"}")
        attributes = dict(attributes or {})
        fields = []
        for key, subject_id in sorted(flagged.items()):
            if key not in attributes or not isinstance(attributes[key], str):
                raise InvalidEventError(PERSONAL_ATTRIBUTES, f"flags attribute {key!r}, which the event does not "
                                        "have as a string")
            dotted = ATTRIBUTE_PREFIX + key
            cache_key = (dotted, subject_id, attributes[key])
            hit = self._values.get(cache_key)
            if hit is None:
                subject = self.pseudonym_key.subject_pseudonym(subject_id)
                cipher = self.store.cipher_for(subject)
                hit = (self.pseudonym_key.pseudonym(dotted, attributes[key]),
                       {"field": dotted, "subject": subject, "key_id": cipher.key_id,
                        "ciphertext": cipher.encrypt(dotted, attributes[key])})
                self._values.put(cache_key, hit)
            attributes[key] = hit[0]
            fields.append(hit[1])
        return attributes, fields

    def encoder(self, encode):
        """``encode`` (an event -> bytes function) with protection in front: what the producer calls per event.

        With the codec's compiled encoder (``EventCodec.encode``), the usual event, whose only personal
        data is an actor seen within ``cache_ttl``, takes the compiled path of
        :class:`pipeline.native.protector_core.ProtectedEncoder`: the encoded protected actor and its
        encoded ``protected_fields`` are written in place (``NativeEncoder.encode_replacing``), so the
        per-event cost is about the plain event's. They are learnt from the reference path below
        (``encode(protect(event))``) and only once they give its exact bytes; the unit tests hold every
        event to it. Any other ``encode`` gets the reference path alone.
        """
        from pipeline.native.avro_writer import NativeEncoder
        from pipeline.native.protector_core import ProtectedEncoder

        native = getattr(encode, "__self__", None)
        protect = self.protect
        if not isinstance(native, NativeEncoder):
            return lambda event: encode(protect(event))
        if native in self._encoders:  # one table per encoder: a new producer finds the actors already learnt
            return self._encoders[native]
        names = native.field_names()
        actor_index, fields_index = names.index("actor"), names.index(PROTECTED_FIELDS)

        def reference(event: Mapping[str, Any]) -> bytes:
            generation = self._generation
            protected = protect(event)
            data = encode(protected)
            if type(event) is not dict or PERSONAL_ATTRIBUTES in event or PROTECTED_FIELDS in event \
                    or type(event.get("actor")) is not dict:
                return data
            if protected is event:  # a workload: nothing personal, encoded as it is
                replaced = None
            else:
                parts = [None] * len(names)
                parts[actor_index] = native.encode_field("actor", protected["actor"])
                parts[fields_index] = native.encode_field(PROTECTED_FIELDS, protected[PROTECTED_FIELDS])
                replaced = tuple(parts)
                if parts[actor_index] is None or parts[fields_index] is None \
                        or native.encode_replacing(event, replaced) != data:
                    return data
            if generation == self._generation:  # no erasure meanwhile: the parts are not of a destroyed key
                compiled.learn(event["actor"], replaced)
            return data

        compiled = self._encoders[native] = ProtectedEncoder(native, reference, size=self._cache_size,
                                                             ttl=self._cache_ttl)
        return compiled


def reveal(event: Mapping[str, Any], store: KeyStore) -> dict[str, dict[str, str]]:
    """The plaintext of each protected field of a (decoded) event, by field name:
    ``{"value": ...}``, or ``{"erased": message}`` / ``{"error": message}`` when it cannot be read."""
    from pipeline.privacy.crypto import PrivacyError
    from pipeline.privacy.keystore import SubjectErasedError

    revealed: dict[str, dict[str, str]] = {}
    for item in event.get(PROTECTED_FIELDS) or ():
        try:
            cipher = store.cipher(item["subject"], item["key_id"])
            revealed[item["field"]] = {"value": cipher.decrypt(item["field"], item["ciphertext"]),
                                       "subject": item["subject"]}
        except SubjectErasedError as exc:
            revealed[item["field"]] = {"erased": str(exc), "subject": item["subject"]}
        except PrivacyError as exc:
            revealed[item["field"]] = {"error": str(exc), "subject": item["subject"]}
    return revealed
