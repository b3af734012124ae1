"""The Prometheus endpoint of every long-running ``auditseal`` command (namespace ``auditseal_``).

Each command serves ``/metrics`` on ``--metrics-port`` at ``--metrics-addr``, default
``$AUDITSEAL_METRICS_ADDR`` or 127.0.0.1: loopback unless a deployment (a container whose Prometheus
scrapes it over the pod or compose network) says otherwise.
"""

from __future__ import annotations

import os

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
