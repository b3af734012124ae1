"""The checked Avro writer's fast path, compiled: a schema becomes a small tree of C-level ops.

:func:`compile_native_encoder` is the fast path of :mod:`pipeline.wire.validation`'s checked writer,
its readable reference, which production runs for every value the ops hand over: the
schema (any version in ``schemas/``, parsed at runtime) is turned into one op per schema node
(record, string, UUID string, timestamp, int, long, boolean, null, enum, map, array, nullable
union, bytes, fixed), and the ops write straight into one growable C buffer (on the stack for
the usual event, so encoding allocates only the returned ``bytes``).

The ops are never a second validator with their own rules. Each either writes exactly the
bytes :mod:`pipeline.wire.validation`'s checked writer writes, after checking everything that writer
checks for the shapes it takes (exact ``dict``/``list``/``tuple``/``int``/``bytes``/``bytearray``,
``str`` and its subclasses, UUIDs and timestamps as ``str`` and ``int``), or answers "not mine",
and then the whole value goes to ``fallback(value)``, the checked writer, which encodes it or
raises the one precise :class:`~pipeline.wire.validation.InvalidEventError`. Schema nodes without an
op of their own (float, double, unions other than nullable ones, recursive references) run the
checked writer's compiled closure for that node, and anything it raises also means "not mine".
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_Next, PyDict_Size
from cpython.list cimport PyList_CheckExact, PyList_GET_SIZE
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_CheckExact, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_Check, PyUnicode_CheckExact
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from pipeline.native.varint cimport MAX_VARINT_BYTES, put_long

from sys import intern

from pipeline.wire.validation import _INT32, _INT64, _Compiler, _timestamp_bounds


cdef extern from "Python.h":
    PyObject* PyDict_GetItemWithError(object mapping, object key)
    PyObject* PyErr_Occurred()
    void PyErr_Clear()
    bint PyUnicode_IS_COMPACT_ASCII(object text)
    void* PyUnicode_DATA(object text)
    Py_ssize_t PyUnicode_GET_LENGTH(object text)
    long long PyLong_AsLongLongAndOverflow(object number, int* overflow) except? -1
    PyObject* PyList_GET_ITEM(object items, Py_ssize_t i)
    PyObject* PyTuple_GET_ITEM(object items, Py_ssize_t i)


# What an op returns: the value is written, or the whole value goes to the checked writer.
cdef enum:
    WRITTEN = 0
    NOT_MINE = 1

cdef enum:
    STACK_SIZE = 1024  # an audit event is ~300 bytes: the first buffer lives on the stack


cdef struct Buffer:
    char* data
    Py_ssize_t size
    Py_ssize_t capacity
    char* stack


cdef int _grow(Buffer* out, Py_ssize_t more) except -1:
    cdef Py_ssize_t capacity = out.capacity * 2
    cdef char* data
    while capacity < out.size + more:
        capacity *= 2
    if out.data == out.stack:
        data = <char*>PyMem_Malloc(capacity)
        if data == NULL:
            raise MemoryError()
        memcpy(data, out.data, out.size)
    else:
        data = <char*>PyMem_Realloc(out.data, capacity)
        if data == NULL:
            raise MemoryError()
    out.data = data
    out.capacity = capacity
    return 0


cdef inline int _reserve(Buffer* out, Py_ssize_t more) except -1:
    if out.size + more > out.capacity:
        return _grow(out, more)
    return 0


cdef inline int _put(Buffer* out, const char* data, Py_ssize_t n) except -1:
    if out.size + n > out.capacity:
        _grow(out, n)
    memcpy(out.data + out.size, data, n)
    out.size += n
    return 0


cdef inline int _put_long(Buffer* out, int64_t n) except -1:
    # Zig-zag, as Avro writes int and long (and lengths and counts): pipeline.native.varint's codec.
    if out.size + MAX_VARINT_BYTES > out.capacity:
        _grow(out, MAX_VARINT_BYTES)
    out.size += put_long(<unsigned char*>out.data + out.size, n)
    return 0


cdef inline int _put_bytes_value(Buffer* out, object bytes_value) except -1:
    # Length, then the bytes; NOT_MINE unless exactly bytes or bytearray (a subclass may expose other bytes).
    cdef Py_ssize_t n
    if PyBytes_CheckExact(bytes_value):
        n = PyBytes_GET_SIZE(bytes_value)
        _put_long(out, n)
        _put(out, PyBytes_AS_STRING(bytes_value), n)
        return WRITTEN
    if PyByteArray_CheckExact(bytes_value):
        n = PyByteArray_GET_SIZE(bytes_value)
        _put_long(out, n)
        _put(out, PyByteArray_AS_STRING(bytes_value), n)
        return WRITTEN
    return NOT_MINE


cdef int _put_text(Buffer* out, object text) except -1:
    """Length and UTF-8 of a str (or subclass, encoded as its text, like ``str.encode``); NOT_MINE otherwise."""
    cdef Py_ssize_t n
    cdef bytes encoded
    if PyUnicode_CheckExact(text) and PyUnicode_IS_COMPACT_ASCII(text):
        n = PyUnicode_GET_LENGTH(text)
        _put_long(out, n)
        _put(out, <const char*>PyUnicode_DATA(text), n)
        return WRITTEN
    if not PyUnicode_Check(text):
        return NOT_MINE
    try:
        encoded = PyUnicode_AsUTF8String(text)
    except UnicodeEncodeError:  # a lone surrogate: the checked writer names it
        return NOT_MINE
    n = PyBytes_GET_SIZE(encoded)
    _put_long(out, n)
    _put(out, PyBytes_AS_STRING(encoded), n)
    return WRITTEN


cdef class _Op:
    """One schema node: write ``value`` (WRITTEN) or decline it (NOT_MINE)."""

    cdef int write(self, Buffer* out, object value) except -1:
        return NOT_MINE


cdef class _String(_Op):
    cdef int write(self, Buffer* out, object value) except -1:
        return _put_text(out, value)


cdef bint _HEX[256]
for _c in range(256):
    _HEX[_c] = chr(_c) in "0123456789abcdefABCDEF"


cdef class _UuidString(_Op):
    """The RFC 4122 text form, 8-4-4-4-12 hex digits, as the checked writer's regular expression has it."""

    cdef int write(self, Buffer* out, object value) except -1:
        cdef const char* text
        cdef int i
        if not (PyUnicode_CheckExact(value) and PyUnicode_IS_COMPACT_ASCII(value)
                and PyUnicode_GET_LENGTH(value) == 36):
            return NOT_MINE
        text = <const char*>PyUnicode_DATA(value)
        if text[8] != b'-' or text[13] != b'-' or text[18] != b'-' or text[23] != b'-':
            return NOT_MINE
        for i in range(36):
            if not _HEX[<unsigned char>text[i]] and i != 8 and i != 13 and i != 18 and i != 23:
                return NOT_MINE
        _reserve(out, 37)
        out.data[out.size] = 0x48  # 36, zig-zag encoded
        memcpy(out.data + out.size + 1, text, 36)
        out.size += 37
        return WRITTEN


cdef class _Integer(_Op):
    """int, long, and the timestamps given as ints: an exact int in [low, high)."""

    cdef int64_t low
    cdef int64_t high  # exclusive; high == low means up to the int64 maximum

    cdef int write(self, Buffer* out, object value) except -1:
        cdef int overflow
        cdef long long n
        if not PyLong_CheckExact(value):
            return NOT_MINE
        n = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow or n < self.low or (self.high != self.low and n >= self.high):
            return NOT_MINE
        _put_long(out, n)
        return WRITTEN


cdef class _Boolean(_Op):
    cdef int write(self, Buffer* out, object value) except -1:
        cdef char byte
        if value is True:
            byte = 1
        elif value is False:
            byte = 0
        else:
            return NOT_MINE
        _put(out, &byte, 1)
        return WRITTEN


cdef class _Null(_Op):
    cdef int write(self, Buffer* out, object value) except -1:
        return WRITTEN if value is None else NOT_MINE


cdef class _Enum(_Op):
    cdef dict index  # symbol -> position

    cdef int write(self, Buffer* out, object value) except -1:
        cdef PyObject* position
        if not PyUnicode_CheckExact(value):
            return NOT_MINE
        position = PyDict_GetItemWithError(self.index, value)
        if position == NULL:
            if PyErr_Occurred() != NULL:
                PyErr_Clear()
            return NOT_MINE
        _put_long(out, <object>position)
        return WRITTEN


cdef class _Bytes(_Op):
    cdef int write(self, Buffer* out, object value) except -1:
        return _put_bytes_value(out, value)


cdef class _Fixed(_Op):
    cdef Py_ssize_t size

    cdef int write(self, Buffer* out, object value) except -1:
        if PyBytes_CheckExact(value) and PyBytes_GET_SIZE(value) == self.size:
            _put(out, PyBytes_AS_STRING(value), self.size)
            return WRITTEN
        if PyByteArray_CheckExact(value) and PyByteArray_GET_SIZE(value) == self.size:
            _put(out, PyByteArray_AS_STRING(value), self.size)
            return WRITTEN
        return NOT_MINE


cdef class _Field:
    cdef str name  # interned, as the keys of dicts written with literals are: found by identity
    cdef _Op op
    cdef bytes default  # the default's encoding, None when the field is required


cdef class _Record(_Op):
    """An exact dict with every required field, no unknown field; absent fields take their default."""

    cdef list fields

    cdef int write(self, Buffer* out, object value) except -1:
        cdef Py_ssize_t found = 0
        cdef _Field field
        cdef PyObject* item
        cdef object present
        if not PyDict_CheckExact(value):
            return NOT_MINE
        for field in self.fields:
            item = PyDict_GetItemWithError(value, field.name)
            if item == NULL:
                if PyErr_Occurred() != NULL:
                    PyErr_Clear()
                    return NOT_MINE
                if field.default is None:
                    return NOT_MINE  # missing
                _put(out, PyBytes_AS_STRING(field.default), PyBytes_GET_SIZE(field.default))
                continue
            found += 1
            present = <object>item  # a reference of our own while the field's op runs
            if field.op.write(out, present) != WRITTEN:
                return NOT_MINE
        # Every key matched a distinct field, so none is unknown.
        return WRITTEN if found == PyDict_Size(value) else NOT_MINE


cdef class _Map(_Op):
    """An exact dict with str keys: one block holding every item, then the empty block."""

    cdef _Op values

    cdef int write(self, Buffer* out, object value) except -1:
        cdef Py_ssize_t n, position = 0, seen = 0
        cdef PyObject* key_pointer
        cdef PyObject* item_pointer
        cdef object key, item
        if not PyDict_CheckExact(value):
            return NOT_MINE
        n = PyDict_Size(value)
        if n:
            _put_long(out, n)
            while PyDict_Next(value, &position, &key_pointer, &item_pointer):
                key = <object>key_pointer
                item = <object>item_pointer
                seen += 1
                if _put_text(out, key) != WRITTEN or self.values.write(out, item) != WRITTEN:
                    return NOT_MINE
            if seen != n or PyDict_Size(value) != n:
                return NOT_MINE  # changed while we wrote it
        _put(out, b"\x00", 1)
        return WRITTEN


cdef class _Array(_Op):
    """An exact list or tuple: one block holding every item, then the empty block."""

    cdef _Op items

    cdef int write(self, Buffer* out, object value) except -1:
        cdef Py_ssize_t n, i
        cdef bint is_list = PyList_CheckExact(value)
        cdef object item
        if is_list:
            n = PyList_GET_SIZE(value)
        elif PyTuple_CheckExact(value):
            n = PyTuple_GET_SIZE(value)
        else:
            return NOT_MINE
        if n:
            _put_long(out, n)
            for i in range(n):
                if is_list:
                    if i >= PyList_GET_SIZE(value):
                        return NOT_MINE  # shrank while we wrote it
                    item = <object>PyList_GET_ITEM(value, i)
                else:
                    item = <object>PyTuple_GET_ITEM(value, i)
                if self.items.write(out, item) != WRITTEN:
                    return NOT_MINE
            if is_list and PyList_GET_SIZE(value) != n:
                return NOT_MINE
        _put(out, b"\x00", 1)
        return WRITTEN


cdef class _Nullable(_Op):
    """A two-branch union with null: the branch index, then the value (nothing for null)."""

    cdef char null_tag
    cdef char value_tag
    cdef _Op branch

    cdef int write(self, Buffer* out, object value) except -1:
        if value is None:
            _put(out, &self.null_tag, 1)
            return WRITTEN
        _put(out, &self.value_tag, 1)
        return self.branch.write(out, value)


cdef class _Delegate(_Op):
    """A node without an op of its own: the checked writer's closure for it; any exception means NOT_MINE."""

    cdef object checked_write

    cdef int write(self, Buffer* out, object value) except -1:
        cdef bytearray written = bytearray()
        try:
            self.checked_write(written, value)
        except Exception:
            return NOT_MINE
        _put(out, PyByteArray_AS_STRING(written), PyByteArray_GET_SIZE(written))
        return WRITTEN


cdef class NativeEncoder:
    """``prefix`` + the Avro binary encoding of a value, through the ops; the checked writer for the rest."""

    cdef _Op root
    cdef bytes prefix
    cdef object fallback

    def encode(self, value):
        """Single-object bytes of a valid value; InvalidEventError (from the checked writer) otherwise."""
        cdef char stack[STACK_SIZE]
        cdef Buffer out
        cdef int written
        out.data = stack
        out.stack = stack
        out.capacity = STACK_SIZE
        out.size = 0
        try:
            _put(&out, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix))
            written = self.root.write(&out, value)
            if written == WRITTEN:
                return PyBytes_FromStringAndSize(out.data, out.size)
        finally:
            if out.data != stack:
                PyMem_Free(out.data)
        return self.fallback(value)

    def field_names(self):
        """The root record's field names, in schema order (empty if the root is not a record)."""
        if not isinstance(self.root, _Record):
            return ()
        return tuple([(<_Field>field).name for field in (<_Record>self.root).fields])

    def encode_field(self, str name, value):
        """The bytes of ``value`` as the root record's field ``name`` alone, or None if its op does not
        write it (then only the whole event, through :meth:`encode`, says why)."""
        cdef char stack[STACK_SIZE]
        cdef Buffer out
        cdef _Field field
        if not isinstance(self.root, _Record):
            return None
        for field in (<_Record>self.root).fields:
            if field.name != name:
                continue
            out.data = stack
            out.stack = stack
            out.capacity = STACK_SIZE
            out.size = 0
            try:
                if field.op.write(&out, value) == WRITTEN:
                    return PyBytes_FromStringAndSize(out.data, out.size)
            finally:
                if out.data != stack:
                    PyMem_Free(out.data)
            return None
        return None

    def encode_replacing(self, value, tuple replaced):
        """``prefix`` + the encoding of ``value`` with the root record's field ``i`` written as the bytes
        ``replaced[i]`` where that is not None (one per field, in :meth:`field_names` order), whatever
        ``value`` holds there; a key of ``value`` under a replaced field still counts as a known field.
        None if the ops do not write the rest: the caller encodes the usual way, which validates.

        For a producer that encodes many events sharing one part it has encoded before (the protected
        actor and its encrypted fields, :mod:`pipeline.privacy.protector`)."""
        cdef char stack[STACK_SIZE]
        cdef Buffer out
        cdef _Record record
        cdef _Field field
        cdef PyObject* item
        cdef Py_ssize_t found = 0, i = 0
        cdef object replacement, present
        if not isinstance(self.root, _Record) or not PyDict_CheckExact(value):
            return None
        record = <_Record>self.root
        if PyTuple_GET_SIZE(replaced) != len(record.fields):
            raise ValueError(f"expected one replacement (or None) per field, {len(record.fields)}")
        out.data = stack
        out.stack = stack
        out.capacity = STACK_SIZE
        out.size = 0
        try:
            _put(&out, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix))
            for field in record.fields:
                replacement = <object>PyTuple_GET_ITEM(replaced, i)
                i += 1
                item = PyDict_GetItemWithError(value, field.name)
                if item == NULL and PyErr_Occurred() != NULL:
                    PyErr_Clear()
                    return None
                if replacement is not None:
                    if not PyBytes_CheckExact(replacement):
                        raise TypeError("a replacement is bytes or None")
                    if item != NULL:
                        found += 1
                    _put(&out, PyBytes_AS_STRING(replacement), PyBytes_GET_SIZE(replacement))
                    continue
                if item == NULL:
                    if field.default is None:
                        return None  # missing
                    _put(&out, PyBytes_AS_STRING(field.default), PyBytes_GET_SIZE(field.default))
                    continue
                found += 1
                present = <object>item  # a reference of our own while the field's op runs
                if field.op.write(&out, present) != WRITTEN:
                    return None
            if found != PyDict_Size(value):
                return None  # an unknown field: encode() names it
            return PyBytes_FromStringAndSize(out.data, out.size)
        finally:
            if out.data != stack:
                PyMem_Free(out.data)


class _OpCompiler:
    """Turns a ``fastavro.parse_schema`` result into ops, mirroring ``pipeline.wire.validation._Compiler``."""

    def __init__(self, checked):
        self.checked = checked  # the checked writer's compiler, all named types registered
        self.named = {}  # full name -> op, for references to an already defined type

    def compile(self, schema, records=()):
        if isinstance(schema, str):
            if schema in records:  # a recursive reference: left to the checked writer
                return self.delegate(schema)
            if schema in self.named:
                return self.named[schema]
            return self.primitive(schema)
        if isinstance(schema, list):
            return self.union(schema, records)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            return self.logical(schema, kind, logical)
        if kind == "record" or kind == "error":
            return self.record(schema, records + (schema["name"],))
        if kind == "enum":
            op = _enum({symbol: position for position, symbol in enumerate(schema["symbols"])})
        elif kind == "fixed":
            op = _fixed(schema["size"])
        elif kind == "map":
            op = _map(self.compile(schema["values"], records))
        elif kind == "array":
            op = _array(self.compile(schema["items"], records))
        else:
            return self.primitive(kind)
        if "name" in schema:
            self.named[schema["name"]] = op
        return op

    def primitive(self, kind):
        if kind == "string":
            return _String()
        if kind == "int" or kind == "long":
            low, high = _INT32 if kind == "int" else _INT64
            return _integer(low, high)
        if kind == "boolean":
            return _Boolean()
        if kind == "null":
            return _Null()
        if kind == "bytes":
            return _Bytes()
        return self.delegate(kind)  # float, double; an unknown name raises ConfigError there

    def logical(self, schema, kind, logical):
        if kind == "string" and logical == "uuid":
            return _UuidString()
        if kind == "long" and logical in ("timestamp-micros", "timestamp-millis"):
            low, high = _timestamp_bounds(logical)
            return _integer(low, high)
        return self.delegate(schema)  # raises ConfigError, as the checked writer does

    def record(self, schema, records):
        fields = []
        for avro_field in schema["fields"]:
            default = None
            if "default" in avro_field:
                checked_write, _, _ = self.checked.compile(avro_field["type"])
                default = self.checked._default_bytes(checked_write, avro_field)
            fields.append(_field(intern(avro_field["name"]), self.compile(avro_field["type"], records), default))
        op = self.named[schema["name"]] = _record(fields)
        return op

    def union(self, branches, records):
        if len(branches) != 2 or "null" not in branches:
            return self.delegate(branches)
        null_index = branches.index("null")
        return _nullable(null_index, self.compile(branches[1 - null_index], records))

    def delegate(self, schema):
        checked_write, _, _ = self.checked.compile(schema)
        return _delegate(checked_write)


# The ops' constructors (their attributes are C-level, so set here).

cdef _Op _enum(dict index):
    cdef _Enum op = _Enum()
    op.index = index
    return op


cdef _Op _fixed(Py_ssize_t size):
    cdef _Fixed op = _Fixed()
    op.size = size
    return op


cdef _Op _map(_Op values):
    cdef _Map op = _Map()
    op.values = values
    return op


cdef _Op _array(_Op items):
    cdef _Array op = _Array()
    op.items = items
    return op


cdef _Field _field(str name, _Op op, bytes default):
    cdef _Field field = _Field()
    field.name = name
    field.op = op
    field.default = default
    return field


cdef _Op _record(list fields):
    cdef _Record op = _Record()
    op.fields = fields
    return op


cdef _Op _nullable(int null_index, _Op branch):
    cdef _Nullable op = _Nullable()
    op.null_tag = null_index * 2
    op.value_tag = (1 - null_index) * 2
    op.branch = branch
    return op


cdef _Op _delegate(object checked_write):
    cdef _Delegate op = _Delegate()
    op.checked_write = checked_write
    return op


cdef _Op _integer(object low, object high):
    cdef _Integer op = _Integer()
    op.low = low
    op.high = low if high > 2**63 - 1 else high  # the long range's end is past int64: no upper check
    return op


def compile_native_encoder(parsed_schema, prefix, fallback):
    """Compile ``encode(value) -> prefix + Avro body`` for a ``fastavro.parse_schema`` result.

    ``fallback(value)`` (the checked writer, :meth:`pipeline.wire.codec.EventCodec.encode_checked`)
    must return the same bytes (prefix included) or raise for invalid values; it is called for
    every value the ops do not write themselves. Raises ConfigError for a schema the checked
    writer does not support.
    """
    checked = _Compiler()
    checked.compile(parsed_schema)  # registers named types, so delegated references resolve
    cdef NativeEncoder encoder = NativeEncoder()
    encoder.root = _OpCompiler(checked).compile(parsed_schema)
    encoder.prefix = bytes(prefix)
    encoder.fallback = fallback
    return encoder.encode
