# cython: language_level=3
"""The per-event path of :meth:`pipeline.privacy.protector.Protector.encoder`, compiled.

Most events are about an actor seen moments ago, and AES-SIV is deterministic, so the protected actor
and its encrypted fields are the same bytes every time. :class:`ProtectedEncoder` keeps, per actor (by
value: a hash over its items finds it, an item-by-item comparison confirms it), the encoding of the
pseudonymised ``actor`` record and of its ``protected_subjects`` array, and encodes such an event with
them in place (``NativeEncoder.encode_replacing``): a dict lookup, a comparison of the actor's few items
and the plain encoder's work, with nothing re-encrypted, re-derived or re-encoded.

Everything else (an actor not seen, expired, or not made of plain strings; flagged attributes; an event
that is not an exact dict) goes to ``slow(event)``, the reference path in Python (protect, encode,
validate), which calls :meth:`ProtectedEncoder.learn` for an actor once its bytes are known to be the
reference's. The table is bounded in size (emptied when full) and in time (``ttl`` seconds per actor),
and emptied at once by :meth:`ProtectedEncoder.clear` (an erasure).
"""

from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_Size
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_CheckExact
from posix.time cimport clock_gettime, timespec

cdef extern from "Python.h":
    ctypedef size_t Py_uhash_t
    PyObject* PyDict_GetItemWithError(object mapping, object key) except? NULL
    Py_ssize_t PyObject_Hash(object value) except -1

cdef str ACTOR = "actor"
cdef str PERSONAL_ATTRIBUTES = "personal_attributes"
cdef str PROTECTED_FIELDS = "protected_fields"
cdef str PROTECTED_SUBJECTS = "protected_subjects"


cdef extern from "<time.h>":
    # a clock read from memory the kernel updates every tick (a few ms): plenty for a TTL of seconds
    enum: CLOCK_MONOTONIC_COARSE


cdef inline double _now():
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


cdef object _actor_key(object actor):
    # The table's key of an actor: a hash over its items, independent of their order as dict equality
    # is; None unless every key is an exact str and every value an exact str or None (equal such dicts
    # encode to equal bytes, and nothing with a custom __eq__ can pass for a cached, validated actor).
    # str hashes are cached in the strings: this allocates only the returned int.
    cdef Py_ssize_t position = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef Py_uhash_t combined = <Py_uhash_t>PyDict_Size(actor), item
    # the constants of splitmix64's finaliser (a well-mixed 64-bit hash of each item)
    cdef Py_uhash_t golden = 0x9E3779B9, m1 = 0xBF58476D, m2 = 0x94D049BB
    golden = (golden << 32) | 0x7F4A7C15
    m1 = (m1 << 32) | 0x1CE4E5B9
    m2 = (m2 << 32) | 0x133111EB
    while PyDict_Next(actor, &position, &key, &value):
        if not PyUnicode_CheckExact(<object>key):
            return None
        if <object>value is None:
            item = golden
        elif PyUnicode_CheckExact(<object>value):
            item = <Py_uhash_t>PyObject_Hash(<object>value)
        else:
            return None
        item = (item ^ (<Py_uhash_t>PyObject_Hash(<object>key) * m1)) * m2
        combined += item ^ (item >> 31)
    return combined


cdef inline bint _same(PyObject* a, PyObject* b) except -1:
    # equal exact strs (or both None): identity first, as most of an event's strings are the ones it
    # was built from
    return a == b or PyObject_RichCompareBool(<object>a, <object>b, Py_EQ)


cdef class _Entry:
    cdef dict actor         # a copy of the actor as the reference path protected it
    cdef tuple items        # its keys and values, in its iteration order: k0, v0, k1, v1, ...
    cdef object replaced    # encode_replacing's tuple, or None for a workload (encoded as it is)
    cdef double deadline
    cdef _Entry next        # another actor of the same _actor_key (a hash collision), or None

    cdef bint matches(self, dict actor) except -1:
        """Whether ``actor`` equals this entry's (``actor`` passed :func:`_actor_key`: exact strs or None)."""
        cdef Py_ssize_t position = 0, i = 0, n = PyTuple_GET_SIZE(self.items)
        cdef PyObject* key
        cdef PyObject* value
        if PyDict_Size(actor) * 2 != n:
            return False
        while PyDict_Next(actor, &position, &key, &value):
            if not _same(key, PyTuple_GET_ITEM(self.items, i)):
                return self.actor == actor  # the same items in another order is the same actor
            if not _same(value, PyTuple_GET_ITEM(self.items, i + 1)):
                return False
            i += 2
        return True


cdef class ProtectedEncoder:
    """``encoder(event) -> bytes``: the protected event's single-object encoding (see the module doc)."""

    cdef object encode_replacing
    cdef object plain
    cdef object slow
    cdef dict table          # _actor_key -> _Entry (a chain of them only for a hash collision)
    cdef Py_ssize_t count
    cdef Py_ssize_t size
    cdef double ttl

    def __init__(self, native_encoder, slow, *, Py_ssize_t size, double ttl):
        """``native_encoder``: the codec's :class:`pipeline.native.avro_writer.NativeEncoder`; ``slow``:
        the reference path for everything not in the table."""
        self.encode_replacing = native_encoder.encode_replacing
        self.plain = native_encoder.encode
        self.slow = slow
        self.table = {}
        self.count = 0
        self.size = size
        self.ttl = ttl

    def __call__(self, event):
        cdef PyObject* found
        cdef object actor, key, data
        cdef _Entry entry
        cdef double now
        if PyDict_CheckExact(event) and PERSONAL_ATTRIBUTES not in event and PROTECTED_FIELDS not in event \
                and PROTECTED_SUBJECTS not in event:
            found = PyDict_GetItemWithError(event, ACTOR)
            if found != NULL:
                actor = <object>found
                if PyDict_CheckExact(actor):
                    key = _actor_key(actor)
                    found = PyDict_GetItemWithError(self.table, key) if key is not None else NULL
                    if found != NULL:
                        now = _now()
                        entry = <_Entry>found
                        while entry is not None:
                            if entry.deadline > now and entry.matches(actor):
                                if entry.replaced is None:
                                    return self.plain(event)
                                data = self.encode_replacing(event, entry.replaced)
                                if data is not None:
                                    return data
                                break  # something else in the event is unusual: the reference path says what
                            entry = entry.next
        return self.slow(event)

    def learn(self, actor, replaced):
        """Remember ``actor``'s encoded parts (``replaced``, or None: encode such events as they are)."""
        cdef _Entry entry, kept = None, old, old_next
        cdef Py_ssize_t position = 0
        cdef PyObject* item_key
        cdef PyObject* item_value
        cdef list items = []
        cdef double now = _now()
        if not PyDict_CheckExact(actor):
            return
        key = _actor_key(actor)
        if key is None:
            return
        if self.count >= self.size:
            self.table.clear()
            self.count = 0
        old = self.table.get(key)
        while old is not None:  # keep the live entries of other actors under this key
            if old.deadline > now and old.actor != actor:
                old_next, old.next, kept = old.next, kept, old
                old = old_next
            else:
                self.count -= 1
                old = old.next
        entry = _Entry()
        entry.actor = dict(actor)
        while PyDict_Next(entry.actor, &position, &item_key, &item_value):
            items.append(<object>item_key)
            items.append(<object>item_value)
        entry.items = tuple(items)
        entry.replaced = replaced
        entry.deadline = now + self.ttl
        entry.next = kept
        self.table[key] = entry
        self.count += 1

    def clear(self):
        """Forget every actor."""
        self.table.clear()
        self.count = 0

    def __len__(self):
        """How many actors are remembered."""
        return self.count
