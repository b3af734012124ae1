"""The stack's port table: a new part (the witness) gets the port its stack's base implies, old stacks included."""

import json

from pipeline.dev.stack import DEFAULT_PORTS, LocalStack


def test_a_new_stack_takes_base_plus_position(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDITSEAL_DEV_PORT_BASE", "20400")
    assert LocalStack(tmp_path).ports() == {"kafka_client": 20400, "kafka_internal": 20401, "kafka_controller": 20402,
                                            "s3": 20403, "witness": 20404}
    monkeypatch.delenv("AUDITSEAL_DEV_PORT_BASE")
    assert LocalStack(tmp_path / "other").ports() == DEFAULT_PORTS


def test_a_stack_saved_before_the_witness_existed_gets_its_port(tmp_path, monkeypatch):
    monkeypatch.delenv("AUDITSEAL_DEV_PORT_BASE", raising=False)
    saved = {"kafka_client": 29100, "kafka_internal": 29101, "kafka_controller": 29102, "s3": 29103}
    (tmp_path / "stack.json").write_text(json.dumps({"ports": saved}))
    assert LocalStack(tmp_path).ports()["witness"] == 29104
    default = tmp_path / "default"
    default.mkdir()
    (default / "stack.json").write_text(json.dumps({"ports": {k: DEFAULT_PORTS[k] for k in saved}}))
    assert LocalStack(default).ports()["witness"] == DEFAULT_PORTS["witness"]
