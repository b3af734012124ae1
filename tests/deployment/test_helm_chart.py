"""The helm chart: lint, render, Kubernetes schemas, and the security and scaling rules it promises."""

from __future__ import annotations

import re

import pytest
import yaml

from pipeline.wire.topics import ORIGIN_TOPICS, TOPICS, sealed_topic_of
from tests.deployment.conftest import CHART, PRODUCTION_VALUES, Helm, documents

WORKLOAD_KINDS = ("Deployment", "CronJob")
# the origin topics, each sealed and archived by workloads of its own: audit.access -> "access"
ORIGINS = tuple(topic.removeprefix("audit.") for topic in ORIGIN_TOPICS)


def pod_specs(manifests: str) -> dict[str, dict]:
    """Pod specs of every workload, by object name."""
    specs = {}
    for document in documents(manifests):
        if document["kind"] == "Deployment":
            specs[document["metadata"]["name"]] = document["spec"]["template"]["spec"]
        elif document["kind"] == "CronJob":
            specs[document["metadata"]["name"]] = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def of_kind(manifests: str, kind: str) -> list[dict]:
    return [d for d in documents(manifests) if d["kind"] == kind]


@pytest.mark.parametrize("values", [[], ["-f", str(PRODUCTION_VALUES)]], ids=["default", "production"])
def test_helm_lint_passes(helm: Helm, values: list[str]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["default", "production", "everything"])
def test_rendered_manifests_match_the_kubernetes_schemas(rendered: dict[str, str], validate_manifests, name: str) -> None:
    assert validate_manifests(rendered[name]) == []


def test_schema_validation_reports_a_misspelt_field(rendered: dict[str, str], validate_manifests) -> None:
    broken = rendered["everything"].replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1)
    broken = broken.replace("scrapeTimeout:", "scrapeTimeOut:", 1)
    problems = validate_manifests(broken)
    assert any("readOnlyRootFileSystem" in p["error"] for p in problems), problems
    assert any(p["kind"] == "ServiceMonitor" and "scrapeTimeOut" in p["error"] for p in problems), problems


@pytest.mark.parametrize("name", ["default", "production", "everything"])
def test_every_pod_runs_hardened_with_resources(rendered: dict[str, str], name: str) -> None:
    specs = pod_specs(rendered[name])
    assert specs
    for workload, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, workload
        assert spec["automountServiceAccountToken"] is False, workload
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{workload}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where


def test_all_workloads_render_with_everything_on(rendered: dict[str, str]) -> None:
    names = set(pod_specs(rendered["everything"]))
    assert names == {"auditseal-sealer", "auditseal-sink", "auditseal-detector", "auditseal-verifier",
                     "auditseal-access-auditor-broker-0", "auditseal-siem-bridge", "auditseal-reconciler",
                     *(f"auditseal-{kind}-{origin}" for kind in ("sealer", "sink") for origin in ORIGINS)}
    kinds = {d["kind"] for d in documents(rendered["everything"])}
    assert {"Secret", "ConfigMap", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "PodDisruptionBudget",
            "PersistentVolumeClaim", "ServiceAccount", "Service"} <= kinds


def test_private_keys_reach_only_their_workload_owner_only(rendered: dict[str, str]) -> None:
    # the signing key only to the sealer, the archive master key only to the sink; both copied by an init
    # container into memory with mode 0400 (the commands refuse a group-readable key)
    keys = {"auditseal-sealer": ("AUDITSEAL_SIGNING_KEY", "auditseal-signing-key", "signing-key"),
            "auditseal-sink": ("AUDITSEAL_MASTER_KEY", "auditseal-master-key", "master-key"),
            # the reconciler's attestation key: its own, never the sealer's
            "auditseal-reconciler": ("AUDITSEAL_RECONCILER_KEY", "auditseal-reconciler-key", "reconciler-key")}
    for name, spec in pod_specs(rendered["everything"]).items():
        # an origin's sealer and sink hold what the main sealer and sink hold, nothing else
        workload = next((w for w in ("auditseal-sealer", "auditseal-sink")
                         if name in {w, *(f"{w}-{origin}" for origin in ORIGINS)}), name)
        env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
        secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        others = {variable for variable, _, _ in keys.values()} - ({keys[workload][0]} if workload in keys else set())
        assert not others & set(env), workload
        if workload not in keys:
            assert not secrets, workload
            continue
        variable, secret, name = keys[workload]
        assert secrets == {secret}, workload
        assert env[variable] == f"/run/auditseal/{name}/{name}.pem"
        (init,) = spec["initContainers"]
        assert init["command"][:3] == ["install", "-m", "0400"] and init["command"][-1] == env[variable]
        memory = next(v for v in spec["volumes"] if v["name"] == name)
        assert memory["emptyDir"]["medium"] == "Memory"


def test_secrets_come_from_existing_secrets_in_production(rendered: dict[str, str]) -> None:
    assert of_kind(rendered["production"], "Secret") == []
    refs = {e["valueFrom"]["secretKeyRef"]["name"]
            for spec in pod_specs(rendered["production"]).values()
            for c in spec["containers"] for e in c["env"] if "valueFrom" in e}
    assert refs == {"auditseal-sealer-scram", "auditseal-sink-credentials", "auditseal-access-auditor-scram",
                    "auditseal-verifier-credentials", "auditseal-hsm-pin", "auditseal-reconciler-scram"}


def test_sealer_replicas_beyond_the_raw_partitions_are_refused(helm: Helm) -> None:
    result = helm.run("template", "auditseal", str(CHART), "--set", "sealer.replicas=7")
    assert result.returncode != 0
    assert "sealer.replicas (7) exceeds the partitions of audit.raw (6)" in result.stderr


def test_siem_bridge_beyond_the_sealed_partitions_or_a_smaller_ocsf_topic_is_refused(helm: Helm) -> None:
    result = helm.run("template", "auditseal", str(CHART), "--set", "siemBridge.enabled=true",
                      "--set", "siemBridge.replicas=7")
    assert result.returncode != 0
    assert "siemBridge.replicas (7) exceeds the partitions of audit.sealed (6)" in result.stderr
    # the bridge writes sealed partition p to OCSF partition p
    result = helm.run("template", "auditseal", str(CHART), "--set", "siemBridge.enabled=true",
                      "--set", "topics.ocsf.partitions=3")
    assert result.returncode != 0
    assert "topics.ocsf.partitions (3) is below topics.sealed.partitions (6)" in result.stderr


def test_each_siem_bridge_pod_has_its_own_transactional_id(rendered: dict[str, str]) -> None:
    spec = pod_specs(rendered["everything"])["auditseal-siem-bridge"]["containers"][0]
    assert "--instance-id=$(POD_NAME)" in spec["args"] and "--app-id=auditseal-ocsf-bridge" in spec["args"]
    pod_name = next(e for e in spec["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert spec["env"].index(pod_name) == 0  # $(POD_NAME) expands only from variables defined before it


def test_a_workload_without_credentials_is_refused(helm: Helm) -> None:
    result = helm.run("template", "auditseal", str(CHART), "--set", "sink.credentials.existingSecret=")
    assert result.returncode != 0
    assert "sink.credentials: set password" in result.stderr


def test_a_misspelt_value_is_refused_by_the_values_schema(helm: Helm) -> None:
    # a typo must not silently leave a safety default in place (values.schema.json, additionalProperties)
    result = helm.run("template", "auditseal", str(CHART), "--set", "networkPolicy.enable=false")
    assert result.returncode != 0
    assert "additional properties 'enable' not allowed" in result.stderr


def test_network_policies_allow_only_dns_kafka_s3_and_metrics(rendered: dict[str, str]) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(rendered["production"], "NetworkPolicy")}
    expected_egress = {  # ports per workload: DNS, the brokers' 9093, AWS S3's 443, the witnesses' 443 (sealers)
        "auditseal-sealer": {53, 9093, 443}, "auditseal-sink": {53, 9093, 443},
        "auditseal-access-auditor": {53, 9093}, "auditseal-verifier": {53, 9093, 443},
        "auditseal-reconciler": {53, 9093},
        **{f"auditseal-sealer-{origin}": {53, 9093, 443} for origin in ORIGINS},
        **{f"auditseal-sink-{origin}": {53, 9093, 443} for origin in ORIGINS},
    }
    assert set(policies) == set(expected_egress)
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert {p["port"] for rule in spec["egress"] for p in rule["ports"]} == expected_egress[name], name
        assert all(rule.get("to") for rule in spec["egress"]), f"{name}: an egress rule open to any address"
        ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
        metrics = {"auditseal-sealer": {9464}, "auditseal-sink": {9465}, "auditseal-reconciler": {9468},
                   **{f"auditseal-sealer-{origin}": {9464} for origin in ORIGINS},
                   **{f"auditseal-sink-{origin}": {9465} for origin in ORIGINS}}
        assert ingress_ports == metrics.get(name, set()), name
        # each policy selects exactly its own workload's pods
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == name.removeprefix("auditseal-")


def test_prometheus_rule_carries_the_alerts_file(rendered: dict[str, str]) -> None:
    (rule,) = of_kind(rendered["production"], "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


HSM_VALUES = ["--set", "sealer.pkcs11.module=/opt/hsm/lib/libpkcs11.so", "--set", "sealer.pkcs11.token=audit",
              "--set", "sealer.pkcs11.pinSecret=auditseal-hsm-pin",
              "--set", "sealer.pkcs11.volumes[0].name=hsm", "--set", "sealer.pkcs11.volumes[0].emptyDir.medium=Memory",
              "--set", "sealer.pkcs11.volumeMounts[0].name=hsm",
              "--set", "sealer.pkcs11.volumeMounts[0].mountPath=/opt/hsm"]


def test_the_sealer_signs_through_a_pkcs11_module_when_one_is_given(helm: Helm, validate_manifests) -> None:
    manifests = helm.template(*HSM_VALUES)
    assert validate_manifests(manifests) == []
    spec = pod_specs(manifests)["auditseal-sealer"]
    (container,) = spec["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AUDITSEAL_PKCS11_MODULE"]["value"] == "/opt/hsm/lib/libpkcs11.so"
    assert env["AUDITSEAL_PKCS11_TOKEN"]["value"] == "audit"
    assert env["AUDITSEAL_SIGNING_KEY_LABEL"]["value"] == "auditseal-sealer"
    assert env["AUDITSEAL_PKCS11_PIN"]["valueFrom"]["secretKeyRef"] == {"name": "auditseal-hsm-pin", "key": "pin"}
    assert "AUDITSEAL_SIGNING_KEY" not in env and "AUDITSEAL_KEYRING" in env, "no key file; the keyring it follows"
    assert "initContainers" not in spec, "no key file to copy"
    assert not any(v.get("secret", {}).get("secretName") == "auditseal-signing-key" for v in spec["volumes"])
    assert {"name": "hsm", "mountPath": "/opt/hsm"} in container["volumeMounts"]
    # the production example keeps the key in an HSM too
    production = pod_specs(helm.template("-f", str(PRODUCTION_VALUES)))["auditseal-sealer"]
    production_env = {e["name"] for c in production["containers"] for e in c["env"]}
    assert "AUDITSEAL_PKCS11_MODULE" in production_env and "AUDITSEAL_SIGNING_KEY" not in production_env


def test_a_pkcs11_module_without_token_or_pin_is_refused(helm: Helm) -> None:
    result = helm.run("template", "auditseal", str(CHART), "--set", "sealer.pkcs11.module=/opt/hsm/lib.so")
    assert result.returncode != 0 and "sealer.pkcs11.token" in result.stderr
    result = helm.run("template", "auditseal", str(CHART), "--set", "sealer.pkcs11.module=/opt/hsm/lib.so",
                      "--set", "sealer.pkcs11.token=audit")
    assert result.returncode != 0 and "sealer.pkcs11.pinSecret" in result.stderr


@pytest.mark.parametrize("name", ["default", "production"])
def test_the_verifier_job_delivers_its_record_as_itself_to_its_own_topic(rendered: dict[str, str], name: str) -> None:
    # the Job's spool is its scratch folder, which no access auditor reads: it writes its record to
    # audit.verification, which only it may write, with its own credential (issue 15), never the auditor's
    spec = pod_specs(rendered[name])["auditseal-verifier"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["AUDITSEAL_VERIFICATION_RECORD"]["value"] == "kafka"
    assert env["AUDITSEAL_SASL_USERNAME"]["value"] == "verifier"
    assert not [n for n in env if n.startswith("AUDITSEAL_ACCESS_RECORD_")]
    auditor = next(s for n, s in pod_specs(rendered[name]).items() if n.startswith("auditseal-access-auditor"))
    auditor_secret = {e["name"]: e for e in auditor["containers"][0]["env"]}["AUDITSEAL_SASL_PASSWORD"]
    assert env["AUDITSEAL_SASL_PASSWORD"]["valueFrom"] != auditor_secret["valueFrom"]


@pytest.mark.parametrize("name", ["default", "production", "everything"])
def test_the_reconciler_runs_as_itself_with_its_own_key(rendered: dict[str, str], name: str) -> None:
    spec = pod_specs(rendered[name])["auditseal-reconciler"]
    container = spec["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["args"][0] == "reconcile" and env["AUDITSEAL_SASL_USERNAME"]["value"] == "reconciler"
    assert env["AUDITSEAL_RECONCILER_KEY"]["value"] == "/run/auditseal/reconciler-key/reconciler-key.pem"
    secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    sealer = pod_specs(rendered[name])["auditseal-sealer"]
    assert not secrets & {v["secret"]["secretName"] for v in sealer["volumes"] if "secret" in v}
    assert "AUDITSEAL_SIGNING_KEY" not in env


@pytest.mark.parametrize("name", ["default", "production", "everything"])
def test_each_origin_topic_is_sealed_and_archived_by_workloads_of_its_own(rendered: dict[str, str], name: str) -> None:
    # issue 15: an origin's chains are sealed by a sealer of its own into its twin, archived by a sink of its own
    specs = pod_specs(rendered[name])
    deployments = {d["metadata"]["name"]: d for d in of_kind(rendered[name], "Deployment")}
    partitions = {t.name: t.partitions for t in TOPICS}
    main_sealer, main_sink = specs["auditseal-sealer"]["containers"][0], specs["auditseal-sink"]["containers"][0]
    for origin, topic in zip(ORIGINS, ORIGIN_TOPICS, strict=True):
        sealed = sealed_topic_of(topic)
        sealer = specs[f"auditseal-sealer-{origin}"]["containers"][0]
        assert sealer["args"][:4] == ["seal", f"--raw-topic={topic}", f"--sealed-topic={sealed}",
                                      f"--app-id=auditseal-sealer-{origin}"], (name, origin)
        sink = specs[f"auditseal-sink-{origin}"]["containers"][0]
        assert sink["args"][:3] == ["sink", f"--topic={sealed}", f"--group=auditseal-sink-{origin}"], (name, origin)
        # the same roles, keys and environment as the main workloads: only the topics differ
        assert sealer["env"] == main_sealer["env"] and sink["env"] == main_sink["env"], (name, origin)
        assert sealer["args"][4:] == main_sealer["args"][4:] and sink["args"][3:] == main_sink["args"][3:]
        assert (specs[f"auditseal-sealer-{origin}"]["volumes"], specs[f"auditseal-sink-{origin}"]["volumes"]) == (
            specs["auditseal-sealer"]["volumes"], specs["auditseal-sink"]["volumes"])
        for kind in ("sealer", "sink"):
            deployment = deployments[f"auditseal-{kind}-{origin}"]
            assert 1 == deployment["spec"]["replicas"] <= partitions[topic]
            assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == f"{kind}-{origin}"


def test_origin_workloads_are_scraped_and_covered_by_the_alerts(rendered: dict[str, str]) -> None:
    services = {d["metadata"]["name"]: d for d in of_kind(rendered["everything"], "Service")}
    (monitor,) = of_kind(rendered["everything"], "ServiceMonitor")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yml").read_text())
    down = next(r for g in alerts["groups"] for r in g["rules"] if r["expr"].startswith("up{"))
    job_pattern = re.search(r'job=~"([^"]+)"', down["expr"]).group(1)
    for origin in ORIGINS:
        for kind, port in (("sealer", 9464), ("sink", 9465)):
            service = services[f"auditseal-{kind}-{origin}-metrics"]
            labels = service["metadata"]["labels"]
            assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items()), service
            assert service["spec"]["selector"]["app.kubernetes.io/component"] == f"{kind}-{origin}"
            assert service["spec"]["ports"][0]["port"] == port
            # the ServiceMonitor's job label is the Service's name: the "target down" alert covers it
            assert re.fullmatch(job_pattern, service["metadata"]["name"]), (job_pattern, service["metadata"]["name"])


def test_origin_replicas_beyond_the_topic_partitions_are_refused(helm: Helm) -> None:
    origins = yaml.safe_load((CHART / "values.yaml").read_text())["origins"]
    too_many = helm.values_file("too-many", {"origins": [dict(o, replicas=2) if o["name"] == "detection" else o
                                                         for o in origins]})
    result = helm.run("template", "auditseal", str(CHART), "-f", str(too_many))
    assert result.returncode != 0
    # the sealer (of audit.detection) or the sink (of audit.sealed.detection), whichever template renders first
    assert re.search(r"origins\[detection\]\.replicas \(2\) exceeds the partitions of audit\.(sealed\.)?detection "
                     r"\(1\)", result.stderr), result.stderr
    unknown = helm.values_file("unknown", {"origins": [dict(origins[0], sealed="sealedNothing")]})
    result = helm.run("template", "auditseal", str(CHART), "-f", str(unknown))
    assert result.returncode != 0 and "origins: access: no topics.sealedNothing" in result.stderr


def test_no_origins_leaves_only_the_main_sealer_and_sink(helm: Helm) -> None:
    specs = pod_specs(helm.template("--set", "origins=null"))
    assert not [n for n in specs if n.startswith(("auditseal-sealer-", "auditseal-sink-"))]


@pytest.mark.parametrize("name", ["default", "production", "everything"])
def test_the_verifier_checks_the_reconcilers_attestations_under_its_own_keyring(rendered: dict[str, str],
                                                                                name: str) -> None:
    spec = pod_specs(rendered[name])["auditseal-verifier"]
    (container,) = spec["containers"]
    (flag,) = [a for a in container["args"] if a.startswith("--reconciler-keyring=")]
    path = flag.split("=", 1)[1]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volumes = {v["name"]: v for v in spec["volumes"]}
    published = volumes[mount["name"]]["configMap"]
    # a keyring of its own, never the sealer's (a reconciler key must not pass for a sealer key, or back)
    assert mount["readOnly"] is True and published["name"] != volumes["keyring"]["configMap"]["name"]
    assert [item["path"] for item in published["items"]] == [path.rsplit("/", 1)[1]]
    if name == "everything":
        maps = {d["metadata"]["name"]: d for d in of_kind(rendered[name], "ConfigMap")}
        assert published["name"] in maps


def test_without_the_reconciler_the_verifier_checks_no_attestations(helm: Helm) -> None:
    spec = pod_specs(helm.template("--set", "reconciler.enabled=false"))["auditseal-verifier"]
    assert not [a for a in spec["containers"][0]["args"] if a.startswith("--reconciler-keyring")]


WITNESS_POLICY = "log wit.example/audit.raw/0+01234567+AQID\nwitness w1 w1.example+89abcdef+AQID https://w1.example/\nquorum w1\n"


def test_every_sealer_submits_to_the_witness_policy_when_one_is_given(helm: Helm, validate_manifests) -> None:
    values = helm.values_file("witness", {"sealer": {"witness": {"policy": WITNESS_POLICY, "interval": 5}},
                                          "networkPolicy": {"witness": {"ports": [443, 8443]}}})
    manifests = helm.template("-f", str(values))
    assert validate_manifests(manifests) == []
    (config,) = [c for c in of_kind(manifests, "ConfigMap") if c["metadata"]["name"] == "auditseal-witness-policy"]
    assert config["data"]["policy.txt"] == WITNESS_POLICY
    specs = pod_specs(manifests)
    policies = {p["metadata"]["name"]: p for p in of_kind(manifests, "NetworkPolicy")}
    # audit.raw's sealer and every origin's: the same policy, the same interval
    for name in ["auditseal-sealer", *(f"auditseal-sealer-{origin}" for origin in ORIGINS)]:
        (container,) = specs[name]["containers"]
        assert "--witness-policy=/etc/auditseal/witness/policy.txt" in container["args"], name
        assert "--witness-interval=5" in container["args"], name
        assert {"name": "witness-policy", "mountPath": "/etc/auditseal/witness", "readOnly": True} in \
            container["volumeMounts"], name
        volume = next(v for v in specs[name]["volumes"] if v["name"] == "witness-policy")
        assert volume["configMap"] == {"name": "auditseal-witness-policy",
                                       "items": [{"key": "policy.txt", "path": "policy.txt"}]}, name
        egress_ports = {port["port"] for rule in policies[name]["spec"]["egress"] for port in rule["ports"]}
        assert {443, 8443} <= egress_ports, name
    # nothing else gets the policy or the witnesses' ports
    for name, spec in specs.items():
        if not name.startswith("auditseal-sealer"):
            assert not [v for v in spec["volumes"] if v["name"] == "witness-policy"], name
            assert 8443 not in {port["port"] for rule in policies.get(name, {"spec": {"egress": []}})["spec"]["egress"]
                                for port in rule["ports"]}, name


def test_the_witness_policy_comes_from_an_existing_secret_or_config_map(helm: Helm, rendered: dict[str, str]) -> None:
    specs = pod_specs(helm.template("--set", "sealer.witness.existingSecret=witness-policy", "--set",
                                    "sealer.witness.key=tlog-policy"))
    for name in ["auditseal-sealer", *(f"auditseal-sealer-{origin}" for origin in ORIGINS)]:
        volume = next(v for v in specs[name]["volumes"] if v["name"] == "witness-policy")
        assert volume["secret"] == {"secretName": "witness-policy",
                                    "items": [{"key": "tlog-policy", "path": "tlog-policy"}]}
        assert "--witness-policy=/etc/auditseal/witness/tlog-policy" in specs[name]["containers"][0]["args"]
    # the production example witnesses, from a ConfigMap of its own; the default chart does not witness
    production = pod_specs(rendered["production"])["auditseal-sealer-access"]
    assert "--witness-policy=/etc/auditseal/witness/policy.txt" in production["containers"][0]["args"]
    assert next(v for v in production["volumes"] if v["name"] == "witness-policy")["configMap"]["name"] == \
        "auditseal-witness-policy"
    default = pod_specs(rendered["default"])["auditseal-sealer"]
    assert not [a for a in default["containers"][0]["args"] if a.startswith("--witness")]


def test_a_witness_policy_from_two_sources_or_a_bad_interval_is_refused(helm: Helm) -> None:
    result = helm.run("template", "auditseal", str(CHART), "--set", "sealer.witness.existingSecret=a",
                      "--set", "sealer.witness.existingConfigMap=b")
    assert result.returncode != 0
    assert "sealer.witness: set one of policy, existingConfigMap or existingSecret, not several" in result.stderr
    result = helm.run("template", "auditseal", str(CHART), "--set", "sealer.witness.existingSecret=a",
                      "--set", "sealer.witness.interval=0")
    assert result.returncode != 0 and "interval" in result.stderr


def test_the_prometheus_rule_alerts_on_witness_lag_and_refusals(rendered: dict[str, str]) -> None:
    (rule,) = of_kind(rendered["production"], "PrometheusRule")
    rules = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert "auditseal_sealer_witness_lag_seconds" in rules["AuditSealWitnessLagging"]["expr"]
    assert "auditseal_sealer_witness_refusals_total" in rules["AuditSealWitnessRefusedHistory"]["expr"]
    assert rules["AuditSealWitnessRefusedHistory"]["labels"]["severity"] == "critical"
