"""Prometheus metrics of the sink (namespace ``auditseal_sink_``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OBJECTS = Counter("auditseal_sink_objects_total",
                  "Archive objects written, locked, read back and committed (their manifests not counted)", ["topic"])
BYTES = Counter("auditseal_sink_bytes_total", "Bytes of committed archive objects as stored (compressed, encrypted)",
                ["topic"])
RECORDS = Counter("auditseal_sink_records_total", "Kafka records archived and committed", ["topic"])
FLUSH_LATENCY = Histogram("auditseal_sink_flush_latency_seconds",
                          "From a batch closing to its offsets committed: build, write, lock read-back, commit",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
RETRIES = Counter("auditseal_sink_retries_total", "S3 requests retried after a transient failure", ["operation"])
LAG = Gauge("auditseal_sink_lag_records",
            "Records of a partition not yet archived and committed (not consumed yet + consumed, not committed)",
            ["topic", "partition"])
