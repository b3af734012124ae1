"""The Dockerfile, checked without a container engine: its pins and user, what reaches the build context,
and the installed (non-editable) layout it produces, run the way the image runs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.permissions.topology import role_names
from tests.deployment.conftest import CHART, COMPOSE_FILE, REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def image_env() -> dict[str, str]:
    """The ENV block of the final stage."""
    block = DOCKERFILE.rsplit("\nENV ", 1)[1].split("\n# ", 1)[0]
    return dict(re.findall(r"([A-Z_]+)=(\S+)", block))


def test_base_image_is_pinned_to_an_exact_release() -> None:
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    assert re.findall(r"^FROM (\S+)", DOCKERFILE, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_image_runs_as_the_user_the_chart_and_compose_expect() -> None:
    assert DOCKERFILE.rstrip().splitlines()[-3:] == ['USER 10001:10001', 'ENTRYPOINT ["auditseal"]', 'CMD ["--help"]']
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    assert yaml.safe_load(COMPOSE_FILE.read_text())["services"]["sealer"]["user"] == "10001:10001"


def test_build_context_holds_what_the_dockerfile_copies_and_no_secrets() -> None:
    allowed = {line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    copied = set()
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        copied |= set(sources.split())
    assert copied <= allowed, copied - allowed
    assert all((REPO / name).exists() for name in copied)
    assert ".stack" not in allowed and ".venv" not in allowed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed like the image installs it (a wheel, not the checkout), in a scratch folder."""
    # the build context of the Dockerfile's build stage, copied so the build writes nothing into the checkout
    context = tmp_path_factory.mktemp("image-context")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, context / name)
    for name in ("schemas", "pipeline", "connectors"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    target = tmp_path_factory.mktemp("image-site")
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                             "--target", str(target), str(context)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return target


def test_installed_commands_start_with_the_image_environment(installed: Path, tmp_path: Path) -> None:
    env = image_env()
    assert env["AUDITSEAL_ROLES_FILE"] == "/app/config/roles.yaml" and "AUDITSEAL_SCHEMAS_DIR" not in env
    run_env = {**os.environ, "PYTHONPATH": str(installed), "AUDITSEAL_ROLES_FILE": str(REPO / "config" / "roles.yaml"),
               "AUDITSEAL_STACK_DIR": str(tmp_path)}
    run_env.pop("AUDITSEAL_SCHEMAS_DIR", None)
    probe = ("import pipeline, pipeline.cli.main, pipeline.wire.catalog as s, pipeline.permissions.topology as t, pipeline.native.sealing; "
             "print(pipeline.__file__); print(len(list(s.schemas_dir().glob('*.avsc'))), len(t.role_names()), s.schemas_dir()); "
             "[pipeline.cli.main.build_parser().parse_args(a) for a in (['access-audit'], ['acl', 'check'], ['s3', 'check'])]")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=run_env)
    assert result.returncode == 0, result.stderr
    module_file, counts = result.stdout.splitlines()
    assert module_file.startswith(str(installed)), module_file
    assert counts.split()[2] == str(installed / "pipeline" / "wire" / "schemas"), "the wheel ships schemas/"
    counts = " ".join(counts.split()[:2])
    assert list((installed / "pipeline" / "native").glob("sealing*.so")), "the wheel holds the compiled modules"
    assert counts.split() == [str(len(list((REPO / "schemas").glob("*.avsc")))), str(len(role_names()))]

