"""The alert rules and the dashboard: valid for Prometheus, and every auditseal_ series they use exists in the code."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from tests.deployment.conftest import CHART, REPO
from tests.deployment.test_agreement import METRICS_PORTS, cli_default, exported_metrics

ALERTS = CHART / "files" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "auditseal-pipeline.json"
SERIES = re.compile(r"\bauditseal_[a-z_]+")


def _promtool_check(promtool, path) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True)


def test_alert_rules_pass_promtool(promtool) -> None:
    result = _promtool_check(promtool, ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_expression(promtool, tmp_path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "sum by (chain) (rate(auditseal_sealer_events_sealed_total[5m]"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(rules))
    assert _promtool_check(promtool, broken).returncode != 0


def _code_series() -> set[str]:
    import connectors.s3sink.metrics as sink_metrics
    import pipeline.detector.app as detector_app
    import pipeline.reconciler.daemon as reconciler_daemon
    import pipeline.sealer.app as sealer_app
    import pipeline.sealer.witnessing as sealer_witnessing

    return (exported_metrics(sealer_app) | exported_metrics(sealer_witnessing) | exported_metrics(sink_metrics) | exported_metrics(detector_app)
            | exported_metrics(reconciler_daemon))


def _alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


@pytest.mark.parametrize("source", [_alert_expressions, _dashboard_expressions], ids=["alerts", "dashboard"])
def test_every_series_used_is_exported_by_the_code(source) -> None:
    used = {name for expr in source() for name in SERIES.findall(expr)}
    assert used and used <= _code_series(), sorted(used - _code_series())


def test_the_issue_s_alerts_are_all_there() -> None:
    expressions = " ".join(_alert_expressions())
    for series in ("auditseal_sealer_consumer_lag", "auditseal_sink_lag_records", "auditseal_sealer_chain_fenced_total",
                   "auditseal_sink_retries_total", "process_start_time_seconds", "kube_job_status_failed",
                   'auditseal_detector_alerts_total{rule="verification_failure"}', "auditseal_detector_alerts_total",
                   "auditseal_sealer_events_sealed_total"):
        assert series in expressions, series


def test_dashboard_shows_every_stage() -> None:
    expressions = " ".join(_dashboard_expressions())
    for prefix in ("auditseal_sealer_", "auditseal_sink_", "auditseal_detector_access_events_total",
                   "auditseal_detector_alerts_total"):
        assert prefix in expressions, prefix


def test_detector_metrics_port_is_the_deployed_one() -> None:
    assert cli_default("detect", "metrics_port") == METRICS_PORTS["detector"]
