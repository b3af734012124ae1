"""Every daemon, and ``verify --kafka``, on a Kafka configuration it cannot use: a wrong password, an unknown
user, an unreachable broker. Each must exit 2 with one line within a bounded time, where before they
retried forever and printed a librdkafka line per attempt (the shared check: :mod:`pipeline.preflight`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.support.sealing import free_port

pytestmark = pytest.mark.stack

BOUND_S = 60.0  # the checks give up after 20 to 30 s; the rest is Python start-up on a busy machine


def _commands(tmp_path) -> dict[str, tuple[str, list[str]]]:
    """Each command under test: the role whose variables it runs with, and its argv after `auditseal`."""
    (tmp_path / "archive").mkdir(exist_ok=True)
    from pipeline.integrity.keyring import generate_signing_key, save_signing_key

    key = tmp_path / "reconciler.pem"
    if not key.exists():
        save_signing_key(generate_signing_key(), key)
    return {
        "reconcile": ("reconciler", ["reconcile", "--signing-key", str(key), "--metrics-port", "0"]),
        "verify --reconcile": ("reconciler", ["verify", "--reconcile"]),
        "seal": ("sealer", ["seal", "--metrics-port", "0"]),
        "sink": ("sink", ["sink", "--metrics-port", "0"]),
        "detect": ("detector", ["detect", "--metrics-port", "0"]),
        "access-audit": ("access-auditor", ["access-audit", "--once", "--log", str(tmp_path / "authorizer.log"),
                                            "--spool", str(tmp_path / "spool.jsonl"),
                                            "--state", str(tmp_path / "state.json")]),
        "verify --kafka": ("verifier", ["verify", "--dir", str(tmp_path / "archive"), "--kafka"]),
    }


CASES = {
    "wrong password": (lambda env: {"AUDITSEAL_SASL_PASSWORD": env["AUDITSEAL_SASL_PASSWORD"] + "-wrong"},
                       "refused the credentials"),
    "unknown user": (lambda env: {"AUDITSEAL_SASL_USERNAME": "nobody-at-all"}, "refused the credentials"),
    "unreachable broker": (lambda env: {"AUDITSEAL_BOOTSTRAP": f"localhost:{free_port()}"}, "answered within"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_daemon_gives_up_with_one_line_and_exit_2(stack, tmp_path, case):
    change, expected = CASES[case]
    (tmp_path / "authorizer.log").write_text("")
    running = {}
    started = time.monotonic()
    # all five at once: the unreachable broker costs each its full wait, in parallel rather than in turn
    for name, (role, argv) in _commands(tmp_path).items():
        env = dict(os.environ, **stack.env(role))
        env.update(change(env))
        log = tmp_path / f"{name.replace(' ', '_')}.log"
        running[name] = (subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", *argv], env=env, cwd=tmp_path,
                                          stdout=open(log, "wb"), stderr=subprocess.STDOUT), log)
    results = {}
    for name, (process, log) in running.items():
        try:
            code = process.wait(max(1.0, BOUND_S - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = "still running"
        results[name] = (code, [line for line in log.read_text(errors="replace").splitlines() if line.strip()])
    for name, (code, lines) in results.items():
        assert code == 2, (name, code, lines[-10:])
        assert len(lines) == 1, (name, lines[-10:])
        assert lines[0].startswith("auditseal: configuration error: ") and expected in lines[0], (name, lines)
