"""The Kafka-only reproduction of the lost SCRAM users (deploy/kafka-scram-repro/repro.py), as attached to
the upstream report: with the pinned Kafka it must still show the bug, and the snapshot mitigation must
avoid it. When an upgrade fixes Kafka the first test fails: then drop the mitigation and the repair's note."""

from __future__ import annotations

import subprocess
import sys

from pipeline.dev.cache import cache_dir
from pipeline.dev.kafka import KAFKA_VERSION, ensure_jars
from tests.support.sealing import REPO

SCRIPT = REPO / "deploy" / "kafka-scram-repro" / "repro.py"


def test_the_script_reproduces_the_bug_and_the_snapshot_mitigation_avoids_it():
    libs = ensure_jars(cache_dir(), log=lambda _line: None)
    runs = {
        "plain": subprocess.Popen([sys.executable, str(SCRIPT), "--libs", str(libs)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True),
        "mitigated": subprocess.Popen([sys.executable, str(SCRIPT), "--libs", str(libs), "--snapshot-interval-ms",
                                       "2000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
    }
    out = {name: (run.communicate(timeout=600)[0], run.returncode) for name, run in runs.items()}
    plain, code = out["plain"]
    assert code == 1, f"Kafka {KAFKA_VERSION} no longer shows the bug:\n{plain}"
    assert "created and deleted user 'alice'; 'bootstrap' still logs in" in plain
    assert "BUG: after the restart the broker rejects 'bootstrap'" in plain and "SASL authentication" in plain
    mitigated, code = out["mitigated"]
    assert code == 0, mitigated
    assert "a metadata snapshot was written after the deletion" in mitigated
    assert "after the restart 'bootstrap' logs in" in mitigated
