"""The sealer's alerts fire on the series a stalled or tampered chain really shows (``promtool test rules``)."""

from __future__ import annotations

import subprocess

import yaml

from tests.deployment.test_monitoring import ALERTS
from tests.deployment.toolchain import ensure_promtool

CHAIN = "audit.raw/0"


def _test_rules(tmp_path, tests: list[dict]) -> subprocess.CompletedProcess:
    # the shipped rules without their annotations (promtool would compare their rendered text too):
    # what is under test is each rule's expression, duration and labels
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    path = tmp_path / "alert-tests.yml"
    path.write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}))
    return subprocess.run([str(ensure_promtool()), "test", "rules", str(path)], capture_output=True, text=True)


def _fires(alert: str, at: str, labels: dict[str, str]) -> dict:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": labels}] if labels else []}


def test_a_chain_whose_records_wait_unsealed_alerts_and_a_sealing_one_does_not(tmp_path) -> None:
    # issue 14: a chain stalled on one record read lag 0; its lag now grows from the last checkpoint
    stalled = {"interval": "1m", "input_series": [
        {"series": f'auditseal_sealer_consumer_lag{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "0+500x30"},
        {"series": f'auditseal_sealer_events_sealed_total{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "1000x30"},
        {"series": f'auditseal_sealer_chain_fenced_total{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "0+1x30"},
    ], "alert_rule_test": [
        _fires("AuditSealChainStalled", "25m", {"chain": CHAIN, "severity": "critical"}),
        _fires("AuditSealChainFailing", "20m", {"chain": CHAIN, "severity": "critical"}),
    ]}
    sealing = {"interval": "1m", "input_series": [
        {"series": f'auditseal_sealer_consumer_lag{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "20x30"},
        {"series": f'auditseal_sealer_events_sealed_total{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "0+600x30"},
    ], "alert_rule_test": [_fires("AuditSealChainStalled", "25m", {})]}
    result = _test_rules(tmp_path, [stalled, sealing])
    assert result.returncode == 0, result.stdout + result.stderr


def test_stray_records_on_the_sealed_topic_alert(tmp_path) -> None:
    strays = {"interval": "1m", "input_series": [
        {"series": f'auditseal_sealer_stray_records_total{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "0 0 3x20"},
    ], "alert_rule_test": [_fires("AuditSealStrayRecords", "10m", {"chain": CHAIN, "severity": "critical"})]}
    result = _test_rules(tmp_path, [strays])
    assert result.returncode == 0, result.stdout + result.stderr


def test_raw_records_lost_before_sealing_alert(tmp_path) -> None:
    lost = {"interval": "1m", "input_series": [
        {"series": f'auditseal_sealer_gap_offsets_total{{chain="{CHAIN}",cause="lost",job="auditseal-sealer"}}',
         "values": "0 0 10x20"},
        {"series": f'auditseal_sealer_gap_offsets_total{{chain="{CHAIN}",cause="skipped",job="auditseal-sealer"}}',
         "values": "0 0 5x20"},
    ], "alert_rule_test": [_fires("AuditSealRawRecordsLost", "10m", {"chain": CHAIN, "severity": "critical"})]}
    result = _test_rules(tmp_path, [lost])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_would_say_if_an_expected_alert_did_not_fire(tmp_path) -> None:
    quiet = {"interval": "1m", "input_series": [
        {"series": f'auditseal_sealer_stray_records_total{{chain="{CHAIN}",job="auditseal-sealer"}}', "values": "0x20"},
    ], "alert_rule_test": [_fires("AuditSealStrayRecords", "10m", {"chain": CHAIN, "severity": "critical"})]}
    assert _test_rules(tmp_path, [quiet]).returncode != 0


def test_a_reconcile_mismatch_pages_and_a_clean_round_does_not(tmp_path) -> None:
    mismatch = {"interval": "1m", "input_series": [
        {"series": f'auditseal_reconciler_mismatches_total{{chain="{CHAIN}",kind="substituted",job="auditseal-reconciler"}}',
         "values": "0 0 1x20"},
        {"series": 'auditseal_reconciler_last_round_timestamp_seconds{job="auditseal-reconciler"}', "values": "0+60x20"},
    ], "alert_rule_test": [
        _fires("AuditSealReconcileMismatch", "5m", {"chain": CHAIN, "kind": "substituted", "severity": "critical"}),
        _fires("AuditSealReconcilerStalled", "15m", {}),
    ]}
    stalled = {"interval": "1m", "input_series": [
        {"series": 'auditseal_reconciler_last_round_timestamp_seconds{job="auditseal-reconciler"}', "values": "60x20"},
    ], "alert_rule_test": [_fires("AuditSealReconcilerStalled", "15m", {"severity": "warning"})]}
    result = _test_rules(tmp_path, [mismatch, stalled])
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lagging_witness_and_a_refused_history_alert(tmp_path) -> None:
    # issue 16: a witness down for 20 minutes (the lag gauge grows), then back (0); a refusal pages at once
    lagging = {"interval": "1m", "input_series": [
        {"series": f'auditseal_sealer_witness_lag_seconds{{chain="{CHAIN}",job="auditseal-sealer"}}',
         "values": "0+60x20 0x10"},
        {"series": f'auditseal_sealer_witness_refusals_total{{chain="{CHAIN}",witness="w1",job="auditseal-sealer"}}',
         "values": "0x5 1x25"},
    ], "alert_rule_test": [
        _fires("AuditSealWitnessLagging", "18m", {"chain": CHAIN, "severity": "warning"}),
        _fires("AuditSealWitnessLagging", "29m", {}),
        _fires("AuditSealWitnessRefusedHistory", "7m", {"chain": CHAIN, "witness": "w1", "severity": "critical"}),
        _fires("AuditSealWitnessRefusedHistory", "2m", {}),
    ]}
    result = _test_rules(tmp_path, [lagging])
    assert result.returncode == 0, result.stdout + result.stderr
