"""Protect an event's personal fields before it is encoded, and reveal them again: the event-level logic.

:class:`Protector` is the hook a producer runs in its emit path (``AuditProducer(protector=...)``):
it returns the event as schema ``audit_event.v2`` carries it protected. For each personal value
(the fields the schema marks with ``"personal"``, :func:`personal_fields`, plus the attribute values
the service flags):

- the value is replaced, in place, by its keyed pseudonym (the actor id by the subject's pseudonym);
- ``protected_subjects`` gets, per data subject (the actor for the actor's fields; whoever the service
  names for a flagged attribute), ``{subject, key_id, fields, ciphertext}``: that subject's values
  encrypted together under its key (:meth:`~pipeline.privacy.crypto.FieldCipher.seal_group`), so an
  event about several people uses one key each, and erasing one leaves the others readable.

Events written before ``audit_event.v3`` carry the per-value encoding in ``protected_fields``
(``{field, subject, key_id, ciphertext}`` each); :func:`reveal` reads both.

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
PROTECTED_FIELDS = "protected_fields"  # the per-value encoding of audit_event.v2: read, no longer written
PROTECTED_SUBJECTS = "protected_subjects"
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

    The protected actor and its ``protected_subjects`` entry are cached and shared between the events
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
        """The pseudonym of a data subject, as ``actor.id`` and ``protected_subjects[].subject`` hold it."""
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
            out[PROTECTED_SUBJECTS] = hit[1]
        if flagged is not None:
            del out[PERSONAL_ATTRIBUTES]
            out["attributes"], groups = self._attributes(event.get("attributes"), flagged)
            out[PROTECTED_SUBJECTS] = [*out.get(PROTECTED_SUBJECTS, ()), *groups]
        return out

    def _group(self, subject: str, names: tuple[str, ...], values: tuple[str, ...]) -> dict[str, Any]:
        # one subject's values of one event, sealed together under its key
        cipher = self.store.cipher_for(subject)
        return {"subject": subject, "key_id": cipher.key_id, "fields": list(names),
                "ciphertext": cipher.seal_group(names, values)}

    def _actor(self, actor: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        subject = self.pseudonym_key.subject_pseudonym(actor["id"])
        new_actor = dict(actor)
        names, values = [], []
        for name in self._actor_fields:
            value = actor.get(name)
            if not isinstance(value, str):
                continue  # null (absent) fields carry nothing; a wrong type is the validator's to report
            dotted = "actor." + name
            new_actor[name] = subject if name == "id" else self.pseudonym_key.pseudonym(dotted, value)
            names.append(dotted)
            values.append(value)
        return new_actor, [self._group(subject, tuple(names), tuple(values))]

    def _attributes(self, attributes: Any, flagged: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
        if not isinstance(flagged, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and v
                                                       for k, v in flagged.items()):
            raise InvalidEventError(PERSONAL_ATTRIBUTES, "must map attribute keys to the id of the data subject "
                                    "each value is about, e.g. {\"email\": \"user-17\"}")
        attributes = dict(attributes or {})
        by_subject: dict[str, list[tuple[str, str]]] = {}
        for key, subject_id in sorted(flagged.items()):
            if key not in attributes or not isinstance(attributes[key], str):
                raise InvalidEventError(PERSONAL_ATTRIBUTES, f"flags attribute {key!r}, which the event does not "
                                        "have as a string")
            by_subject.setdefault(subject_id, []).append((ATTRIBUTE_PREFIX + key, attributes[key]))
        groups = []
        for subject_id, items in by_subject.items():  # one group per subject, in the order of the first key
            cache_key = (subject_id, tuple(items))
            hit = self._values.get(cache_key)
            if hit is None:
                subject = self.pseudonym_key.subject_pseudonym(subject_id)
                names, values = tuple(n for n, _ in items), tuple(v for _, v in items)
                hit = ([self.pseudonym_key.pseudonym(n, v) for n, v in items], self._group(subject, names, values))
                self._values.put(cache_key, hit)
            for (dotted, _), pseudonym in zip(items, hit[0], strict=True):
                attributes[dotted[len(ATTRIBUTE_PREFIX):]] = pseudonym
            groups.append(hit[1])
        return attributes, groups

    def encoder(self, encode):
        """``encode`` (an event -> bytes function) with protection in front: what the producer calls per event.

        With the codec's compiled encoder (``EventCodec.encode``), the usual event, whose only personal
        data is an actor seen within ``cache_ttl``, takes the compiled path of
        :class:`pipeline.native.protector_core.ProtectedEncoder`: the encoded protected actor and its
        encoded ``protected_subjects`` are written in place (``NativeEncoder.encode_replacing``), so the
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
        actor_index, fields_index = names.index("actor"), names.index(PROTECTED_SUBJECTS)

        def reference(event: Mapping[str, Any]) -> bytes:
            generation = self._generation
            protected = protect(event)
            data = encode(protected)
            if type(event) is not dict or PERSONAL_ATTRIBUTES in event or PROTECTED_FIELDS in event \
                    or PROTECTED_SUBJECTS in event \
                    or type(event.get("actor")) is not dict:
                return data
            if protected is event:  # a workload: nothing personal, encoded as it is
                replaced = None
            else:
                parts = [None] * len(names)
                parts[actor_index] = native.encode_field("actor", protected["actor"])
                parts[fields_index] = native.encode_field(PROTECTED_SUBJECTS, protected[PROTECTED_SUBJECTS])
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
    ``{"value": ...}``, or ``{"erased": message}`` / ``{"error": message}`` when it cannot be read.

    Reads both encodings: ``protected_subjects`` (one ciphertext per subject, since ``audit_event.v3``)
    and ``protected_fields`` (one per value, the events written before)."""
    from pipeline.privacy.crypto import PrivacyError
    from pipeline.privacy.keystore import SubjectErasedError

    revealed: dict[str, dict[str, str]] = {}
    for group in event.get(PROTECTED_SUBJECTS) or ():
        names = list(group["fields"])
        try:
            values = store.cipher(group["subject"], group["key_id"]).open_group(names, group["ciphertext"])
            outcomes = [{"value": value} for value in values]
        except SubjectErasedError as exc:
            outcomes = [{"erased": str(exc)}] * len(names)
        except PrivacyError as exc:
            outcomes = [{"error": str(exc)}] * len(names)
        for name, outcome in zip(names, outcomes, strict=True):
            revealed[name] = {**outcome, "subject": group["subject"]}
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
