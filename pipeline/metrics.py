"""The Prometheus endpoint of every long-running ``auditseal`` command (namespace ``auditseal_``).

Each command serves ``/metrics`` on ``--metrics-port`` at ``--metrics-addr``, default
``$AUDITSEAL_METRICS_ADDR`` or 127.0.0.1: loopback unless a deployment (a container whose Prometheus
scrapes it over the pod or compose network) says otherwise.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import REGISTRY, CollectorRegistry, HistogramMetricFamily, Metric

METRICS_ADDR_VARIABLE = "AUDITSEAL_METRICS_ADDR"
DEFAULT_METRICS_ADDR = "127.0.0.1"


def metrics_addr(explicit: str | None = None) -> str:
    """The address to bind: ``explicit``, else ``$AUDITSEAL_METRICS_ADDR``, else 127.0.0.1."""
    return explicit or os.environ.get(METRICS_ADDR_VARIABLE) or DEFAULT_METRICS_ADDR


def serve_metrics(port: int, addr: str | None = None) -> None:
    """Serve the process's metrics on ``addr:port`` in a daemon thread; port 0 serves nothing."""
    if not port:
        return
    from prometheus_client import start_http_server

    start_http_server(port, addr=metrics_addr(addr))


class BatchHistogram:
    """A Prometheus histogram fed a batch of observations at once: one lock per batch, not per value.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets per value, ~1.5 µs,
    as much as sealing an event. Exposed exactly like a ``Histogram`` of the same name and
    buckets (``_bucket{le=...}``, ``_count``, ``_sum``, ``_created``), through the public
    custom-collector API.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: buckets must be distinct and increasing, found {list(buckets)}")
        self.name = name
        self.documentation = documentation
        self._upper = (*(float(bound) for bound in buckets if bound != math.inf), math.inf)
        self._counts = [0] * len(self._upper)
        self._sum = 0.0
        self._created = time.time()
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Count every value of ``values`` (in seconds, or whatever the unit of the buckets is)."""
        values = values if isinstance(values, list) else list(values)
        upper = self._upper
        indexes = [bisect_left(upper, value) for value in values]
        total = math.fsum(values)
        with self._lock:
            counts = self._counts
            for index in indexes:
                counts[index] += 1
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        """The histogram's samples, cumulative per bucket as Prometheus expects."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip(self._upper, counts, strict=False):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        family = HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)
        family.add_sample(f"{self.name}_created", {}, self._created)
        yield family

    def describe(self) -> Iterator[Metric]:
        """Registration-time description (no samples), so the registry can check name clashes."""
        yield HistogramMetricFamily(self.name, self.documentation)
