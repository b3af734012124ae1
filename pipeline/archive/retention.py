"""Compliance profiles (``config/compliance.yaml``) and the retain-until date of an archived object.

The date is computed from the records alone: the newest record timestamp of the object, rounded
up to the whole second, plus the profile's retention. A retried object therefore gets the same
date (and byte-identical manifest), and every record is kept at least the profile's period after
it was sealed. Years are calendar years (an event of 29 February is kept until 1 March).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.errors import ConfigError

COMPLIANCE_FILE_VARIABLE = "AUDITSEAL_COMPLIANCE_FILE"
MAX_YEARS = 100

_RETENTION = re.compile(r"([1-9][0-9]*)([yd])")
_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class ComplianceProfile:
    """A named retention period."""

    name: str
    years: int = 0
    days: int = 0
    why: str = ""

    @property
    def retention(self) -> str:
        """The period as written in the file, e.g. ``1y`` or ``180d``."""
        return f"{self.years}y" if self.years else f"{self.days}d"

    def retain_until(self, newest_timestamp_micros: int) -> datetime.datetime:
        """When the lock on an object whose newest record has this timestamp may end (aware, UTC, whole second)."""
        seconds = -(-newest_timestamp_micros // 1_000_000)  # round up: never a moment short
        start = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        if self.days:
            return start + datetime.timedelta(days=self.days)
        try:
            return start.replace(year=start.year + self.years)
        except ValueError:  # 29 February into a common year: the day after 28 February
            return start.replace(year=start.year + self.years, month=3, day=1)


@dataclass(frozen=True)
class ComplianceProfiles:
    """Every profile of a compliance file, and the file's default."""

    path: Path
    profiles: Mapping[str, ComplianceProfile]
    default: str

    def get(self, name: str | None) -> ComplianceProfile:
        """The profile ``name`` (the default if None); ConfigError listing the known names."""
        chosen = self.default if name is None else name
        try:
            return self.profiles[chosen]
        except KeyError:
            raise ConfigError(f"{self.path}: no compliance profile {chosen!r}; known: "
                              f"{', '.join(sorted(self.profiles))}") from None


def compliance_file_path() -> Path:
    """``$AUDITSEAL_COMPLIANCE_FILE``, or ``config/compliance.yaml`` in the checkout."""
    configured = os.environ.get(COMPLIANCE_FILE_VARIABLE)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "config" / "compliance.yaml"


def load_profiles(path: Path | None = None) -> ComplianceProfiles:
    """Read and check a compliance file; ConfigError naming the file, the entry and the problem."""
    path = compliance_file_path() if path is None else path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read compliance profiles {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_profiles(raw, path)


def parse_profiles(raw: object, path: Path) -> ComplianceProfiles:
    """Check the parsed YAML of a compliance file (see :func:`load_profiles`)."""
    if not isinstance(raw, dict) or set(raw) - {"version", "default", "profiles"}:
        raise ConfigError(f"{path}: expected the keys version, default and profiles")
    if raw.get("version") != 1:
        raise ConfigError(f"{path}: version must be 1, found {raw.get('version')!r}")
    entries = raw.get("profiles")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: profiles must map names to {{retention: ..., why: ...}}")
    profiles = {}
    for name, entry in entries.items():
        where = f"{path}: profile {name!r}"
        if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):
            raise ConfigError(f"{where}: a name is lower case letters, digits and dashes")
        if not isinstance(entry, dict) or set(entry) - {"retention", "why"} or "retention" not in entry:
            raise ConfigError(f"{where}: expected {{retention: <N>y|<N>d, why: ...}}")
        match = _RETENTION.fullmatch(str(entry["retention"]))
        if match is None:
            raise ConfigError(f"{where}: retention {entry['retention']!r} must be <N>y (years) or <N>d (days), N > 0")
        amount = int(match[1])
        years, days = (amount, 0) if match[2] == "y" else (0, amount)
        if years > MAX_YEARS or days > MAX_YEARS * 366:
            raise ConfigError(f"{where}: retention {entry['retention']} exceeds {MAX_YEARS} years")
        profiles[name] = ComplianceProfile(name, years=years, days=days, why=str(entry.get("why", "")))
    default = raw.get("default")
    if default not in profiles:
        raise ConfigError(f"{path}: default {default!r} is not one of the profiles ({', '.join(sorted(profiles))})")
    return ComplianceProfiles(path, profiles, default)
