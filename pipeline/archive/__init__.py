"""The archive contract between the sink (which writes it) and the verifier (which reads it); neither owns it.

- :mod:`pipeline.archive.layout` — object key layout and the manifest format (pure)
- :mod:`pipeline.archive.container` — one batch as an Avro object container file plus manifest (pure)
- :mod:`pipeline.archive.encryption` — AES-256-GCM envelope encryption with a wrapped data key (pure)
- :mod:`pipeline.archive.retention` — compliance profiles and retain-until dates (pure)
- :mod:`pipeline.archive.objectlock` — the WORM conformance check a bucket must pass (S3 I/O)
"""
