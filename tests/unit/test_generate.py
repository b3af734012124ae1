"""Synthetic events are valid, varied, realistic in their outcome mix, and reproducible by seed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.producer.event import now_micros
from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.validation import validate_event

N = 20_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(synthetic_events(N, seed=11))


def test_same_seed_same_events() -> None:
    assert list(synthetic_events(500, seed=3)) == list(synthetic_events(500, seed=3))


def test_different_seeds_differ() -> None:
    assert list(synthetic_events(50, seed=3)) != list(synthetic_events(50, seed=4))


def test_count_is_exact() -> None:
    assert sum(1 for _ in synthetic_events(1234, seed=1)) == 1234
    assert list(synthetic_events(0, seed=1)) == []


def test_every_event_is_valid(events: list[dict]) -> None:
    for event in events:
        validate_event(event)


def test_event_ids_are_unique(events: list[dict]) -> None:
    assert len({event["event_id"] for event in events}) == N


def test_timestamps_advance_from_the_start(events: list[dict]) -> None:
    times = [event["occurred_at"] for event in events]
    assert times == sorted(times)
    first = EPOCH + timedelta(microseconds=times[0])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert start <= first < start + timedelta(seconds=1)


def test_explicit_start() -> None:
    start = datetime(2026, 3, 1, 12, tzinfo=UTC)
    (event,) = synthetic_events(1, seed=1, start=start)
    assert start <= EPOCH + timedelta(microseconds=event["occurred_at"]) < start + timedelta(seconds=1)


def test_unseeded_events_happen_now() -> None:
    (event,) = synthetic_events(1)
    assert abs(event["occurred_at"] - now_micros()) < 60_000_000


def test_outcome_mix(events: list[dict]) -> None:
    statuses = Counter(event["outcome"]["status"] for event in events)
    assert 0.04 <= statuses["FAILURE"] / N <= 0.06
    assert 0.02 <= statuses["DENIED"] / N <= 0.04
    assert statuses["SUCCESS"] + statuses["FAILURE"] + statuses["DENIED"] == N


def test_reasons_exactly_when_not_successful(events: list[dict]) -> None:
    for event in events:
        outcome = event["outcome"]
        assert (outcome["reason"] is None) == (outcome["status"] == "SUCCESS"), event


def test_several_services_and_actions(events: list[dict]) -> None:
    services = Counter(event["source_service"] for event in events)
    assert {"billing", "auth", "storage", "admin-console"} <= set(services)
    assert len({event["action"] for event in events}) >= 15
    assert all(count > N / 20 for count in services.values())


def test_actors_look_like_their_kind(events: list[dict]) -> None:
    kinds = Counter(event["actor"]["type"] for event in events)
    assert {"USER", "SERVICE", "SYSTEM"} <= set(kinds)
    for event in events:
        actor = event["actor"]
        if actor["type"] == "USER":
            assert actor["source_ip"] and actor["user_agent"] and actor["session_id"], actor
            assert actor["id"].startswith("usr_")
        elif actor["type"] == "SERVICE":
            assert actor["source_ip"].startswith("10.") and actor["session_id"] is None, actor
        else:
            assert actor["source_ip"] is None and actor["id"].startswith("system:"), actor
    users = {event["actor"]["id"] for event in events if event["actor"]["type"] == "USER"}
    assert 50 <= len(users) <= 200  # a population that recurs, as in a real tenant


def test_actions_name_their_resource(events: list[dict]) -> None:
    for event in events:
        assert "." in event["action"]
        assert event["resource"]["id"].startswith(event["resource"]["type"] + "-")
