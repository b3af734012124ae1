"""`auditseal dev up/down/status/env` on a second, throw-away stack, and its clear failures on bad input."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.dev.processes import port_is_free

pytestmark = pytest.mark.stack
REPO = Path(__file__).resolve().parents[2]


def _free_base(count: int = 5, start: int = 29100) -> int:
    for base in range(start, start + 2000, 10):
        if all(port_is_free("127.0.0.1", base + i) for i in range(count)):
            return base
    raise RuntimeError("no free block of ports for a second stack")


def auditseal(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def second_stack_env(tmp_path):
    env = dict(os.environ, AUDITSEAL_STACK_DIR=str(tmp_path / "stack"), AUDITSEAL_DEV_PORT_BASE=str(_free_base()))
    yield env
    auditseal("dev", "down", "--purge", env=env)


def _processes_marked(marker: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and "pytest" not in cmdline:
                found.append(cmdline)
    return found


def test_up_status_env_down_purge(second_stack_env):
    env = second_stack_env
    stack_dir = Path(env["AUDITSEAL_STACK_DIR"])
    up = auditseal("dev", "up", env=env)
    assert up.returncode == 0, up.stderr
    assert "bucket enforces WORM" in up.stdout

    status = json.loads(auditseal("dev", "status", "--json", env=env).stdout)
    assert status["healthy"] and set(status["parts"]) == {"kafka", "s3", "witness"}
    assert status["parts"]["witness"]["port"] == int(env["AUDITSEAL_DEV_PORT_BASE"]) + 4
    credentials = stack_dir / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    first_credentials = credentials.read_text()

    exports = auditseal("dev", "env", "--role", "sealer", env=env).stdout.splitlines()
    names = [line.split("=", 1)[0].removeprefix("export ") for line in exports]
    assert names == ["AUDITSEAL_BOOTSTRAP", "AUDITSEAL_SASL_USERNAME", "AUDITSEAL_SASL_PASSWORD",
                     "AUDITSEAL_CA_FILE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_CA_BUNDLE", "AUDITSEAL_BUCKET", "AUDITSEAL_KEYRING", "AUDITSEAL_WITNESS_POLICY",
                     "AUDITSEAL_LOG_NAME", "AUDITSEAL_PKCS11_MODULE", "AUDITSEAL_PKCS11_TOKEN",
                     "AUDITSEAL_PKCS11_PIN_FILE", "SOFTHSM2_CONF"]
    assert "export AUDITSEAL_SASL_USERNAME=sealer" in exports
    verifier = auditseal("dev", "env", "--role", "verifier", env=env).stdout
    assert "AUDITSEAL_KEYRING=" in verifier and "AUDITSEAL_PKCS11_TOKEN=auditseal-sealer" not in verifier
    assert "export AUDITSEAL_PKCS11_TOKEN=auditseal-sealer" in exports
    assert stat.S_IMODE((stack_dir / "hsm" / "auditseal-sealer.pin").stat().st_mode) == 0o600
    assert json.loads(first_credentials)["kafka"]["sealer"] in exports[2]

    again = auditseal("dev", "up", "--no-check", env=env)
    assert again.returncode == 0, again.stderr
    assert credentials.read_text() == first_credentials

    assert auditseal("dev", "down", env=env).returncode == 0
    down_status = auditseal("dev", "status", "--json", env=env)
    assert down_status.returncode == 1
    assert not json.loads(down_status.stdout)["healthy"]
    assert not _processes_marked(str(stack_dir))
    assert (stack_dir / "kafka" / "data" / "meta.properties").exists(), "down must keep data"

    restarted = auditseal("dev", "up", "--no-check", env=env)
    assert restarted.returncode == 0, restarted.stderr
    assert credentials.read_text() == first_credentials
    assert json.loads(auditseal("dev", "status", "--json", env=env).stdout)["healthy"]

    assert auditseal("dev", "down", "--purge", env=env).returncode == 0
    assert not stack_dir.exists()
    assert not _processes_marked(str(stack_dir))


def test_port_taken_is_one_clear_error_and_starts_nothing(second_stack_env):
    env = second_stack_env
    base = int(env["AUDITSEAL_DEV_PORT_BASE"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base))
        squatter.listen()
        result = auditseal("dev", "up", env=env)
    assert result.returncode == 1
    assert f"port {base} (Kafka client listener (SASL_SSL)) is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not _processes_marked(env["AUDITSEAL_STACK_DIR"])


def test_missing_java_is_one_clear_error(second_stack_env):
    env = {k: v for k, v in second_stack_env.items() if k != "JAVA_HOME"}
    env["PATH"] = "/nonexistent"
    result = auditseal("dev", "up", env=env)
    assert result.returncode == 1
    assert "Java 17+ is needed to run Kafka but no `java` was found" in result.stderr
    assert "Traceback" not in result.stderr
    assert not _processes_marked(env["AUDITSEAL_STACK_DIR"])


def test_failed_download_is_one_clear_error(second_stack_env, tmp_path):
    env = dict(second_stack_env, AUDITSEAL_CACHE=str(tmp_path / "empty-cache"),
               AUDITSEAL_MAVEN_REPO="http://127.0.0.1:9/maven2")
    result = auditseal("dev", "up", env=env)
    assert result.returncode == 1
    assert "downloading Kafka 4.4.0 from http://127.0.0.1:9/maven2 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "empty-cache" / "kafka" / "4.4.0" / "libs").exists()
    assert not _processes_marked(env["AUDITSEAL_STACK_DIR"])


def test_invalid_option_and_role_exit_2(second_stack_env):
    bogus = auditseal("dev", "up", "--bogus", env=second_stack_env)
    assert bogus.returncode == 2 and "unrecognized arguments: --bogus" in bogus.stderr
    role = auditseal("dev", "env", "--role", "root", env=second_stack_env)
    assert role.returncode == 2 and "invalid choice: 'root'" in role.stderr


def test_env_before_up_says_what_to_do(second_stack_env):
    result = auditseal("dev", "env", "--role", "producer", env=second_stack_env)
    assert result.returncode == 1
    assert "run `auditseal dev up` first" in result.stderr
