"""The chart, the compose file and `auditseal dev up` agree on topics, roles and ports.

The source of truth is the code `dev up` runs: pipeline.permissions.topology (topics), config/roles.yaml (roles),
pipeline.dev.stack.DEFAULT_PORTS and the CLI's defaults (ports).
"""

from __future__ import annotations

import argparse
import re
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.cli.main import build_parser
from pipeline.dev.stack import DEFAULT_PORTS
from pipeline.permissions.topology import BUCKET, role_names
from pipeline.wire.topics import ALERTS_TOPIC, ORIGIN_TOPICS, RAW_TOPIC, SEALED_TOPIC, TOPICS
from tests.deployment.conftest import CHART, REPO, documents
from tests.deployment.test_compose import compose, load_provisioner
from tests.deployment.test_helm_chart import pod_specs

# The chart's workloads and compose's services, and the role each authenticates as.
WORKLOAD_ROLES = {"sealer": "sealer", "sink": "sink", "access-auditor": "access-auditor", "verifier": "verifier",
                  "detector": "detector", "siem-bridge": "siem-bridge"}
# The detector's role arrives with the monitoring issue; until then it is off in the chart and behind a
# profile in compose, and it is the one workload allowed a role the roles file does not have yet.
PENDING_ROLES = {"detector"} - set(role_names())
METRICS_PORTS = {"sealer": 9464, "sink": 9465, "detector": 9466, "siem-bridge": 9467, "reconciler": 9468}


def cli_default(command: str, dest: str):
    """The default of option ``dest`` of ``auditseal COMMAND``; skips while the command is not in the CLI."""
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if command not in subcommands.choices:
        pytest.skip(f"`auditseal {command}` is not in the command line yet")
    return subcommands.choices[command].get_default(dest)


def chart_values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def container(rendered: str, workload: str) -> dict:
    return pod_specs(rendered)[f"auditseal-{workload}"]["containers"][0]


def env_of(spec: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in spec.get("env", [])}


# --- topics --------------------------------------------------------------------------------------------------

def test_chart_topics_are_the_dev_stack_topics() -> None:
    topics = chart_values()["topics"]
    assert {(t["name"], t["partitions"]) for t in topics.values()} == {(t.name, t.partitions) for t in TOPICS}
    assert (topics["raw"]["name"], topics["sealed"]["name"], topics["alerts"]["name"]) == (
        RAW_TOPIC, SEALED_TOPIC, ALERTS_TOPIC)


def test_chart_sealer_reads_and_writes_the_audit_topics(rendered: dict[str, str]) -> None:
    args = container(rendered["default"], "sealer")["args"]
    assert f"--raw-topic={RAW_TOPIC}" in args and f"--sealed-topic={SEALED_TOPIC}" in args
    assert f"--topic={SEALED_TOPIC}" in container(rendered["default"], "sink")["args"]


def test_compose_services_rely_on_cli_topic_defaults_that_are_the_audit_topics() -> None:
    assert (cli_default("seal", "raw_topic"), cli_default("seal", "sealed_topic")) == (RAW_TOPIC, SEALED_TOPIC)
    assert cli_default("sink", "topic") == SEALED_TOPIC


def test_compose_uses_the_dev_stack_topics_and_bucket() -> None:
    for name, service in compose()["services"].items():
        command = " ".join(service.get("command", []))
        # compose relies on the CLI defaults (the topology's names); an override must name the same topics
        for topic in re.findall(r"audit\.[a-z.]+", command):
            assert topic in {t.name for t in TOPICS}, (name, topic)
        for bucket in re.findall(r"s3://([^/\s]+)", command):
            assert bucket == BUCKET, name
    # the setup job creates them with dev up's own code
    provision = (REPO / "deploy" / "compose" / "provision.py").read_text()
    assert "provision_kafka(" in provision and "provision_s3(" in provision
    assert chart_values()["s3"]["bucket"] == BUCKET


# --- roles ---------------------------------------------------------------------------------------------------

def test_chart_workloads_authenticate_as_roles_of_the_roles_file(rendered: dict[str, str]) -> None:
    values = chart_values()
    keys = {"sealer": "sealer", "sink": "sink", "access-auditor": "accessAuditor", "verifier": "verifier",
            "detector": "detector", "siem-bridge": "siemBridge"}
    for workload, role in WORKLOAD_ROLES.items():
        assert values[keys[workload]]["credentials"]["username"] == role
        assert role in role_names() or role in PENDING_ROLES, role
    for name in ("default", "production"):
        for workload, spec in pod_specs(rendered[name]).items():
            username = env_of(spec["containers"][0])["AUDITSEAL_SASL_USERNAME"]
            assert username in role_names(), (name, workload, username)


def test_compose_services_use_the_roles_of_the_roles_file() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and volume["target"] == "/run/auditseal":
                role = volume["volume"]["subpath"].removeprefix("roles/")
                if name in WORKLOAD_ROLES:
                    assert role == WORKLOAD_ROLES[name], name
                if role in PENDING_ROLES:
                    assert service.get("profiles"), f"{name}: role {role} is not in the roles file yet"
                else:
                    assert role in role_names(), (name, role)


# --- ports ---------------------------------------------------------------------------------------------------

def test_kafka_ports_agree() -> None:
    client, internal, controller = (DEFAULT_PORTS[k] for k in ("kafka_client", "kafka_internal", "kafka_controller"))
    # chart: the default bootstrap is the compose broker
    assert chart_values()["kafka"]["bootstrap"] == f"kafka:{client}"
    # compose: the broker's listeners, as the init job writes them, and what it publishes
    properties = dict(line.split("=", 1) for line in load_provisioner().kafka_properties().splitlines())
    assert properties["listeners"] == (f"CLIENT://0.0.0.0:{client},INTERNAL://0.0.0.0:{internal},"
                                       f"CONTROLLER://0.0.0.0:{controller}")
    assert properties["listener.security.protocol.map"] == "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    assert properties["advertised.listeners"] == f"CLIENT://kafka:{client},INTERNAL://kafka:{internal}"
    kafka = compose()["services"]["kafka"]
    # the official image plus the principal builder (deploy/compose/kafka.Dockerfile)
    assert kafka["image"] == "auditseal/kafka:4.4.0"
    assert set(kafka["expose"]) == {str(client), str(internal), str(controller)}
    assert kafka["ports"] == [f"127.0.0.1:{client}:{client}"]
    assert f"/{client}" in kafka["healthcheck"]["test"][-1]
    assert load_provisioner().role_env("sealer", _fake_credentials())["AUDITSEAL_BOOTSTRAP"] == f"kafka:{client}"


def test_s3_ports_agree() -> None:
    port = DEFAULT_PORTS["s3"]
    assert urlsplit(chart_values()["s3"]["endpoint"]).port == port
    s3 = compose()["services"]["s3"]
    assert s3["image"] == "versity/versitygw:v1.8.0"
    assert f"--port :{port}" in s3["entrypoint"][-1]
    assert s3["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert load_provisioner().role_env("sink", _fake_credentials())["AWS_ENDPOINT_URL"] == f"https://s3:{port}"


def test_versions_agree_with_the_dev_stack() -> None:
    from pipeline.dev.kafka import KAFKA_VERSION
    from pipeline.dev.s3server import VERSITYGW_VERSION

    services = compose()["services"]
    assert services["kafka"]["image"] == f"auditseal/kafka:{KAFKA_VERSION}"
    dockerfile = (REPO / services["kafka"]["build"]["dockerfile"]).read_text()
    assert f"ARG KAFKA_IMAGE=apache/kafka:{KAFKA_VERSION}\n" in dockerfile
    assert services["s3"]["image"] == services["s3-tools"]["image"] == f"versity/versitygw:{VERSITYGW_VERSION}"


def test_cli_metrics_ports_are_the_deployed_ones() -> None:
    assert cli_default("seal", "metrics_port") == METRICS_PORTS["sealer"]
    assert cli_default("sink", "metrics_port") == METRICS_PORTS["sink"]
    assert cli_default("siem-bridge", "metrics_port") == METRICS_PORTS["siem-bridge"]
    assert cli_default("reconcile", "metrics_port") == METRICS_PORTS["reconciler"]


def test_metrics_ports_agree(rendered: dict[str, str]) -> None:
    values = chart_values()
    services = compose()["services"]
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    scraped = {job["job_name"].removeprefix("auditseal-"): job["dns_sd_configs"][0]["port"]
               for job in scrape["scrape_configs"] if job["job_name"].startswith("auditseal-")}
    assert scraped == METRICS_PORTS
    value_keys = {"siem-bridge": "siemBridge"}
    for workload, port in METRICS_PORTS.items():
        assert values[value_keys.get(workload, workload)]["metricsPort"] == port, workload
        assert services[workload]["command"][-2:] == ["--metrics-port", str(port)], workload
        assert services[workload]["expose"] == [str(port)], workload
    everything = rendered["everything"]
    for workload, port in METRICS_PORTS.items():
        assert container(everything, workload)["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    services_ports = {d["metadata"]["name"]: d["spec"]["ports"][0]["port"] for d in documents(everything)
                      if d["kind"] == "Service"}
    origin_ports = {f"auditseal-{kind}-{topic.removeprefix('audit.')}-metrics": METRICS_PORTS[kind]
                    for kind in ("sealer", "sink") for topic in ORIGIN_TOPICS}
    assert services_ports == {f"auditseal-{w}-metrics": p for w, p in METRICS_PORTS.items()} | origin_ports


def test_chart_and_compose_seal_and_archive_each_origin_alike(rendered: dict[str, str]) -> None:
    # the same per-origin sealers and sinks (topics, app ids, groups) in both, for every origin topic
    services = compose()["services"]
    specs = pod_specs(rendered["default"])
    for topic in ORIGIN_TOPICS:
        origin = topic.removeprefix("audit.")
        for kind in ("sealer", "sink"):
            command = services[f"{kind}-{origin}"]["command"]
            flags = dict(zip(command[1::2], command[2::2], strict=False))
            args = specs[f"auditseal-{kind}-{origin}"]["containers"][0]["args"]
            chart = dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--") and "=" in a)
            for flag, value in flags.items():
                assert chart.get(flag.removeprefix("--")) == value, (kind, origin, flag)


# --- alerts --------------------------------------------------------------------------------------------------

def exported_metrics(module) -> set[str]:
    """The series names of the prometheus_client metrics a module defines."""
    from prometheus_client import Counter, Gauge, Histogram

    from pipeline.metrics import BatchHistogram

    names = set()
    for metric in vars(module).values():
        if isinstance(metric, BatchHistogram):
            names |= {f"{metric.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        elif isinstance(metric, Counter):
            names.add(f"{metric._name}_total")
        elif isinstance(metric, Histogram):
            names |= {f"{metric._name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        elif isinstance(metric, Gauge):
            names.add(metric._name)
    return names


def alert_metrics(prefix: str) -> set[str]:
    alerts = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    expressions = " ".join(rule["expr"] for group in alerts["groups"] for rule in group["rules"])
    return set(re.findall(rf"{prefix}[a-z_]+", expressions))


def test_sealer_alerts_use_metrics_the_sealer_exports() -> None:
    import pipeline.sealer.app as sealer_app
    import pipeline.sealer.witnessing as sealer_witnessing

    exported = exported_metrics(sealer_app) | exported_metrics(sealer_witnessing)
    used = alert_metrics("auditseal_sealer_")
    assert used and used <= exported, used - exported


def test_sink_alerts_use_metrics_the_sink_exports() -> None:
    sink_metrics = pytest.importorskip("connectors.s3sink.metrics", reason="the S3 sink has not landed yet")
    used = alert_metrics("auditseal_sink_")
    assert used and used <= exported_metrics(sink_metrics), used - exported_metrics(sink_metrics)


def _fake_credentials():
    from pipeline.dev.stack import Credentials

    return Credentials.generate()


def test_chart_compose_and_cli_witness_at_the_same_default_interval() -> None:
    from pipeline.sealer.witnessing import DEFAULT_WITNESS_INTERVAL_S

    chart = chart_values()["sealer"]["witness"]
    environment = compose()["services"]["sealer"]["environment"]
    assert cli_default("seal", "witness_interval") == DEFAULT_WITNESS_INTERVAL_S == chart["interval"]
    assert environment["AUDITSEAL_SEALER_WITNESS_INTERVAL"] == f"${{AUDITSEAL_WITNESS_INTERVAL:-{chart['interval']:g}}}"
