"""``auditseal seal``: run one sealer worker (Faust) with its Prometheus endpoint."""

from __future__ import annotations

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.keys.store import sealer_key_schedule
from pipeline.preflight import check_kafka
from pipeline.sealer.app import SealerConfig, create_app


def run_worker(*, signing_key: str | None, metrics_port: int, config: SealerConfig, loglevel: str = "info",
               metrics_addr: str | None = None) -> None:
    """Start the Faust worker and serve metrics on ``metrics_addr:metrics_port`` (port 0: no endpoint;
    address default ``$AUDITSEAL_METRICS_ADDR`` or 127.0.0.1) until stopped."""
    from faust.worker import Worker

    from pipeline.metrics import serve_metrics

    settings = KafkaSettings.from_env()
    # a PKCS#11 token or key files (pipeline.keys.store); a wrong PIN, module or label stops here, exit 2
    keys = sealer_key_schedule(signing_key)
    check_kafka(settings, [config.raw_topic, config.sealed_topic])  # Faust would retry a bad login forever
    app = create_app(settings, keys, config)
    serve_metrics(metrics_port, metrics_addr)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


