"""The producer library as a service installs it: the built wheel in a fresh virtualenv outside the checkout,
with only the ``AUDITSEAL_*`` variables, emitting to the live broker.

`pip install auditseal` must bring confluent-kafka and fastavro and nothing of the pipeline's world (Faust,
boto3, PyYAML, cryptography): a service embeds the producer, not the sealer. The wheel must carry the schemas
(the wire format) and the compiled fast paths, and need no roles file, no config folder and no checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.wire.codec import default_codec
from pipeline.wire.topics import RAW_TOPIC

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
# what the pipeline extra adds: none of it may be importable in the producer's environment
PIPELINE_ONLY = ("faust", "boto3", "botocore", "yaml", "cryptography", "prometheus_client", "psutil")

SERVICE = r'''
import json, sys, time
started = time.perf_counter()
from pipeline.producer import AuditProducer, new_event
imported = time.perf_counter() - started
with AuditProducer() as producer:  # AUDITSEAL_* only
    producer.check()
    results = [producer.emit(new_event(actor={"id": "svc-wheel", "type": "SERVICE"}, action="document.read",
                                       resource={"type": "document", "id": f"doc-{n}"},
                                       outcome={"status": "SUCCESS"}, source_service="wheel-test"))
               for n in range(20)]
    producer.flush()
print(json.dumps({"import_s": imported, "modules": sorted(m.split(".")[0] for m in sys.modules),
                  "delivered": [[r.partition, r.offset] for r in results]}))
'''


@pytest.fixture(scope="module")
def producer_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the checkout with only the built wheel installed (and its two dependencies)."""
    wheels = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                            "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = wheels.glob("auditseal-*.whl")
    env_dir = tmp_path_factory.mktemp("service") / "venv"
    venv.create(env_dir, with_pip=True)
    installed = subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                                str(wheel)], capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return env_dir


def _service_env(role_env, tmp_path: Path) -> dict[str, str]:
    """The producer role's AUDITSEAL_* variables and nothing of the checkout (no roles file, schemas or config)."""
    kept = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    profile = {name: value for name, value in role_env("producer").items() if name.startswith("AUDITSEAL_")}
    return {**kept, **profile, "AUDITSEAL_STACK_DIR": str(tmp_path / "no-stack")}


def test_the_wheel_emits_events_with_only_the_auditseal_variables(producer_venv: Path, role_env, tmp_path: Path):
    python = producer_venv / "bin" / "python"
    absent = subprocess.run([str(python), "-c", f"import importlib.util as u; print([m for m in {PIPELINE_ONLY!r} "
                             "if u.find_spec(m)])"], capture_output=True, text=True, cwd=tmp_path)
    assert absent.stdout.strip() == "[]", f"the producer wheel pulled in the pipeline's dependencies: {absent.stdout}"

    result = subprocess.run([str(python), "-c", SERVICE], capture_output=True, text=True, cwd=tmp_path,
                            env=_service_env(role_env, tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert not set(report["modules"]) & set(PIPELINE_ONLY)
    assert len(report["delivered"]) == 20 and all(offset >= 0 for _, offset in report["delivered"])
    print(f"producer wheel: import {report['import_s'] * 1000:.0f} ms, installed {_size_mb(producer_venv):.1f} MB")

    # what was acknowledged is on audit.raw, as the sealer role reads it, byte-decodable by the checkout's codec
    reader = Consumer(KafkaSettings.from_env(role_env("sealer")).client_config(
        **{"group.id": "auditseal-sealer-wheel-test", "enable.auto.commit": False}))
    try:
        partition, offset = report["delivered"][-1]
        reader.assign([TopicPartition(RAW_TOPIC, partition, offset)])
        message = reader.poll(30)
        assert message is not None and message.error() is None
        event = default_codec().decode(message.value())
        assert event["actor"]["id"] == "svc-wheel" and event["source_service"] == "wheel-test"
    finally:
        reader.close()


def test_the_wheel_cli_helps_without_any_file_and_names_the_missing_extra(producer_venv: Path, tmp_path: Path):
    auditseal = str(producer_venv / "bin" / "auditseal")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "AUDITSEAL_STACK_DIR": str(tmp_path / "no-stack")}
    for argv in (["--help"], ["--version"], ["seal", "--help"], ["verify", "--help"], ["acl", "check", "--help"],
                 ["dev", "env", "--help"], ["emit", "--help"]):
        shown = subprocess.run([auditseal, *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert shown.returncode == 0 and not shown.stderr, (argv, shown.stderr)
    refused = subprocess.run([auditseal, "s3", "check"], capture_output=True, text=True, cwd=tmp_path, env=env,
                             timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1 and "auditseal[pipeline]" in refused.stderr, refused.stderr


def _size_mb(env_dir: Path) -> float:
    return sum(f.stat().st_size for f in env_dir.rglob("*") if f.is_file()) / 1e6
