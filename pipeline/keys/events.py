"""Each key operation is itself an audit event, sealed in the log like any other.

``auditseal keys`` writes the event to ``audit.raw`` with the ``AUDITSEAL_*`` Kafka identity it runs as
(a role allowed to write there: a producer or service identity). The identity is checked before the
operation (a wrong password changes nothing); the event is sent after it and flushed, and an event that
cannot be delivered is an error naming the operation, so an operation is never silently unrecorded.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from collections.abc import Mapping

from pipeline.producer.event import new_event

SOURCE_SERVICE = "auditseal-keys"


class KeyEventRecorder:
    """A producer checked up front, then one event per operation."""

    def __init__(self) -> None:
        from pipeline.producer.client import AuditProducer

        self._producer = AuditProducer(config={"log_level": 2})
        self._producer.check()

    def record(self, action: str, resource_type: str, key_id: str, attributes: Mapping[str, str]) -> str:
        """Send and flush the event of one operation (``action`` e.g. ``key.rotate``); returns its event id."""
        username = os.environ.get("AUDITSEAL_SASL_USERNAME")
        event = new_event(
            actor={"id": f"User:{username}" if username else f"os:{getpass.getuser()}", "type": "USER"},
            action=action,
            resource={"type": resource_type, "id": key_id},
            outcome={"status": "SUCCESS"},
            source_service=SOURCE_SERVICE,
            attributes={"os_user": getpass.getuser(), "hostname": socket.gethostname(),
                        "command": " ".join(sys.argv)[:500], **attributes},
        )
        self._producer.emit(event)
        self._producer.flush(30.0)
        return str(event["event_id"])

    def close(self) -> None:
        """Flush and stop the producer."""
        self._producer.close()
