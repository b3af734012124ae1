"""transparency-dev's omniwitness (Apache-2.0) on loopback: the independent C2SP tlog-witness of the local stack.

Built once from the Go module proxy at a pinned version into the cache, like the S3 server. It runs with its
own Ed25519 key (made at first start, never the sealer's), a SQLite file so what it cosigned survives a
restart, only the logs we list (``--additional_logs``; its built-in public logs stay unused, nothing feeds
them), no metrics listener and no outbound polling.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.dev.gotools import go_install
from pipeline.dev.pki import write_private
from pipeline.dev.processes import ManagedProcess
from pipeline.integrity.note import ALG_COSIGNATURE_V1, NoteSigner, NoteVerifier

OMNIWITNESS_MODULE = "github.com/transparency-dev/witness"
# No tagged release exists; this is the newest pseudo-version on the Go module proxy (2026-07-20).
OMNIWITNESS_VERSION = "v0.0.0-20260720115447-2e1c6971d19e"
DEFAULT_WITNESS_NAME = "witness.auditseal.localhost"


def ensure_binary(cache: Path) -> Path:
    """Build ``omniwitness`` with ``go install`` into the cache (once; later calls return the binary)."""
    return go_install(cache, package=f"{OMNIWITNESS_MODULE}/cmd/omniwitness", version=OMNIWITNESS_VERSION)


def ensure_witness_key(home: Path, name: str = DEFAULT_WITNESS_NAME) -> NoteVerifier:
    """The witness's own key: ``home/witness.skey`` (0600, made once) and its cosignature vkey beside it."""
    skey_file = home / "witness.skey"
    if not skey_file.exists():
        home.mkdir(parents=True, exist_ok=True)
        write_private(skey_file, NoteSigner(name, Ed25519PrivateKey.generate()).skey.encode())
    signer = NoteSigner.from_skey(skey_file.read_text())
    verifier = NoteVerifier(signer.name, ALG_COSIGNATURE_V1, signer.private_key.public_key())
    (home / "witness.vkey").write_text(verifier.vkey + "\n")
    return verifier


def logs_yaml(logs: dict[str, str]) -> str:
    """omniwitness's log list: origin -> the log's note verifier key (type 0x01, key name = origin)."""
    lines = ["Logs:"]
    for origin, vkey in sorted(logs.items()):
        # JSON strings are valid YAML scalars and need no escaping rules of their own.
        lines += [f"  - Origin: {json.dumps(origin)}", f"    PublicKey: {json.dumps(vkey)}"]
    return "\n".join(lines) + "\n"


def start_witness(process: ManagedProcess, binary: Path, *, home: Path, port: int, logs: dict[str, str]) -> int:
    """Start omniwitness on 127.0.0.1:`port` for these logs; returns its pid."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "logs.yaml").write_text(logs_yaml(logs))
    argv = [
        str(binary), "--listen", f"127.0.0.1:{port}", "--metrics_listen", "",
        "--private_key_path", str(home / "witness.skey"), "--db_file", str(home / "witness.db"),
        "--additional_logs", str(home / "logs.yaml"), "--logtostderr",
    ]
    return process.start(argv, env=dict(os.environ))


def set_log_keys(home: Path, logs: dict[str, str]) -> list[str]:
    """Tell a running (or stopped) omniwitness in ``home`` to verify these origins' heads with these log keys
    (origin -> note vkey): a log key change-over on the witness's side. Returns the origins changed.

    omniwitness takes one log key per origin, and its ``--additional_logs`` file only inserts logs it does not
    know yet (``INSERT OR IGNORE`` into its SQLite ``logs`` table): a new key in that file is never used. What
    it does read on every request is that table's ``vkey`` column (and it keeps the origin's cosigned
    checkpoint, whatever key signed it, so consistency carries on across the change). So the change is made
    there, in one transaction, and in ``logs.yaml`` for the next start; no restart, no request refused.
    """
    database = home / "witness.db"
    changed = []
    with sqlite3.connect(database, timeout=30) as connection:
        for origin, vkey in sorted(logs.items()):
            cursor = connection.execute("UPDATE logs SET vkey = ? WHERE origin = ? AND vkey != ?", (vkey, origin, vkey))
            if cursor.rowcount:
                changed.append(origin)
    connection.close()
    known = logs_from_yaml(home / "logs.yaml")
    (home / "logs.yaml").write_text(logs_yaml({**known, **logs}))
    return changed


def logs_from_yaml(path: Path) -> dict[str, str]:
    """The origin -> vkey list :func:`logs_yaml` wrote (empty if there is no such file)."""
    if not path.exists():
        return {}
    logs: dict[str, str] = {}
    origin = None
    for line in path.read_text().splitlines():
        if line.startswith("  - Origin: "):
            origin = json.loads(line[len("  - Origin: "):])
        elif line.startswith("    PublicKey: ") and origin is not None:
            logs[origin] = json.loads(line[len("    PublicKey: "):])
    return logs


def start_side_witness(stack, home: Path, name: str, key_name: str,
                       logs: dict[str, str]) -> tuple[ManagedProcess, Path]:
    """A witness of its own beside the stack's (the demo's, a benchmark's): an omniwitness in `home` whose
    cosignatures are under the key `key_name`, on the first free port of the stack's extra range, accepting
    the chains of `logs` (origin -> log vkey); its process (`name`; stop it with ``.stop()``) and a tlog-policy
    naming it `name` (``home/policy.txt``). RuntimeError if no port is free or it does not start in 60 s."""
    import time

    from pipeline.dev.processes import port_is_free, port_is_open
    from pipeline.integrity.policy import PolicyWitness, format_policy

    base = stack.ports()["kafka_client"]
    port = next((base + n for n in range(5, 100) if port_is_free("127.0.0.1", base + n)), None)
    if port is None:
        raise RuntimeError(f"no free port in {base + 5}..{base + 99} for the witness {name}")
    verifier = ensure_witness_key(home, key_name)
    process = ManagedProcess(name, home / "witness.pid", home / "witness.log", str(home))
    start_witness(process, ensure_binary(stack.cache), home=home, port=port, logs=logs)
    deadline = time.monotonic() + 60
    while not port_is_open("127.0.0.1", port):
        if process.pid() is None or time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"the witness {name} did not start:\n{process.log_tail()}")
        time.sleep(0.2)
    policy = home / "policy.txt"
    policy.write_text(format_policy([NoteVerifier.from_vkey(v) for v in logs.values()],
                                    [PolicyWitness(name, verifier, f"http://127.0.0.1:{port}")], name))
    return process, policy
