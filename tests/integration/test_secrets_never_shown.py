"""Secrets never appear in an error message, a log line or a repr, at any log level, right or wrong.

Each command runs at debug level (``-vv``) against the real stack, with the role's real secret and with a
wrong one; neither may show up in what it prints. The stack's own log files are grepped for every password
and secret key of every role too.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]


def _auditseal(argv: list[str], env: dict[str, str], tmp_path: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "-vv", *argv], capture_output=True,
                            text=True, cwd=tmp_path, env={**os.environ, **env}, timeout=120)
    return result.stdout + result.stderr


def test_emit_with_a_right_and_a_wrong_password_shows_neither(role_env, tmp_path: Path) -> None:
    env = role_env("producer")
    wrong = "wrong-" + secrets.token_urlsafe(18)
    event = ["emit", "--actor-id", "alice", "--action", "document.read", "--resource-type", "document",
             "--resource-id", "42", "--source-service", "secrets-test"]
    shown = _auditseal(event, env, tmp_path) + _auditseal(event, {**env, "AUDITSEAL_SASL_PASSWORD": wrong}, tmp_path)
    assert env["AUDITSEAL_SASL_PASSWORD"] not in shown and wrong not in shown
    assert "authentication" in shown.lower()  # the wrong password was refused, and said so


def test_verify_with_a_right_and_a_wrong_s3_secret_shows_neither(role_env, stack, tmp_path: Path) -> None:
    env = {**role_env("verifier"), "AUDITSEAL_KEYRING": str(stack.keyring_file)}
    wrong = "wrong-" + secrets.token_urlsafe(24)
    argv = ["verify", "--s3", f"s3://{env['AUDITSEAL_BUCKET']}/no-such-prefix-{secrets.token_hex(4)}/"]
    shown = _auditseal(argv, env, tmp_path) + _auditseal(argv, {**env, "AWS_SECRET_ACCESS_KEY": wrong}, tmp_path)
    assert env["AWS_SECRET_ACCESS_KEY"] not in shown and wrong not in shown


def test_the_stack_logs_hold_no_password_or_secret_key(stack) -> None:
    credentials = json.loads(stack.credentials_file.read_text())
    values = [credentials["kafka_bootstrap_password"], credentials["s3_root_secret"],
              *credentials["kafka"].values(), *(keys["secret"] for keys in credentials["s3"].values())]
    logs = [path for path in stack.root.rglob("*") if path.is_file() and path.suffix in {".log", ".out"}]
    assert logs, "the stack writes logs"
    for path in logs:
        text = path.read_text(errors="replace")
        leaked = [value[:4] + "…" for value in values if value in text]
        assert not leaked, f"{path} shows secrets {leaked}"
