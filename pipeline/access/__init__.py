"""The audit trail of the audit trail: every access decision about the log becomes an event in the log.

- :func:`record_access`: what our own reading commands (verify, consume) call.
- ``authorizer_log``: the broker's authorizer decisions, parsed and mapped to AuditEvents (pure).
- ``tail``: exactly-once reading of a size-rotated log from a durable position.
- ``auditor``: ``auditseal access-audit``, forwarding both to ``audit.raw``.
"""

from pipeline.access.record import record_access, spool_path

__all__ = ["record_access", "spool_path"]
