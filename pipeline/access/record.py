"""``record_access``: how our own commands that read the audit log (verify, consume) leave a trace.

Readers have no right to write (``acl check``: readers cannot write), so a reading command does not
produce its access event itself: it appends the event as one JSON line to the access spool (a local
file, ``$AUDITSEAL_ACCESS_SPOOL``, default ``<stack dir>/access/records.jsonl``), and the access
auditor forwards the spool to ``audit.raw`` with the same durable-position reader it uses for the
broker's authorizer log. The broker's own decisions already show every fetch; these records add who
ran which command, from where, on what.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.dev.cache import stack_dir
from pipeline.producer.event import new_event
from pipeline.wire.validation import validate_event

SOURCE_SERVICE = "auditseal"


def spool_path() -> Path:
    """The access spool: ``$AUDITSEAL_ACCESS_SPOOL``, or ``access/records.jsonl`` in the stack folder."""
    configured = os.environ.get("AUDITSEAL_ACCESS_SPOOL")
    return Path(configured) if configured else stack_dir() / "access" / "records.jsonl"


def record_access(
    *,
    action: str,
    resource: Mapping[str, str],
    principal: str | None = None,
    status: str = "SUCCESS",
    reason: str | None = None,
    attributes: Mapping[str, str] | None = None,
    spool: Path | None = None,
) -> dict[str, Any]:
    """Append an access event to the spool (durably, fsync'd) and return it.

    ``action`` is e.g. ``"archive.verify"`` or ``"topic.consume"``; ``resource`` ``{"type", "id"}``
    (e.g. ``{"type": "kafka.topic", "id": "audit.sealed"}``); ``principal`` defaults to the Kafka
    principal of ``$AUDITSEAL_SASL_USERNAME``, else the operating-system user. The operating-system
    user, host name, process id and command line are added as attributes. Raises
    InvalidEventError (nothing written) if the event would not pass the schema.
    """
    username = os.environ.get("AUDITSEAL_SASL_USERNAME")
    actor_id = principal or (f"User:{username}" if username else f"os:{getpass.getuser()}")
    context = {
        "os_user": getpass.getuser(),
        "hostname": socket.gethostname(),
        "pid": str(os.getpid()),
        "command": " ".join(sys.argv)[:500],
    }
    event = new_event(
        actor={"id": actor_id, "type": "SERVICE" if actor_id.startswith("User:") else "USER"},
        action=action,
        resource=dict(resource),
        outcome={"status": status, "reason": reason},
        source_service=SOURCE_SERVICE,
        attributes={**context, **(attributes or {})},
    )
    validate_event(event)
    path = spool or spool_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(event, separators=(",", ":"), sort_keys=True) + "\n").encode()
    # one write() with O_APPEND: concurrent recorders never interleave inside a line
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return event
