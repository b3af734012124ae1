"""Synthetic but realistic audit events, for demos, benchmarks and tests.

Several services (billing, auth, storage, admin-console, reporting) with their own actions and
resources; human users with IP addresses, browsers and sessions, service accounts calling from
the internal network, and system jobs; about 5% FAILURE and 3% DENIED outcomes with reasons.
IP addresses come from the documentation ranges (RFC 5737, RFC 3849) so generated data can never
be mistaken for a real client's. The same seed always yields the same events.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.producer.event import now_micros

FAILURE_RATE = 0.05
DENIED_RATE = 0.03
SEEDED_START = datetime(2025, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MEAN_GAP_MICROS = 2_000

_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "curl/8.8.0",
    "aws-cli/2.17.0 Python/3.11.8 Linux/6.8",
)
_GENERIC_FAILURES = ("timeout", "upstream_unavailable", "internal_error")


@dataclass(frozen=True)
class _Action:
    name: str
    resource_type: str
    attributes: Callable[[random.Random], dict[str, str]]
    failures: tuple[str, ...] = _GENERIC_FAILURES
    denials: tuple[str, ...] = ("missing permission",)
    actors: str = "US"  # U: users, S: service accounts, Y: system jobs


def _none(rng: random.Random) -> dict[str, str]:
    return {}


def _amount(rng: random.Random) -> dict[str, str]:
    return {"amount_cents": str(rng.randrange(100, 500_000)), "currency": rng.choice(("EUR", "USD", "GBP"))}


def _bytes(rng: random.Random) -> dict[str, str]:
    return {"bytes": str(rng.randrange(200, 50_000_000)), "region": rng.choice(("eu-west-1", "us-east-1"))}


def _role(rng: random.Random) -> dict[str, str]:
    return {"role": rng.choice(("viewer", "editor", "billing-admin", "org-admin")),
            "target_user": f"usr_{rng.getrandbits(32):08x}"}


def _login(rng: random.Random) -> dict[str, str]:
    return {"method": rng.choice(("password", "sso", "webauthn")), "mfa": rng.choice(("true", "false"))}


_SERVICES: dict[str, tuple[_Action, ...]] = {
    "billing": (
        _Action("invoice.create", "invoice", _amount, ("validation_error", "timeout"), ("policy billing-writers-only",), "US"),
        _Action("invoice.read", "invoice", _none, _GENERIC_FAILURES, ("not invoice owner",), "US"),
        _Action("invoice.void", "invoice", _amount, ("conflict: invoice already paid",), ("policy billing-admins-only",), "U"),
        _Action("payment.refund", "payment", _amount, ("insufficient_funds", "psp_declined"), ("refund above approval limit",), "U"),
        _Action("subscription.cancel", "subscription", _none, ("conflict",), ("not subscription owner",), "US"),
    ),
    "auth": (
        _Action("session.login", "user", _login, ("invalid_credentials", "account_locked"), ("ip not in allowlist", "mfa required"), "U"),
        _Action("session.logout", "session", _none, _GENERIC_FAILURES, ("session expired",), "U"),
        _Action("password.reset", "user", _none, ("token_expired",), ("too many attempts",), "U"),
        _Action("token.issue", "token", lambda rng: {"scope": rng.choice(("read", "write", "admin"))},
                ("invalid_client",), ("scope not granted",), "S"),
    ),
    "storage": (
        _Action("document.read", "document", _bytes, ("not_found", "timeout"), ("missing permission storage.documents.get",), "US"),
        _Action("document.write", "document", _bytes, ("quota_exceeded", "conflict"), ("missing permission storage.documents.create",), "US"),
        _Action("document.delete", "document", _none, ("object locked",), ("missing permission storage.documents.delete",), "USY"),
        _Action("document.share", "document", lambda rng: {"with": f"usr_{rng.getrandbits(32):08x}"},
                ("recipient_not_found",), ("external sharing disabled by policy",), "U"),
        _Action("bucket.list", "bucket", _none, _GENERIC_FAILURES, ("missing permission storage.buckets.list",), "S"),
    ),
    "admin-console": (
        _Action("user.create", "user", lambda rng: {"role": "viewer"}, ("email_taken",), ("not an org admin",), "U"),
        _Action("user.role.grant", "user", _role, ("role_not_found",), ("separation of duties: cannot grant own role",), "U"),
        _Action("user.role.revoke", "user", _role, ("role_not_found",), ("not an org admin",), "U"),
        _Action("user.disable", "user", _none, ("conflict",), ("not an org admin",), "U"),
        _Action("settings.update", "org-settings", lambda rng: {"setting": rng.choice(("sso", "retention", "mfa"))},
                ("validation_error",), ("not an org admin",), "U"),
    ),
    "reporting": (
        _Action("report.export", "report", lambda rng: {"format": rng.choice(("csv", "pdf"))},
                ("timeout", "too_large"), ("export disabled for role",), "USY"),
        _Action("report.read", "report", _none, _GENERIC_FAILURES, ("not report owner",), "U"),
    ),
}

_SERVICE_ACCOUNTS = {
    "billing": "svc-billing-worker",
    "auth": "svc-token-broker",
    "storage": "svc-storage-gc",
    "admin-console": "svc-admin-sync",
    "reporting": "svc-report-exporter",
}
_SYSTEM_JOBS = ("system:retention", "system:scheduler", "system:backup")


@dataclass
class _User:
    id: str
    ip: str
    user_agent: str
    session: str


def _user_ip(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return f"2001:db8:{rng.getrandbits(16):x}::{rng.getrandbits(16):x}"
    network = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{network}.{rng.randrange(1, 255)}"


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def synthetic_events(n: int, seed: int | None = None, *, start: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``n`` valid AuditEvent dicts, in ``occurred_at`` order, about 2 ms apart.

    With a ``seed`` the sequence is reproducible: same seed, same events, starting at
    ``start`` (default 2025-01-01T00:00Z). Without one, events start now.
    """
    rng = random.Random(seed)
    if start is None and seed is None:
        occurred_at = now_micros()
    else:
        occurred_at = ((start or SEEDED_START) - _EPOCH) // timedelta(microseconds=1)
    users = [
        _User(f"usr_{_hex(rng, 8)}", _user_ip(rng), rng.choice(_USER_AGENTS), f"sess_{_hex(rng, 16)}")
        for _ in range(200)
    ]
    services = list(_SERVICES)
    for _ in range(n):
        occurred_at += int(rng.expovariate(1 / _MEAN_GAP_MICROS))
        service = rng.choice(services)
        action = rng.choice(_SERVICES[service])
        kind = rng.choice(action.actors)
        if kind == "U":
            user = rng.choice(users)
            if rng.random() < 0.05:  # a new login now and then
                user.session = f"sess_{_hex(rng, 16)}"
            actor = {"id": user.id, "type": "USER", "source_ip": user.ip, "user_agent": user.user_agent,
                     "session_id": user.session}
        elif kind == "S":
            actor = {"id": _SERVICE_ACCOUNTS[service], "type": "SERVICE",
                     "source_ip": f"10.{rng.randrange(0, 4)}.{rng.randrange(0, 256)}.{rng.randrange(1, 255)}",
                     "user_agent": f"{_SERVICE_ACCOUNTS[service]}/2.{rng.randrange(0, 9)}.0", "session_id": None}
        else:
            actor = {"id": rng.choice(_SYSTEM_JOBS), "type": "SYSTEM", "source_ip": None, "user_agent": None,
                     "session_id": None}
        roll = rng.random()
        if roll < DENIED_RATE:
            outcome = {"status": "DENIED", "reason": rng.choice(action.denials)}
        elif roll < DENIED_RATE + FAILURE_RATE:
            outcome = {"status": "FAILURE", "reason": rng.choice(action.failures)}
        else:
            outcome = {"status": "SUCCESS", "reason": None}
        yield {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "occurred_at": occurred_at,
            "actor": actor,
            "action": action.name,
            "resource": {"type": action.resource_type, "id": f"{action.resource_type}-{_hex(rng, 10)}"},
            "outcome": outcome,
            "source_service": service,
            "request_id": f"req_{_hex(rng, 16)}",
            "trace_id": _hex(rng, 32) if rng.random() < 0.7 else None,
            "attributes": action.attributes(rng),
        }
