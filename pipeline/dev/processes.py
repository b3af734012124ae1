"""Start services detached with a pid file, and stop only the processes we started."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import AuditSealError


class StackError(AuditSealError):
    """The local stack could not be set up; the message says which part and why."""


PRIVATE_UMASK = 0o077


def make_private(folder: Path) -> None:
    """Create ``folder`` if needed and make it and everything in it readable by its owner only (folders
    0700, files 0600): a stack made before services ran with umask 077 is closed up on its next start."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for parent, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(parent, name), 0o700, follow_symlinks=False)
        for name in files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` and we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ManagedProcess:
    """One long-running service of the stack, identified by a pid file and a marker in its argv.

    The marker guards ``stop``: a pid file that outlived its process (after a reboot, say) may name
    a pid the kernel has since given to an unrelated program, which we must never signal.
    """

    name: str
    pid_file: Path
    log_file: Path
    marker: str

    def pid(self) -> int | None:
        """The pid of our running process, or None if it is not running."""
        child = _CHILDREN.get(self.pid_file)
        if child is not None:
            # the kernel's word for our own child: /proc/PID/cmdline can read empty right after exec
            return child.pid if child.poll() is None else None
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        return pid if self.marker in cmdline else None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` in its own session, output appended to the log file; return its pid.

        The service runs with umask 077: the broker's log segments and the S3 server's archive objects
        hold the audit trail, and only the stack's owner may read them (folders 0700, files 0600).
        """
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True, umask=PRIVATE_UMASK,
            )
        _CHILDREN[self.pid_file] = proc
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM our process, then SIGKILL after ``timeout``; True if one was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.1)
        if self.pid() is not None:
            os.kill(pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def exit_description(self) -> str:
        """How our child process ended ("exit 1", "killed by SIGTERM")."""
        child = _CHILDREN.get(self.pid_file)
        if child is None or child.returncode is None:
            return "ended"
        if child.returncode < 0:
            return f"killed by {signal.Signals(-child.returncode).name}"
        return f"exit {child.returncode}"

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the service's log, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])


# services started by this very process, so their exit status can be read (and zombies reaped)
_CHILDREN: dict[Path, subprocess.Popen] = {}


def run_checked(argv: Sequence[str], what: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    """Run a setup command to completion; on failure raise StackError naming ``what`` with its output."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {argv[0]} is not installed ({exc.strerror})") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: no result after {timeout:.0f}s") from exc
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise StackError(f"{what} failed (exit {done.returncode}):\n{output}")
    return done.stdout


def run_with_progress(argv: Sequence[str], what: str, *, log: Callable[[str], object],
                      progress: Callable[[str], str | None] = lambda _line: None, env: dict[str, str] | None = None,
                      timeout: float = 3600, heartbeat: float = 15.0) -> str:
    """Run a long setup command (a download, a build) like :func:`run_checked`, showing how far it is.

    ``progress`` sees each output line and returns a new status ("jars 12/45") or None; ``log`` gets
    ``what`` at the start, the status when it changes (at most every few seconds) and an elapsed-time
    line every ``heartbeat`` seconds, so a first start on a slow machine never looks hung.
    """
    started = time.monotonic()
    log(f"{what}...")
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                stdin=subprocess.DEVNULL, errors="replace")
    except FileNotFoundError as exc:
        raise StackError(f"{what}: {argv[0]} is not installed ({exc.strerror})") from exc
    lines: list[str] = []
    status: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            update = progress(line.rstrip("\n"))
            if update:
                status.append(update)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    shown, last_shown = "", started
    while reader.is_alive():
        reader.join(1.0)
        now = time.monotonic()
        if now - started > timeout:
            proc.kill()
            proc.wait()
            raise StackError(f"{what}: no result after {timeout:.0f}s")
        current = status[-1] if status else ""
        if (current and current != shown and now - last_shown >= 3) or now - last_shown >= heartbeat:
            log(f"  {what}: {current + ', ' if current else ''}{now - started:.0f}s")
            shown, last_shown = current, now
    returncode = proc.wait()
    if returncode != 0:
        output = "\n".join(lines[-25:])
        raise StackError(f"{what} failed (exit {returncode}):\n{output}")
    log(f"  {what}: done in {time.monotonic() - started:.0f}s")
    return "\n".join(lines)


def terminate(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM (the clean shutdown every daemon handles), then SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
