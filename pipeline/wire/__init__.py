"""The wire format, in one place: everything a third party needs to read or write AuditSeal's bytes.

- :mod:`pipeline.wire.catalog` — the ``schemas/*.avsc`` files (shipped in the package), fingerprints, evolution
- :mod:`pipeline.wire.codec` — Avro single-object encoding of audit events, and its decode errors
- :mod:`pipeline.wire.validation` — what makes an event valid: the checked writer compiled from a schema
- :mod:`pipeline.wire.acceptance` — the sealer's acceptance decision on a raw record, and its compiled check
- :mod:`pipeline.wire.varint` — the one Avro varint codec, and its strictness
- :mod:`pipeline.wire.sealed` — the record kinds on ``audit.sealed`` and the exact bytes each entry hashes
- :mod:`pipeline.wire.flat_decoder` — the strict decoder of flat sealed records
- :mod:`pipeline.wire.topics` — the audit topics and their configuration
"""
