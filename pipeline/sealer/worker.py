"""``auditseal seal``: run one sealer worker (Faust) with its Prometheus endpoint."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.keys.store import sealer_key_schedule
from pipeline.sealer.app import SealerConfig, create_app

STATE_DIR_VARIABLE = "AUDITSEAL_STATE_DIR"


def state_dir(explicit: str | None = None) -> Path:
    """Where a worker keeps its local state (Faust's data folder): ``--state-dir``,
    ``$AUDITSEAL_STATE_DIR``, or ``$XDG_STATE_HOME/auditseal`` (default ``~/.local/state/auditseal``);
    never the working directory."""
    chosen = explicit or os.environ.get(STATE_DIR_VARIABLE)
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "auditseal"


def run_worker(*, signing_key: str | None, metrics_port: int, config: SealerConfig, loglevel: str = "info",
               metrics_addr: str | None = None, state: str | None = None) -> None:
    """Check the setup (:mod:`pipeline.sealer.preflight`), then start the Faust worker and serve metrics
    on ``metrics_addr:metrics_port`` (port 0: no endpoint; address default ``$AUDITSEAL_METRICS_ADDR``
    or 127.0.0.1) until stopped; Faust's data folder is under :func:`state_dir`."""
    from faust.worker import Worker

    from pipeline.metrics import serve_metrics
    from pipeline.sealer.preflight import check_sealer_setup

    settings = KafkaSettings.from_env()
    # a PKCS#11 token or key files (pipeline.keys.store); a wrong PIN, module or label stops here, exit 2
    keys = sealer_key_schedule(signing_key)
    datadir = state_dir(state) / "sealer" / config.app_id
    try:
        datadir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"state folder {datadir}: {exc.strerror} (set --state-dir or ${STATE_DIR_VARIABLE})") from None
    check_sealer_setup(settings, config)  # Faust would retry a bad login forever
    app = create_app(settings, keys, config, str(datadir))
    serve_metrics(metrics_port, metrics_addr)
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()


