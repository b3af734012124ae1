"""The local secured stack: Apache Kafka (KRaft, SASL_SSL, ACLs) and an Object-Lock S3 server, no Docker."""
