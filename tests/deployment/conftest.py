"""Fixtures of the deployment checks: the pinned tools, and the chart rendered once per set of values."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deployment.toolchain import ensure_helm, ensure_promtool, ensure_validators

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "auditseal"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
COMPOSE_FILE = REPO / "docker-compose.yml"
VALIDATE_MANIFESTS = Path(__file__).resolve().parent / "validate_manifests.py"
# the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the schemas cover
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")

# Everything a values file can switch on, with inline secrets, so every template renders at least once.
EVERYTHING_VALUES: dict[str, Any] = {
    "tls": {"ca": {"pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"}},
    "keyring": {"json": '{"version": 1, "keys": []}'},
    "sealer": {"replicas": 6, "credentials": {"password": "sealer-secret"},
               "signingKey": {"pem": "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----"}},
    "sink": {"replicas": 2, "podDisruptionBudget": {"enabled": True}, "profile": "iso27001", "prefix": "archive/",
             "masterKey": {"existingSecret": "auditseal-master-key"},
             "credentials": {"password": "sink-secret", "s3AccessKeyId": "AK", "s3SecretAccessKey": "SK"}},
    "accessAuditor": {"credentials": {"password": "auditor-secret"}, "state": {"storageClassName": "fast"}},
    "detector": {"enabled": True, "credentials": {"password": "detector-secret"}},
    "siemBridge": {"enabled": True, "replicas": 2, "credentials": {"password": "siem-bridge-secret"}},
    "reconciler": {"credentials": {"password": "reconciler-secret"},
                   "signingKey": {"pem": "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----"},
                   "keyring": {"json": '{"version": 1, "keys": []}'}},
    "verifier": {"credentials": {"password": "verifier-secret", "s3AccessKeyId": "AK", "s3SecretAccessKey": "SK"}},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
}


class Helm:
    """The pinned helm binary, run against the chart."""

    def __init__(self, binary: Path, scratch: Path) -> None:
        self.binary = binary
        self.scratch = scratch

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``helm ARGS`` (no cluster needed, no repositories touched)."""
        env = {"HOME": str(self.scratch), "HELM_CACHE_HOME": str(self.scratch / "cache"),
               "HELM_CONFIG_HOME": str(self.scratch / "config"), "HELM_DATA_HOME": str(self.scratch / "data"),
               "PATH": "/usr/bin:/bin"}
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env, timeout=120)

    def values_file(self, name: str, values: dict[str, Any]) -> Path:
        """Write ``values`` to a values file named ``name`` in the scratch folder."""
        path = self.scratch / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(self, *args: str, kube_version: str = KUBERNETES_VERSIONS[-1]) -> str:
        """The rendered manifests; AssertionError with helm's message if rendering fails."""
        result = self.run("template", "auditseal", str(CHART), "--namespace", "audit",
                          "--kube-version", kube_version, *args)
        assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
        return result.stdout


@pytest.fixture(scope="session")
def tool_log(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """Prints a tool build's progress on the terminal, past pytest's output capture: a cold build takes
    minutes and the run must not look hung meanwhile."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def log(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    return log


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory, tool_log) -> Helm:
    return Helm(ensure_helm(log=tool_log), tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def validators(tool_log) -> Path:
    """The validators' ``bin/`` folder."""
    return ensure_validators(log=tool_log)


@pytest.fixture(scope="session")
def promtool(tool_log) -> Path:
    """The pinned promtool binary."""
    return ensure_promtool(log=tool_log)


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, str]:
    """The chart rendered with the default, the production-like and the everything-on values."""
    everything = helm.values_file("everything", EVERYTHING_VALUES)
    return {
        "default": helm.template(),
        "production": helm.template("-f", str(PRODUCTION_VALUES)),
        "everything": helm.template("-f", str(everything)),
    }


def documents(manifests: str) -> list[dict[str, Any]]:
    """The YAML documents of a rendered manifest stream."""
    return [d for d in yaml.safe_load_all(manifests) if d]


@pytest.fixture(scope="session")
def validate_manifests(validators: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[dict]]:
    """Schema problems of a manifest stream, for every version in KUBERNETES_VERSIONS."""
    scratch = tmp_path_factory.mktemp("manifests")

    def validate(manifests: str) -> list[dict]:
        path = scratch / f"manifests-{len(list(scratch.iterdir()))}.yaml"
        path.write_text(manifests)
        argv = [str(validators / "python"), str(VALIDATE_MANIFESTS), str(path)]
        for version in KUBERNETES_VERSIONS:
            argv += ["--kubernetes", version]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return validate
