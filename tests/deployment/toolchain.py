"""The tools the deployment checks need, installed once into the per-user cache by this file.

- helm, built with ``go install`` from the Go module proxy at a pinned release (a few minutes, once; the
  same Go module and build caches as the S3 server's build, see :mod:`pipeline.dev.s3server`);
- a virtualenv with the schema validators from PyPI, kept apart from the project's own venv:
  ``kubernetes-validate`` (the Kubernetes OpenAPI schemas of 1.25-1.37, bundled), the Prometheus Operator
  models of ``cloudcoil`` (ServiceMonitor and PrometheusRule) and ``check-jsonschema`` (it vendors the
  Compose Specification schema).

Both live under ``<cache>/tools`` and are built under a file lock, so concurrent test runs build once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.dev.cache import cache_dir
from pipeline.dev.gotools import cache_lock, go_install
from pipeline.dev.processes import StackError

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


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ToolError(f"{what} failed (exit {result.returncode}):\n{(result.stderr or result.stdout)[-3000:]}")


def ensure_helm(cache: Path | None = None, log: Callable[[str], object] = print) -> Path:
    """The pinned helm binary, built from the Go module proxy into the cache the first time."""
    major, minor = HELM_KUBERNETES
    ldflags = " ".join([
        "-s", "-w",
        f"-X {HELM_MODULE}/internal/version.version={HELM_VERSION}",
        f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMajor={major}",
        f"-X {HELM_MODULE}/pkg/lint/rules.k8sVersionMinor={minor}",
        f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMajor={major}",
        f"-X {HELM_MODULE}/pkg/chartutil.k8sVersionMinor={minor}",
    ])
    return _go_tool(cache, f"{HELM_MODULE}/cmd/helm", HELM_VERSION, ldflags, log)


def ensure_promtool(cache: Path | None = None, log: Callable[[str], object] = print) -> Path:
    """The pinned promtool binary (``promtool check rules``), built from the Go module proxy the first time.

    Prometheus publishes its Go module as v0.<major><minor>.<patch>: v0.316.0 is Prometheus 3.16.0.
    """
    return _go_tool(cache, f"{PROMETHEUS_MODULE}/cmd/promtool", PROMTOOL_VERSION, "-s -w", log)


def _go_tool(cache: Path | None, package: str, version: str, ldflags: str, log: Callable[[str], object]) -> Path:
    # no build timeout of our own beyond go_install's: a cold promtool build passed 900 s on a busy machine
    try:
        return go_install(cache or cache_dir(), package=package, version=version, folder="tools", ldflags=ldflags,
                          env={"CGO_ENABLED": "0"}, log=log)
    except StackError as exc:
        raise ToolError(str(exc)) from exc


def ensure_validators(cache: Path | None = None, log: Callable[[str], object] = print) -> Path:
    """The ``bin/`` folder of the validators' virtualenv (pinned versions), created the first time."""
    cache = cache or cache_dir()
    digest = hashlib.sha256("\n".join(VALIDATORS).encode()).hexdigest()[:12]
    venv = cache / "tools" / f"deploy-validators-{digest}"
    done = venv / ".complete"
    if done.exists():
        return venv / "bin"
    # a lock of its own: a Go build of helm or promtool into tools/ (minutes) need not hold the validators up
    with cache_lock(cache / "tools" / "validators.lock", f"the deployment validators: waiting for another process "
                    f"that installs them into {venv}", log):
        if done.exists():
            return venv / "bin"
        shutil.rmtree(venv, ignore_errors=True)
        log(f"installing the deployment validators into {venv} (once)...")
        _run([sys.executable, "-m", "venv", str(venv)], "creating the validators' virtualenv")
        env = dict(os.environ, PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(cache / "pip")),
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *VALIDATORS],
             f"installing {', '.join(VALIDATORS)} from PyPI", env=env)
        done.write_text("\n".join(VALIDATORS) + "\n")
    return venv / "bin"
