"""Failed authentications, from the broker's ``kafka-authentication.log``, as AuditEvents.

The broker's network layer logs each refused connection once, at INFO, through the
``org.apache.kafka.common.network.Selector`` logger (which ``auditseal dev up`` sends to a file of its own)::

    [2026-12-01T19:35:43.674+00:00] INFO [SocketServer listenerType=BROKER, nodeId=1] Failed authentication with
    /127.0.0.1 (channelId=127.0.0.1:20300-127.0.0.1:56788-1-47) (Authentication failed during authentication due
    to invalid credentials with SASL mechanism SCRAM-SHA-512) (org.apache.kafka.common.network.Selector)

(one line). Kafka does not log the user name a failed SCRAM login claimed, so the event names the client's
address, the listener's address and the mechanism; the actor is ``unauthenticated@<address>``, so the
detector's ``denied_burst`` rule counts a brute force per address. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipeline.access.authorizer_log import BROKER_SERVICE, _parse_time
from pipeline.producer.event import new_event

ACTION = "authentication.fail"
_FAILED = re.compile(
    r"^\[(?P<time>[^\]]+)\] (?P<level>[A-Z]+) \[SocketServer listenerType=(?P<listener_type>\w+), "
    r"nodeId=(?P<node>\d+)\] Failed authentication with /?(?P<address>\S+) \(channelId=(?P<channel>[^)]*)\) "
    r"\((?P<reason>.*)\) \(org\.apache\.kafka\.common\.network\.Selector\)$"
)
_MECHANISM = re.compile(r"with SASL mechanism (\S+?)\)?$")


@dataclass(frozen=True)
class FailedAuthentication:
    """One refused connection: when, from where, to which listener address, why and with which mechanism."""

    occurred_at: int
    address: str
    listener: str
    node: str
    reason: str
    mechanism: str


def parse_failed_authentication(line: str) -> FailedAuthentication | None:
    """The failed authentication logged on ``line``; None for any other line."""
    match = _FAILED.match(line.rstrip("\r\n"))
    if match is None:
        return None
    occurred_at = _parse_time(match["time"])
    if occurred_at is None:
        return None
    mechanism = _MECHANISM.search(match["reason"])
    listener = match["channel"].split("-", 1)[0]
    reason = match["reason"]
    return FailedAuthentication(occurred_at, match["address"], listener, match["node"], reason,
                                mechanism.group(1) if mechanism else ("TLS" if "SSL" in reason else "unknown"))


def failed_authentication_event(failure: FailedAuthentication, event_id: str) -> dict[str, Any]:
    """The AuditEvent of one failed authentication: DENIED ``authentication.fail`` by ``unauthenticated@<address>``."""
    return new_event(
        event_id=event_id, occurred_at=failure.occurred_at,
        actor={"id": f"unauthenticated@{failure.address}", "type": "SERVICE", "source_ip": failure.address},
        action=ACTION, resource={"type": "kafka.listener", "id": failure.listener},
        outcome={"status": "DENIED", "reason": failure.reason[:1000]}, source_service=BROKER_SERVICE,
        attributes={"address": failure.address, "mechanism": failure.mechanism, "listener": failure.listener,
                    "broker": failure.node, "user": "(not logged by the broker)"},
    )
