"""The one CLI harness: global options, logging set up once, exit codes in one place, help with no file present."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import main as cli
from pipeline.config import KafkaSettings, S3Settings
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of the parser, e.g. ('dev', 'up'), ('verify',)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_commands(sub, (*prefix, name)) or [(*prefix, name)])
    return found


def _run(argv: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """``auditseal ARGV`` in an empty folder with no roles file, config or stack reachable."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AUDITSEAL_STACK_DIR": str(tmp_path / "stack"),
           "AUDITSEAL_ROLES_FILE": str(tmp_path / "absent-roles.yaml"),
           "AUDITSEAL_COMPLIANCE_FILE": str(tmp_path / "absent-compliance.yaml"), **extra}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *argv], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=60)


def test_every_command_has_help_and_the_common_options_with_no_file_present(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in {"AUDITSEAL_ROLES_FILE": tmp_path / "absent.yaml", "AUDITSEAL_STACK_DIR": tmp_path / "stack",
                        "AUDITSEAL_COMPLIANCE_FILE": tmp_path / "absent.yaml"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(tmp_path)
    commands = _commands(cli.build_parser())
    assert ("verify",) in commands and ("dev", "up") in commands and ("sink",) in commands
    for command in commands:
        with pytest.raises(SystemExit) as exited:
            cli.main([*command, "--help"])
        shown = capsys.readouterr()
        assert exited.value.code == 0 and not shown.err, (command, shown.err)
        assert "--log-level" in shown.out and "-v" in shown.out, command
    # and in a process of its own, where nothing was imported before: no I/O at import
    for argv in (["--help"], ["seal", "--help"]):
        shown = _run(argv, tmp_path)
        assert shown.returncode == 0 and not shown.stderr, shown.stderr


def test_version() -> None:
    shown = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "--version"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.strip() == f"auditseal {pipeline.__version__}"


def test_a_missing_roles_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    refused = _run(["dev", "env", "--role", "producer"], tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "absent-roles.yaml" in refused.stderr, refused.stderr


def test_a_bad_log_level_is_a_usage_error(tmp_path: Path) -> None:
    assert _run(["--log-level", "loud", "verify", "--dir", "."], tmp_path).returncode == 2
    refused = _run(["verify", "--dir", str(tmp_path)], tmp_path, AUDITSEAL_LOG_LEVEL="loud")
    assert refused.returncode == 2 and "AUDITSEAL_LOG_LEVEL" in refused.stderr and refused.stderr.count("\n") == 1


@pytest.mark.parametrize(("argv", "env", "expected"), [
    (["verify"], {}, "warning"),
    (["seal"], {}, "info"),
    (["-v", "verify"], {}, "info"),
    (["verify", "-vv"], {}, "debug"),
    (["seal", "--loglevel", "error"], {}, "error"),
    (["--log-level", "debug", "seal"], {}, "debug"),
    (["verify"], {"AUDITSEAL_LOG_LEVEL": "ERROR"}, "error"),
    (["-v", "verify"], {"AUDITSEAL_LOG_LEVEL": "error"}, "info"),
])
def test_log_level_resolution(argv: list[str], env: dict[str, str], expected: str) -> None:
    args = cli.build_parser().parse_args(argv)
    assert cli.resolved_log_level(args, env) == expected


def test_logging_is_set_up_once_for_the_process() -> None:
    cli.setup_logging("debug")
    try:
        assert logging.getLogger().level == logging.DEBUG and len(logging.getLogger().handlers) == 1
        assert logging.getLogger("botocore").level == logging.WARNING  # signed requests never reach a log
    finally:
        cli.setup_logging("warning")


def test_exit_codes_come_from_one_place(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def raising(error: BaseException):
        def handler(_args: argparse.Namespace) -> int:
            raise error
        return handler

    def parser_raising(error: BaseException) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        parser.set_defaults(handler=raising(error), command="verify")
        return parser

    for error, code in ((ConfigError("bad option"), 2), (pipeline.errors.AuditSealError("refused"), 1),
                        (ModuleNotFoundError("No module named 'faust'", name="faust"), 2), (KeyboardInterrupt(), 130)):
        monkeypatch.setattr(cli, "build_parser", lambda error=error: parser_raising(error))
        assert cli.main([]) == code
    assert "auditseal[pipeline]" in capsys.readouterr().err
    monkeypatch.setattr(cli, "build_parser",
                        lambda: parser_raising(ModuleNotFoundError("No module named 'nothere'", name="nothere")))
    with pytest.raises(ModuleNotFoundError):  # a broken installation of AuditSeal itself is a bug, not exit 2
        cli.main([])


def test_settings_never_show_their_secrets() -> None:
    kafka = KafkaSettings("localhost:9092", "sealer", "kafka-secret-value", "/ca.pem")
    s3 = S3Settings("https://s3", "AKIA", "s3-secret-value", "/ca.pem", "bucket")
    for shown in (repr(kafka), str(kafka), repr(s3), str(s3)):
        assert "secret-value" not in shown
    assert kafka.client_config()["sasl.password"] == "kafka-secret-value"  # still there for the client
