"""The tools the deployment checks need, installed once into the per-user cache by this file.

- helm, built with ``go install`` from the Go module proxy at a pinned release (a few minutes, once; the
  same Go module and build caches as the S3 server's build, see :mod:`pipeline.devstack.s3server`);
- a virtualenv with the schema validators from PyPI, kept apart from the project's own venv:
  ``kubernetes-validate`` (the Kubernetes OpenAPI schemas of 1.25-1.37, bundled), the Prometheus Operator
  models of ``cloudcoil`` (ServiceMonitor and PrometheusRule) and ``check-jsonschema`` (it vendors the
  Compose Specification schema).

Both live under ``<cache>/tools`` and are built under a file lock, so concurrent test runs build once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.devstack.cache import cache_dir

HELM_MODULE = "helm.sh/helm/v3"
HELM_VERSION = "v3.22.0"
# the Kubernetes version helm v3.22.0 is built against (k8s.io/client-go v0.37.0 in its go.mod); helm's
# Makefile stamps it in with these flags, and `helm template` assumes it unless --kube-version says otherwise
HELM_KUBERNETES = ("1", "37")
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMTOOL_VERSION = "v0.316.0"
VALIDATORS = (
    "kubernetes-validate==1.37.0",
    "check-jsonschema==0.39.0",
    "cloudcoil==0.6.0",
    "cloudcoil.models.prometheus_operator==0.80.1.0",
)


class ToolError(RuntimeError):
    """A tool could not be installed; the message says which and what to install."""


@contextmanager
def _locked(tools: Path) -> Iterator[None]:
    tools.mkdir(parents=True, exist_ok=True)
    with open(tools / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ToolError(f"{what} failed (exit {result.returncode}):\n{(result.stderr or result.stdout)[-3000:]}")


def ensure_helm(cache: Path | None = None) -> Path:
    """The pinned helm binary, built from the Go module proxy into the cache the first time."""
    cache = cache or cache_dir()
    target = cache / "tools" / f"helm-{HELM_VERSION}"
    binary = target / "helm"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ToolError(f"Go is needed once to build helm {HELM_VERSION} for the deployment checks; install Go 1.24+")
    with _locked(cache / "tools"):
        if binary.exists():
            return binary
        major, minor = HELM_KUBERNETES
        ldflags = " ".join([
            "-s", "-w",
            f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor={major}",
            f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={minor}",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor={major}",
            f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={minor}",
        ])
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        env = dict(os.environ, GOMODCACHE=str(cache / "go" / "mod"), GOCACHE=str(cache / "go" / "build"),
                   GOBIN=str(staging), GOFLAGS="-mod=mod", CGO_ENABLED="0")
        _run([go, "install", "-ldflags", ldflags, f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"],
             f"building helm {HELM_VERSION} from the Go module proxy", env=env)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return binary


def ensure_promtool(cache: Path | None = None) -> Path:
    """The pinned promtool binary (``promtool check rules``), built from the Go module proxy the first time.

    Prometheus publishes its Go module as v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
    """
    cache = cache or cache_dir()
    target = cache / "tools" / f"promtool-{PROMTOOL_VERSION}"
    binary = target / "promtool"
    if binary.exists():
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ToolError(f"Go is needed once to build promtool {PROMTOOL_VERSION} for the alert rules check")
    with _locked(cache / "tools"):
        if binary.exists():
            return binary
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        env = dict(os.environ, GOMODCACHE=str(cache / "go" / "mod"), GOCACHE=str(cache / "go" / "build"),
                   GOBIN=str(staging), GOFLAGS="-mod=mod", CGO_ENABLED="0")
        _run([go, "install", "-ldflags", "-s -w", f"{PROMETHEUS_MODULE}/cmd/promtool@{PROMTOOL_VERSION}"],
             f"building promtool {PROMTOOL_VERSION} from the Go module proxy", env=env)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return binary


def ensure_validators(cache: Path | None = None) -> Path:
    """The ``bin/`` folder of the validators' virtualenv (pinned versions), created the first time."""
    cache = cache or cache_dir()
    digest = hashlib.sha256("\n".join(VALIDATORS).encode()).hexdigest()[:12]
    venv = cache / "tools" / f"deploy-validators-{digest}"
    done = venv / ".complete"
    if done.exists():
        return venv / "bin"
    with _locked(cache / "tools"):
        if done.exists():
            return venv / "bin"
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)], "creating the validators' virtualenv")
        env = dict(os.environ, PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(cache / "pip")),
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *VALIDATORS],
             f"installing {', '.join(VALIDATORS)} from PyPI", env=env)
        done.write_text("\n".join(VALIDATORS) + "\n")
    return venv / "bin"
