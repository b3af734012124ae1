# Where the leading fields of an AuditEvent's body lie in its bytes: one reader for the compiled modules that
# need them (event_head.pyx, the timeline's reader; archive_batch.pyx, the sink's batch pass). The fields, in
# schema order: event_id, occurred_at, actor.id, actor.type (enum index), the actor's three nullable strings
# (skipped), action, resource.type, resource.id, outcome.status (enum index). It finds *that* the bytes are
# damaged (False), never *what*: the Python reference pipeline.wire.event_head says what.

from libc.stdint cimport int64_t

from pipeline.native.varint cimport read_long


cdef struct HeadSpans:
    Py_ssize_t s_id, n_id, s_actor, n_actor, s_action, n_action, s_rtype, n_rtype, s_rid, n_rid
    int64_t occurred_at, actor_type, outcome


cdef inline bint span(const unsigned char* data, Py_ssize_t* position, Py_ssize_t end,
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


cdef inline bint read_head_spans(const unsigned char* data, Py_ssize_t position, Py_ssize_t end,
                                 int64_t actor_types, int64_t outcome_statuses, HeadSpans* head) noexcept nogil:
    # the spans and values of the body's leading fields from position, or False if the bytes are damaged
    # (cut short, a length past the end, an enum index or union branch out of range); UTF-8 is not checked
    cdef Py_ssize_t s, n
    cdef int64_t branch
    cdef int i
    if not span(data, &position, end, &head.s_id, &head.n_id):
        return False
    if not read_long(data, &position, end, &head.occurred_at):
        return False
    if not span(data, &position, end, &head.s_actor, &head.n_actor):
        return False
    if not read_long(data, &position, end, &head.actor_type) or not 0 <= head.actor_type < actor_types:
        return False
    for i in range(3):
        if not read_long(data, &position, end, &branch):
            return False
        if branch == 1:
            if not span(data, &position, end, &s, &n):
                return False
        elif branch != 0:
            return False
    if not span(data, &position, end, &head.s_action, &head.n_action):
        return False
    if not span(data, &position, end, &head.s_rtype, &head.n_rtype):
        return False
    if not span(data, &position, end, &head.s_rid, &head.n_rid):
        return False
    if not read_long(data, &position, end, &head.outcome) or not 0 <= head.outcome < outcome_statuses:
        return False
    return True
