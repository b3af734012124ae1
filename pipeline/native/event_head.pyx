# The compiled twin of pipeline.wire.event_head's reader: the leading fields of an AuditEvent's body
# (event_id, occurred_at, actor.id, actor.type, action, resource.type, resource.id, outcome.status) in one
# pass over the bytes (pipeline/native/event_spans.pxd, shared with the sink's batch pass). It only finds *that* the bytes are
# damaged (None); the Python reference then says *what*, so the error message is the same either way.
# The unit tests compare the two on generated events.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from pipeline.native.event_spans cimport HeadSpans, read_head_spans


cdef inline object _text(const unsigned char* data, Py_ssize_t start, Py_ssize_t length):
    return PyUnicode_DecodeUTF8(<const char*>(data + start), length, NULL)


def read_head(bytes value, Py_ssize_t start, int actor_types, int outcome_statuses):
    """(event_id, occurred_at, actor_id, actor_type index, action, resource_type, resource_id, outcome index)
    of the AuditEvent body at ``value[start:]``, or None if the bytes are damaged (the reference words why)."""
    cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(value)
    cdef HeadSpans h
    if not read_head_spans(data, start, end, actor_types, outcome_statuses, &h):
        return None
    try:
        return (_text(data, h.s_id, h.n_id), h.occurred_at, _text(data, h.s_actor, h.n_actor), h.actor_type,
                _text(data, h.s_action, h.n_action), _text(data, h.s_rtype, h.n_rtype), _text(data, h.s_rid, h.n_rid),
                h.outcome)
    except UnicodeDecodeError:
        return None
