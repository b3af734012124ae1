"""The per-object query index of a manifest: which events an archive object can hold (pure, no I/O).

A timeline query (``auditseal timeline``) over years of archive must not read every object. Each
manifest the sink writes carries a small index of its object's events, and a query reads only the
objects whose index says they *may* hold a match::

    "index": {"version": 1,
              "events": 19991,                 event records in the object
              "undecoded": 0,                  of those, events whose AuditEvent could not be read
              "occurred_min_micros": ..., "occurred_max_micros": ...,   range of AuditEvent.occurred_at
              "actors":    {"bits": m, "hashes": k, "filter": base64},  Bloom filter over actor.id
              "resources": {"bits": m, "hashes": k, "filter": base64}}  Bloom filter over resource.id

The index holds what the events hold: where personal data is protected (``pipeline.privacy``),
``actor.id`` is the subject's pseudonym, so the filter is over pseudonyms and a query for a person
asks for the pseudonym. A Bloom filter (Bloom 1970) answers "maybe" or "certainly not": a false
"maybe" (about 1% at the sizes below) only costs reading one object more; it never hides a match.
An object with an undecoded event, or without an index (every manifest written before the index
existed), is always read. The index is a hint for speed, not evidence: what a timeline reports is
checked from the object itself (its events against their checkpoints), and an object the timeline
reads whose events contradict its index is reported.

Filter bit positions: SHA-256 of ``"auditseal/query-index/v1\\0" || field || "\\0" || value`` (UTF-8),
read as eight big-endian 32-bit words; the first ``hashes`` words modulo ``bits`` are the positions;
bit ``p`` is bit ``p % 8`` (least significant first) of byte ``p // 8``. Sizing: 10 bits per distinct
value, at least 64, rounded up to whole bytes, with 7 positions per value (false positives ~0.8%).
Written out here rather than taken from a library so that the bytes stay specified for as long as
the archive is locked (``schemas/FORMAT.md`` section 10).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import AuditSealError

INDEX_VERSION = 1
BITS_PER_VALUE = 10
HASHES = 7
MIN_BITS = 64
MAX_HASHES = 8  # one SHA-256 gives eight 32-bit words
_DOMAIN = b"auditseal/query-index/v1\x00"
ACTOR_FIELD, RESOURCE_FIELD = "actor.id", "resource.id"


class QueryIndexError(AuditSealError):
    """A manifest's index that is not of this format, naming the field and the problem."""


_WORDS = struct.Struct(">8I")


def filter_prefix(field_name: str) -> bytes:
    """The bytes hashed before each value of ``field_name`` (module docstring)."""
    return _DOMAIN + field_name.encode() + b"\x00"


def filter_bits(distinct: int) -> int:
    """The size in bits of the filter of ``distinct`` values (module docstring)."""
    return max(MIN_BITS, -(-distinct * BITS_PER_VALUE // 8) * 8)


def _positions(field_name: str, value: str, bits: int, hashes: int) -> list[int]:
    digest = hashlib.sha256(filter_prefix(field_name) + value.encode("utf-8")).digest()
    return [word % bits for word in _WORDS.unpack(digest)[:hashes]]


@dataclass(frozen=True)
class BloomFilter:
    """A Bloom filter over the values of one event field (module docstring for the bit layout)."""

    field_name: str
    bits: int
    hashes: int
    data: bytes

    @classmethod
    def of(cls, field_name: str, values: Iterable[str]) -> BloomFilter:
        """The filter of a set of values, sized for it."""
        distinct = set(values)
        bits = filter_bits(len(distinct))
        table = bytearray(bits // 8)
        prefix, sha256, unpack = filter_prefix(field_name), hashlib.sha256, _WORDS.unpack
        for value in distinct:  # _positions, inlined: the sink builds one filter per object, over every value
            for word in unpack(sha256(prefix + value.encode("utf-8")).digest())[:HASHES]:
                position = word % bits
                table[position >> 3] |= 1 << (position & 7)
        return cls(field_name, bits, HASHES, bytes(table))

    def may_contain(self, value: str) -> bool:
        """False only if ``value`` is certainly not in the set."""
        return all(self.data[p >> 3] & (1 << (p & 7)) for p in _positions(self.field_name, value, self.bits,
                                                                              self.hashes))

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the table base64)."""
        return {"bits": self.bits, "filter": base64.b64encode(self.data).decode("ascii"), "hashes": self.hashes}

    @classmethod
    def from_dict(cls, field_name: str, raw: object, where: str) -> BloomFilter:
        """Parse and check the JSON form; QueryIndexError naming ``where``."""
        if not isinstance(raw, dict):
            raise QueryIndexError(f"{where}: expected a JSON object")
        bits, hashes, text = raw.get("bits"), raw.get("hashes"), raw.get("filter")
        if not isinstance(bits, int) or isinstance(bits, bool) or bits < 8 or bits % 8:
            raise QueryIndexError(f"{where}: bits must be a positive multiple of 8, found {bits!r}")
        if not isinstance(hashes, int) or isinstance(hashes, bool) or not 1 <= hashes <= MAX_HASHES:
            raise QueryIndexError(f"{where}: hashes must be 1..{MAX_HASHES}, found {hashes!r}")
        if not isinstance(text, str):
            raise QueryIndexError(f"{where}: filter must be a base64 string")
        try:
            data = base64.b64decode(text, validate=True)
        except binascii.Error:
            raise QueryIndexError(f"{where}: filter is not base64") from None
        if len(data) * 8 != bits:
            raise QueryIndexError(f"{where}: filter holds {len(data) * 8} bits, bits says {bits}")
        return cls(field_name, bits, hashes, data)


@dataclass(frozen=True)
class QueryIndex:
    """What one object's events can match (module docstring)."""

    events: int
    undecoded: int
    occurred_min_micros: int | None
    occurred_max_micros: int | None
    actors: BloomFilter
    resources: BloomFilter
    version: int = INDEX_VERSION

    def may_match(self, *, since_micros: int | None = None, until_micros: int | None = None,
                  actor_ids: Iterable[str] = (), resource_id: str | None = None) -> bool:
        """False only if no event of the object can match: occurred_at in ``[since, until)``, actor.id one of
        ``actor_ids`` (any, if empty) and resource.id ``resource_id`` (any, if None)."""
        if self.undecoded:
            return True  # an event the index could not read may be anything
        if self.events == 0 or self.occurred_min_micros is None or self.occurred_max_micros is None:
            return False
        if since_micros is not None and self.occurred_max_micros < since_micros:
            return False
        if until_micros is not None and self.occurred_min_micros >= until_micros:
            return False
        actors = list(actor_ids)
        if actors and not any(self.actors.may_contain(actor) for actor in actors):
            return False
        return resource_id is None or self.resources.may_contain(resource_id)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the manifest sorts its keys)."""
        return {"actors": self.actors.as_dict(), "events": self.events,
                "occurred_max_micros": self.occurred_max_micros, "occurred_min_micros": self.occurred_min_micros,
                "resources": self.resources.as_dict(), "undecoded": self.undecoded, "version": self.version}

    @classmethod
    def from_dict(cls, raw: object, where: str) -> QueryIndex:
        """Parse and check the JSON form; QueryIndexError naming ``where``, the field and the problem."""
        if not isinstance(raw, Mapping):
            raise QueryIndexError(f"{where}: expected a JSON object")
        if raw.get("version") != INDEX_VERSION:
            raise QueryIndexError(f"{where}: version {raw.get('version')!r}, this reader knows {INDEX_VERSION}")
        counts = {}
        for name in ("events", "undecoded"):
            value = raw.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise QueryIndexError(f"{where}: {name} must be a non-negative integer, found {value!r}")
            counts[name] = value
        times = {}
        for name in ("occurred_min_micros", "occurred_max_micros"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise QueryIndexError(f"{where}: {name} must be an integer or null, found {value!r}")
            times[name] = value
        if (times["occurred_min_micros"] is None) != (times["occurred_max_micros"] is None):
            raise QueryIndexError(f"{where}: occurred_min_micros and occurred_max_micros must both be set or null")
        low, high = times["occurred_min_micros"], times["occurred_max_micros"]
        if low is not None and high is not None and low > high:
            raise QueryIndexError(f"{where}: occurred_min_micros {low} is after occurred_max_micros {high}")
        return cls(counts["events"], counts["undecoded"], low, high,
                   BloomFilter.from_dict(ACTOR_FIELD, raw.get("actors"), f"{where}.actors"),
                   BloomFilter.from_dict(RESOURCE_FIELD, raw.get("resources"), f"{where}.resources"))


@dataclass
class IndexBuilder:
    """Collects an object's events, then :meth:`index` builds its QueryIndex."""

    events: int = 0
    undecoded: int = 0
    occurred_min_micros: int | None = None
    occurred_max_micros: int | None = None

    def __post_init__(self) -> None:
        self._actors: set[str] = set()
        self._resources: set[str] = set()

    def add(self, occurred_at_micros: int, actor_id: str, resource_id: str) -> None:
        """One event that was read."""
        self.events += 1
        if self.occurred_min_micros is None or occurred_at_micros < self.occurred_min_micros:
            self.occurred_min_micros = occurred_at_micros
        if self.occurred_max_micros is None or occurred_at_micros > self.occurred_max_micros:
            self.occurred_max_micros = occurred_at_micros
        self._actors.add(actor_id)
        self._resources.add(resource_id)

    def add_undecoded(self) -> None:
        """One event record whose AuditEvent could not be read: the object must always be read."""
        self.events += 1
        self.undecoded += 1

    def index(self) -> QueryIndex:
        """The index of everything added."""
        return QueryIndex(self.events, self.undecoded, self.occurred_min_micros, self.occurred_max_micros,
                          BloomFilter.of(ACTOR_FIELD, self._actors), BloomFilter.of(RESOURCE_FIELD, self._resources))
