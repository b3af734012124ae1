"""A private omniwitness for one test session: its own key, its own test logs, a free port of the stack's range.

The same binary and start code as the dev stack's witness (:mod:`pipeline.dev.witness`); the test logs are
its own so tests can rewrite, truncate and forge heads without disturbing the stack's chains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.dev import witness as dev_witness
from pipeline.dev.cache import cache_dir
from pipeline.dev.processes import ManagedProcess, StackError, port_is_free, port_is_open
from pipeline.integrity.note import NoteSigner, NoteVerifier
from pipeline.witness.client import Witness

# The stack's own parts take base+0..base+4; helpers' extra services take base+5..base+99.
FIRST_EXTRA_PORT_OFFSET = 5
LAST_EXTRA_PORT_OFFSET = 99


@dataclass
class RunningWitness:
    """A started omniwitness: the client, its key, the log keys it accepts, and how to stop or restart it."""

    client: Witness
    verifier: NoteVerifier
    logs: dict[str, NoteSigner]
    process: ManagedProcess
    binary: Path
    home: Path
    port: int
    log_vkeys: dict[str, str] | None = None  # more logs by public key alone (a real sealer's, whose key is in its token)

    def stop(self) -> None:
        self.process.stop()

    def start(self) -> None:
        dev_witness.start_witness(self.process, self.binary, home=self.home, port=self.port,
                                  logs={**{o: s.verifier.vkey for o, s in self.logs.items()}, **(self.log_vkeys or {})})
        wait_listening(self.process, self.port)


def free_extra_port(base: int) -> int:
    """The first free port in base+5..base+99 (the stack's range for extra services)."""
    for offset in range(FIRST_EXTRA_PORT_OFFSET, LAST_EXTRA_PORT_OFFSET + 1):
        if port_is_free("127.0.0.1", base + offset):
            return base + offset
    raise StackError(f"no free port in {base + FIRST_EXTRA_PORT_OFFSET}..{base + LAST_EXTRA_PORT_OFFSET}")


def wait_listening(process: ManagedProcess, port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_is_open("127.0.0.1", port):
        if process.pid() is None:
            raise StackError(f"omniwitness exited ({process.exit_description()}):\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise StackError(f"omniwitness did not listen on {port} within {timeout_s:.0f}s")
        time.sleep(0.1)


def start_test_witness(home: Path, base_port: int, origins: list[str],
                       logs: dict[str, NoteSigner] | None = None,
                       log_vkeys: dict[str, str] | None = None) -> RunningWitness:
    """Start an omniwitness in `home` accepting `origins`, each under its own fresh log key, `logs`, and the
    origins of `log_vkeys` under those note verifier keys."""
    binary = dev_witness.ensure_binary(cache_dir())
    verifier = dev_witness.ensure_witness_key(home, "witness.test.auditseal.localhost")
    logs = {**{origin: NoteSigner(origin, Ed25519PrivateKey.generate()) for origin in origins}, **(logs or {})}
    port = free_extra_port(base_port)
    process = ManagedProcess("test-witness", home / "witness.pid", home / "witness.log", str(home))
    running = RunningWitness(Witness("test-witness", verifier, f"http://127.0.0.1:{port}"), verifier, logs,
                             process, binary, home, port, log_vkeys)
    running.start()
    return running
