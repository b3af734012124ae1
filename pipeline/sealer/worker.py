"""``auditseal seal``: run one sealer worker (Faust) with its Prometheus endpoint."""

from __future__ import annotations

import os

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.integrity.keyring import load_signing_key
from pipeline.preflight import check_kafka
from pipeline.sealer.app import SealerConfig, create_app

SIGNING_KEY_VARIABLE = "AUDITSEAL_SIGNING_KEY"


def signing_key_path(explicit: str | None = None) -> str:
    """The sealer's private key file: ``--signing-key`` or ``$AUDITSEAL_SIGNING_KEY``."""
    path = explicit or os.environ.get(SIGNING_KEY_VARIABLE)
    if not path:
        raise ConfigError(f"no signing key: pass --signing-key or set {SIGNING_KEY_VARIABLE} "
                          "(`auditseal dev env --role sealer` sets it for the local stack)")
    return path


def run_worker(*, signing_key: str | None, metrics_port: int, config: SealerConfig, loglevel: str = "info",
               metrics_addr: str | None = None) -> None:
    """Start the Faust worker and serve metrics on ``metrics_addr:metrics_port`` (port 0: no endpoint;
    address default ``$AUDITSEAL_METRICS_ADDR`` or 127.0.0.1) until stopped."""
    from faust.worker import Worker

    from pipeline.metrics import serve_metrics

    settings = KafkaSettings.from_env()
    key = load_signing_key(signing_key_path(signing_key))
    check_kafka(settings, [config.raw_topic, config.sealed_topic])  # Faust would retry a bad login forever
    app = create_app(settings, key, config)
    serve_metrics(metrics_port, metrics_addr)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


