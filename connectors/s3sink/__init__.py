"""The S3 sink connector: ``audit.sealed`` into Object Lock COMPLIANCE storage, nothing lost (``auditseal sink``).

- :mod:`pipeline.archive.layout` — key layout and manifest format: the contract with verifiers (pure)
- :mod:`pipeline.archive.container` — one batch as an Avro container file plus manifest, deterministic (pure)
- :mod:`pipeline.archive.encryption` — AES-256-GCM envelope encryption with a wrapped data key (pure)
- :mod:`pipeline.archive.retention` — compliance profiles and retain-until dates (pure)
- :mod:`connectors.s3sink.batching` — cutting partitions into batches, replaying planned ranges (pure)
- :mod:`connectors.s3sink.bucket` — locked writes, read-back, retries (S3 I/O)
- :mod:`connectors.s3sink.worker` — the consume loop and offset commits (Kafka I/O)
- :mod:`connectors.s3sink.command` — the start-up bucket check and the process
- :mod:`connectors.s3sink.cli` — `auditseal sink`'s options, registered through the `auditseal.commands` entry point
"""
