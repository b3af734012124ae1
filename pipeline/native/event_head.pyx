# The compiled twin of pipeline.wire.event_head's reader: the leading fields of an AuditEvent's body
# (event_id, occurred_at, actor.id, actor.type, action, resource.type, resource.id, outcome.status) in one
# pass over the bytes, skipping the actor's three nullable strings. It only finds *that* the bytes are
# damaged (None); the Python reference then says *what*, so the error message is the same either way.
# The unit tests compare the two on generated events.

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t

from pipeline.native.varint cimport read_long


cdef inline bint _span(const unsigned char* data, Py_ssize_t* position, Py_ssize_t end,
                       Py_ssize_t* start, Py_ssize_t* length) noexcept nogil:
    # a length-prefixed string or bytes value: its start and length, position moved past it
    cdef int64_t n
    if not read_long(data, position, end, &n):
        return False
    if n < 0 or n > end - position[0]:
        return False
    start[0] = position[0]
    length[0] = <Py_ssize_t>n
    position[0] += <Py_ssize_t>n
    return True


cdef inline object _text(const unsigned char* data, Py_ssize_t start, Py_ssize_t length):
    return PyUnicode_DecodeUTF8(<const char*>(data + start), length, NULL)


def read_head(bytes value, Py_ssize_t start, int actor_types, int outcome_statuses):
    """(event_id, occurred_at, actor_id, actor_type index, action, resource_type, resource_id, outcome index)
    of the AuditEvent body at ``value[start:]``, or None if the bytes are damaged (the reference words why)."""
    cdef const unsigned char* data = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(value), position = start
    cdef Py_ssize_t s_id, n_id, s_actor, n_actor, s_action, n_action, s_rtype, n_rtype, s_rid, n_rid, s, n
    cdef int64_t occurred_at, actor_type, branch, outcome
    cdef int i
    if not _span(data, &position, end, &s_id, &n_id):
        return None
    if not read_long(data, &position, end, &occurred_at):
        return None
    if not _span(data, &position, end, &s_actor, &n_actor):
        return None
    if not read_long(data, &position, end, &actor_type) or not 0 <= actor_type < actor_types:
        return None
    for i in range(3):
        if not read_long(data, &position, end, &branch):
            return None
        if branch == 1:
            if not _span(data, &position, end, &s, &n):
                return None
        elif branch != 0:
            return None
    if not _span(data, &position, end, &s_action, &n_action):
        return None
    if not _span(data, &position, end, &s_rtype, &n_rtype):
        return None
    if not _span(data, &position, end, &s_rid, &n_rid):
        return None
    if not read_long(data, &position, end, &outcome) or not 0 <= outcome < outcome_statuses:
        return None
    try:
        return (_text(data, s_id, n_id), occurred_at, _text(data, s_actor, n_actor), actor_type,
                _text(data, s_action, n_action), _text(data, s_rtype, n_rtype), _text(data, s_rid, n_rid), outcome)
    except UnicodeDecodeError:
        return None
