"""What a timeline asks for: the filters of ``auditseal timeline``, as one pure predicate.

Every filter is optional and they combine with AND: ``actor`` (``actor.id``; with protected personal
data the archive holds the subject's pseudonym, so the query carries the pseudonym too, see
:func:`with_pseudonym`), ``resource`` (``ID`` or ``TYPE:ID``), ``action``, ``outcome``, and the period
``[since, until)`` of ``occurred_at`` (the time the producer says the action happened).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from pipeline.archive.query_index import QueryIndex
from pipeline.errors import ConfigError
from pipeline.wire.event_head import OUTCOME_STATUSES, EventHead


@dataclass(frozen=True)
class TimelineQuery:
    """The filters of one timeline (module docstring); None means "any"."""

    actor: str | None = None
    actor_pseudonym: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    since_micros: int | None = None
    until_micros: int | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOME_STATUSES:
            raise ConfigError(f"--outcome {self.outcome!r}: expected one of {', '.join(OUTCOME_STATUSES)}")
        if self.since_micros is not None and self.until_micros is not None and self.until_micros <= self.since_micros:
            raise ConfigError("--until must be after --since")

    @classmethod
    def of(cls, *, actor: str | None = None, resource: str | None = None, action: str | None = None,
           outcome: str | None = None, since_micros: int | None = None,
           until_micros: int | None = None) -> TimelineQuery:
        """A query from the command's options (``resource`` is ``ID`` or ``TYPE:ID``)."""
        resource_type, resource_id = None, resource
        if resource is not None and ":" in resource:
            resource_type, resource_id = resource.split(":", 1)
            if not resource_type or not resource_id:
                raise ConfigError(f"--resource {resource!r}: expected ID or TYPE:ID")
        return cls(actor=actor, resource_type=resource_type, resource_id=resource_id, action=action,
                   outcome=outcome.upper() if outcome else None, since_micros=since_micros, until_micros=until_micros)

    def with_pseudonym(self, pseudonym: str) -> TimelineQuery:
        """The same query also matching the actor's pseudonym (what ``actor.id`` holds for a protected actor)."""
        return replace(self, actor_pseudonym=pseudonym)

    @property
    def actor_ids(self) -> tuple[str, ...]:
        """The ``actor.id`` values that match: the actor as given, and its pseudonym if known."""
        return tuple(value for value in (self.actor, self.actor_pseudonym) if value is not None)

    def matches(self, head: EventHead) -> bool:
        """Whether one event is in the answer."""
        if self.since_micros is not None and head.occurred_at_micros < self.since_micros:
            return False
        if self.until_micros is not None and head.occurred_at_micros >= self.until_micros:
            return False
        if self.actor is not None and head.actor_id not in self.actor_ids:
            return False
        if self.resource_id is not None and head.resource_id != self.resource_id:
            return False
        if self.resource_type is not None and head.resource_type != self.resource_type:
            return False
        if self.action is not None and head.action != self.action:
            return False
        return self.outcome is None or head.outcome == self.outcome

    def may_match(self, index: QueryIndex) -> bool:
        """False only if no event of an object with this query index can match."""
        return index.may_match(since_micros=self.since_micros, until_micros=self.until_micros,
                               actor_ids=self.actor_ids, resource_id=self.resource_id)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (what an evidence bundle records it answered)."""
        return {"actor": self.actor, "actor_pseudonym": self.actor_pseudonym, "resource_type": self.resource_type,
                "resource_id": self.resource_id, "action": self.action, "outcome": self.outcome,
                "since_micros": self.since_micros, "until_micros": self.until_micros}

    @classmethod
    def from_dict(cls, raw: Any) -> TimelineQuery:
        """The query an evidence bundle records; ValueError if it is not of this form."""
        if not isinstance(raw, dict):
            raise ValueError("query must be a JSON object")
        strings = ("actor", "actor_pseudonym", "resource_type", "resource_id", "action", "outcome")
        values: dict[str, Any] = {}
        for name in strings:
            value = raw.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"query.{name} must be a string or null")
            values[name] = value
        for name in ("since_micros", "until_micros"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"query.{name} must be an integer or null")
            values[name] = value
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
