"""AuditSeal: immutable, hash-chained, signed audit logs on Kafka, archived under S3 Object Lock."""

__version__ = "0.1.0"
