"""docker-compose.yml: the Compose Specification schema, hardening, and the init job's files."""

from __future__ import annotations

import importlib.util
import json
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from pipeline.config import KAFKA_VARIABLES, S3_VARIABLES
from pipeline.permissions.topology import role_names
from tests.deployment.conftest import COMPOSE_FILE, REPO

PIPELINE_IMAGE = "auditseal/pipeline:0.1.0"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def load_provisioner():
    """deploy/compose/provision.py, imported from the checkout (the init container runs the same file)."""
    spec = importlib.util.spec_from_file_location("compose_provision", REPO / "deploy" / "compose" / "provision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_compose_schema(validators: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(validators / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_specification(validators: Path) -> None:
    result = check_compose_schema(validators, COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_reports_an_unknown_key(validators: Path, tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    read_only: true\n", "    readonly: true\n", 1))
    result = check_compose_schema(validators, broken)
    assert result.returncode == 1
    assert "readonly" in result.stdout + result.stderr


def test_pipeline_services_run_non_root_read_only_without_capabilities() -> None:
    services = {name: s for name, s in compose()["services"].items() if s.get("image") == PIPELINE_IMAGE}
    assert {"sealer", "sink", "access-auditor", "detector", "siem-bridge", "verifier", "setup"} <= set(services)
    for name, service in services.items():
        if name == "init":  # the one root job: it hands each part of the stack volume to its user
            assert set(service["cap_add"]) == {"CHOWN", "FOWNER", "DAC_OVERRIDE"}
        else:
            assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_each_pipeline_service_mounts_only_its_own_role() -> None:
    for name, service in compose()["services"].items():
        role_mounts = [v for v in service.get("volumes", []) if isinstance(v, dict) and v["target"] == "/run/auditseal"]
        if not role_mounts:
            continue
        (mount,) = role_mounts
        assert mount["read_only"] is True, name
        assert mount["volume"]["subpath"].startswith("roles/"), name
        assert not any(isinstance(v, str) and v.startswith("stack:") for v in service["volumes"]), name


@pytest.fixture(scope="module")
def stack_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stack = tmp_path_factory.mktemp("compose-stack")
    load_provisioner().make_files(stack)
    return stack


def test_init_job_gives_every_role_its_environment(stack_files: Path) -> None:
    assert {p.name for p in (stack_files / "roles").iterdir()} == set(role_names())
    for role in role_names():
        env_file = stack_files / "roles" / role / "auditseal.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o400
        env = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
        assert set(KAFKA_VARIABLES + S3_VARIABLES) <= set(env), role
        assert env["AUDITSEAL_SASL_USERNAME"] == role
        assert ("AUDITSEAL_SIGNING_KEY" in env) == (role == "sealer")
        for path_variable in ("AUDITSEAL_CA_FILE", "AUDITSEAL_KEYRING"):
            assert (stack_files / "roles" / role / Path(env[path_variable]).name).exists(), (role, path_variable)
    key = stack_files / "roles" / "sealer" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert not any((stack_files / "roles" / role / "signing-key.pem").exists() for role in role_names() if role != "sealer")


def test_init_job_certificates_name_the_compose_services(stack_files: Path) -> None:
    for path in (stack_files / "kafka" / "broker.keystore.pem", stack_files / "s3" / "cert.pem"):
        cert = x509.load_pem_x509_certificates(path.read_bytes().split(b"-----END PRIVATE KEY-----\n")[-1])[0]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {"kafka", "s3", "localhost"} <= set(names.get_values_for_type(x509.DNSName)), path


def test_init_job_is_idempotent(stack_files: Path) -> None:
    before = json.loads((stack_files / "credentials.json").read_text())
    ca = (stack_files / "pki" / "ca.pem").read_bytes()
    load_provisioner().make_files(stack_files)
    assert json.loads((stack_files / "credentials.json").read_text()) == before
    assert (stack_files / "pki" / "ca.pem").read_bytes() == ca


def _sealer_entrypoint_env(tmp_path: Path, environment: dict[str, str]) -> dict[str, str]:
    # the sealer's real entrypoint script, with its env file and `exec auditseal` swapped for a probe
    script = compose()["services"]["sealer"]["entrypoint"][2].replace("$$", "$")
    env_file = tmp_path / "auditseal.env"
    env_file.write_text("export AUDITSEAL_SIGNING_KEY=/run/auditseal/signing-key.pem\n")
    script = script.replace("/run/auditseal/auditseal.env", str(env_file)).replace('exec auditseal "$@"', "exec env")
    result = subprocess.run(["/bin/sh", "-c", script, "auditseal"], env={"PATH": "/usr/bin:/bin", **environment},
                            capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_the_sealer_can_sign_through_a_pkcs11_module_instead_of_its_key_file(tmp_path: Path) -> None:
    sealer = compose()["services"]["sealer"]
    assert sealer["environment"]["AUDITSEAL_PKCS11_MODULE"] == "${AUDITSEAL_PKCS11_MODULE:-}"
    assert {"AUDITSEAL_PKCS11_TOKEN", "AUDITSEAL_PKCS11_PIN_FILE", "AUDITSEAL_SIGNING_KEY_LABEL",
            "AUDITSEAL_METRICS_ADDR"} <= set(sealer["environment"])
    # no module: the key file of the stack volume; a module: the file is dropped (the sealer refuses both)
    assert _sealer_entrypoint_env(tmp_path, {"AUDITSEAL_PKCS11_MODULE": ""})["AUDITSEAL_SIGNING_KEY"]
    with_hsm = _sealer_entrypoint_env(tmp_path, {"AUDITSEAL_PKCS11_MODULE": "/opt/hsm/libpkcs11.so"})
    assert "AUDITSEAL_SIGNING_KEY" not in with_hsm and with_hsm["AUDITSEAL_PKCS11_MODULE"] == "/opt/hsm/libpkcs11.so"


def _env_of(stack_files: Path, role: str) -> dict[str, str]:
    text = (stack_files / "roles" / role / "auditseal.env").read_text()
    return {k: shlex.split(v)[0] if v else v
            for k, v in (line.removeprefix("export ").split("=", 1) for line in text.splitlines())}


def test_the_verifier_delivers_its_record_as_itself_to_its_own_topic(stack_files: Path) -> None:
    # its spool is a tmpfs no access auditor reads: it writes the record to audit.verification, which only the
    # verifier may write, with its own credential (no longer the access auditor's, issue 15)
    verifier = _env_of(stack_files, "verifier")
    assert verifier["AUDITSEAL_VERIFICATION_RECORD"] == "kafka" and verifier["AUDITSEAL_SASL_USERNAME"] == "verifier"
    passwords = {role: _env_of(stack_files, role)["AUDITSEAL_SASL_PASSWORD"] for role in role_names()}
    assert len(set(passwords.values())) == len(passwords), "two roles share a password"
    for role in role_names():
        env = _env_of(stack_files, role)
        # only the investigator, whose reveal records go to audit.access with the auditor's credential (issue 18)
        assert bool([k for k in env if k.startswith("AUDITSEAL_ACCESS_RECORD_")]) == (role == "investigator"), role
        assert ("AUDITSEAL_VERIFICATION_RECORD" in env) == (role == "verifier"), role


def test_the_reconciler_has_its_own_credential_and_key(stack_files: Path) -> None:
    from pipeline.integrity.keyring import load_signing_key

    env = _env_of(stack_files, "reconciler")
    assert env["AUDITSEAL_SASL_USERNAME"] == "reconciler"
    key_file = stack_files / "roles" / "reconciler" / Path(env["AUDITSEAL_RECONCILER_KEY"]).name
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o400
    sealer_key = load_signing_key(stack_files / "roles" / "sealer" / "signing-key.pem")
    assert load_signing_key(key_file).key_id != sealer_key.key_id
    assert not any((stack_files / "roles" / r / "reconciler-key.pem").exists() for r in role_names() if r != "reconciler")
    service = compose()["services"]["reconciler"]
    assert service["command"][0] == "reconcile"
    assert [v["volume"]["subpath"] for v in service["volumes"]] == ["roles/reconciler"]


def test_the_verifier_checks_attestations_under_the_reconcilers_published_keyring(stack_files: Path) -> None:
    from pipeline.integrity.keyring import load_keyring, load_signing_key

    reconciler = load_signing_key(stack_files / "roles" / "reconciler" / "reconciler-key.pem")
    env = _env_of(stack_files, "verifier")
    keyring = load_keyring(stack_files / "roles" / "verifier" / Path(env["AUDITSEAL_RECONCILER_KEYRING"]).name)
    assert [entry.key_id for entry in keyring] == [reconciler.key_id]
    # a keyring of its own: the sealer's keyring does not hold the reconciler's key, nor this one the sealer's
    sealer_keyring = load_keyring(stack_files / "roles" / "verifier" / "keyring.json")
    assert reconciler.key_id not in sealer_keyring and not set(e.key_id for e in sealer_keyring) & {reconciler.key_id}
    assert all("AUDITSEAL_RECONCILER_KEYRING" not in _env_of(stack_files, r) for r in role_names() if r != "verifier")


def test_the_broker_has_the_principal_builder_and_no_scram_super_user(stack_files: Path) -> None:
    # as `dev up` runs it: certificate principals only as super users, the builder on the class path, the
    # setup job on the bootstrap certificate; no SCRAM credential is created for any super user
    from pipeline.dev import kafka

    kafka_service = compose()["services"]["kafka"]
    dockerfile = REPO / kafka_service["build"]["dockerfile"]
    text = dockerfile.read_text()
    assert "FROM ${KAFKA_IMAGE}" in text and "CertificatePrincipalBuilder.java" in text
    assert "/opt/auditseal-principal" in text
    assert (REPO / "pipeline" / "dev" / "java" / "dev" / "auditseal" / "kafka" / "CertificatePrincipalBuilder.java").exists()
    start = (REPO / "deploy" / "compose" / "kafka-start.sh").read_text()
    assert "export CLASSPATH=/opt/auditseal-principal" in start
    assert "--add-scram" not in start and "bootstrap-password" not in start
    properties = dict(line.split("=", 1) for line in (stack_files / "kafka" / "server.properties").read_text().splitlines())
    assert properties["principal.builder.class"] == kafka.PRINCIPAL_BUILDER
    assert properties["super.users"] == "Cert:broker;Cert:bootstrap"
    assert not (stack_files / "kafka" / "bootstrap-password").exists()
    cert = x509.load_pem_x509_certificate((stack_files / "pki" / "bootstrap.pem").read_bytes())
    names = {a.oid: a.value for a in cert.subject}
    assert names[x509.NameOID.COMMON_NAME] == "bootstrap" and x509.NameOID.ORGANIZATION_NAME in names
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in usages
    setup_source = (REPO / "deploy" / "compose" / "provision.py").read_text()
    assert "AUDITSEAL_SSL_CERT_FILE" in setup_source and "kafka_bootstrap_password" not in setup_source


def test_every_origin_topic_has_a_sealer_and_a_sink() -> None:
    from pipeline.wire.topics import ORIGIN_TOPICS, sealed_topic_of

    services = compose()["services"]
    commands = [s.get("command", []) for s in services.values()]
    for topic in ORIGIN_TOPICS:
        sealer = [c for c in commands if c[:1] == ["seal"] and topic in c]
        assert len(sealer) == 1 and sealed_topic_of(topic) in sealer[0], topic
        assert sealer[0][sealer[0].index("--app-id") + 1].startswith("auditseal-sealer-"), topic
        sink = [c for c in commands if c[:1] == ["sink"] and sealed_topic_of(topic) in c]
        assert len(sink) == 1 and sink[0][sink[0].index("--group") + 1].startswith("auditseal-sink-"), topic
    for name, service in services.items():
        if service.get("command", [None])[0] in ("seal", "sink"):
            role = "sealer" if service["command"][0] == "seal" else "sink"
            assert [v["volume"]["subpath"] for v in service["volumes"]] == [f"roles/{role}"], name


def _sealer_entrypoint_args(environment: dict[str, str]) -> list[str]:
    # the sealer's real entrypoint script, with its env file emptied and `exec auditseal` printing the arguments
    script = compose()["services"]["sealer"]["entrypoint"][2].replace("$$", "$")
    script = script.replace(". /run/auditseal/auditseal.env", "true").replace('exec auditseal "$@"',
                                                                           "exec printf '%s\\n' \"$@\"")
    result = subprocess.run(["/bin/sh", "-c", script, "auditseal", "seal", "--metrics-port", "9464"],
                            env={"PATH": "/usr/bin:/bin", **environment}, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_every_sealer_runs_with_the_witness_policy_when_one_is_given() -> None:
    services = compose()["services"]
    sealer = services["sealer"]
    env = sealer["environment"]
    assert env["AUDITSEAL_SEALER_WITNESS_POLICY"] == "${AUDITSEAL_WITNESS_POLICY_FILE:+/etc/auditseal/witness-policy.txt}"
    assert env["AUDITSEAL_SEALER_WITNESS_INTERVAL"] == "${AUDITSEAL_WITNESS_INTERVAL:-10}"
    assert sealer["configs"] == [{"source": "witness-policy", "target": "/etc/auditseal/witness-policy.txt"}]
    source = compose()["configs"]["witness-policy"]["file"]
    assert source == "${AUDITSEAL_WITNESS_POLICY_FILE:-./deploy/compose/no-witness-policy.txt}"
    assert (REPO / "deploy" / "compose" / "no-witness-policy.txt").read_text() == ""
    # audit.raw's sealer and every origin's: the same entrypoint, environment and policy, only the topics differ
    sealers = {name: s for name, s in services.items() if s.get("command", [None])[0] == "seal"}
    assert len(sealers) == 5
    for name, service in sealers.items():
        assert (service["entrypoint"], service["environment"], service["configs"]) == (
            sealer["entrypoint"], env, sealer["configs"]), name
    # no policy file: no witnessing; a policy: --witness-policy and --witness-interval after the command's own
    assert _sealer_entrypoint_args({"AUDITSEAL_SEALER_WITNESS_POLICY": "", "AUDITSEAL_SEALER_WITNESS_INTERVAL": "10"}) \
        == ["seal", "--metrics-port", "9464"]
    assert _sealer_entrypoint_args({"AUDITSEAL_SEALER_WITNESS_POLICY": "/etc/auditseal/witness-policy.txt",
                                    "AUDITSEAL_SEALER_WITNESS_INTERVAL": "5"}) == [
        "seal", "--metrics-port", "9464", "--witness-policy", "/etc/auditseal/witness-policy.txt",
        "--witness-interval", "5"]
