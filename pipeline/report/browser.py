"""Headless Chromium (Debian package ``chromium``): the report's PDF is its print of the report's page, and
the tests look at the page through it (the DOM it builds, a screenshot, its console).

:func:`ensure_chromium` installs the package with apt-get when it is missing and we run as root (the CI and
this machine, as ``dev up`` does for SoftHSM2); otherwise the message says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import AuditSealError, ConfigError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_APT_TIMEOUT_S = 900
_RUN_TIMEOUT_S = 120
# root cannot use Chromium's sandbox (it refuses to start); the page is our own file, with no script
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
          "--no-first-run", "--disable-extensions", "--allow-file-access-from-files")


class BrowserError(AuditSealError):
    """Chromium failed to render a page; the message holds its last line of output."""


def find_chromium() -> str | None:
    """The Chromium executable on PATH, if any."""
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def ensure_chromium(log=print) -> str:
    """Chromium's executable, installing the Debian package first if it is missing (as root, with apt-get)."""
    found = find_chromium()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ConfigError("Chromium is not installed: install the Debian package chromium "
                          "(sudo apt-get install -y chromium)")
    log("installing Chromium (apt-get install -y chromium)")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium"]
    result = subprocess.run(install, capture_output=True, text=True, env=environment, timeout=_APT_TIMEOUT_S)
    if result.returncode != 0:  # most often stale package lists on a fresh machine
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=environment,
                       timeout=_APT_TIMEOUT_S)
        result = subprocess.run(install, capture_output=True, text=True, env=environment, timeout=_APT_TIMEOUT_S)
    found = find_chromium()
    if result.returncode != 0 or not found:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"could not install chromium with apt-get: {detail[0]}")
    return found


@dataclass(frozen=True)
class Rendering:
    """What Chromium produced, and the console messages it logged while loading the page."""

    stdout: str
    console: tuple[str, ...]


def run_chromium(page: Path, *arguments: str, browser: str | None = None) -> Rendering:
    """Load ``page`` in headless Chromium with extra ``arguments`` (``--dump-dom``, ``--screenshot=FILE``,
    ``--print-to-pdf=FILE``); BrowserError if it fails."""
    executable = browser or ensure_chromium()
    profile = page.parent / ".chromium-profile"
    command = [executable, *_FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *arguments,
               page.resolve().as_uri()]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BrowserError(f"chromium did not finish rendering {page} within {_RUN_TIMEOUT_S}s") from None
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BrowserError(f"chromium failed on {page} (exit {result.returncode}): {detail[0]}")
    console = tuple(line for line in result.stderr.splitlines() if "CONSOLE" in line)
    return Rendering(result.stdout, console)


def print_pdf(page: Path, pdf: Path) -> None:
    """Chromium's print of ``page`` to ``pdf``."""
    run_chromium(page, f"--print-to-pdf={pdf.resolve()}", "--no-pdf-header-footer")
    if not pdf.is_file() or pdf.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no PDF to {pdf}")
