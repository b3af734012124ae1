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


def test_the_verifier_can_deliver_its_own_access_record(stack_files: Path) -> None:
    # its spool is a tmpfs no access auditor reads: it writes the record to audit.raw itself (issue 14)
    def env_of(role: str) -> dict[str, str]:
        text = (stack_files / "roles" / role / "auditseal.env").read_text()
        return {k: shlex.split(v)[0] if v else v
                for k, v in (line.removeprefix("export ").split("=", 1) for line in text.splitlines())}

    verifier, auditor = env_of("verifier"), env_of("access-auditor")
    assert verifier["AUDITSEAL_ACCESS_RECORD_SASL_USERNAME"] == "access-auditor"
    assert verifier["AUDITSEAL_ACCESS_RECORD_SASL_PASSWORD"] == auditor["AUDITSEAL_SASL_PASSWORD"]
    # the investigator's reveal records likewise (issue 18)
    assert env_of("investigator")["AUDITSEAL_ACCESS_RECORD_SASL_USERNAME"] == "access-auditor"
    assert not [r for r in role_names() if r not in ("verifier", "investigator")
                and "AUDITSEAL_ACCESS_RECORD_SASL_USERNAME" in env_of(r)]
