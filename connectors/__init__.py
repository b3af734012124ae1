"""Connectors that move sealed audit records out of Kafka (the S3 Object Lock sink)."""
