"""The Avro schemas in ``schemas/``, the only source of truth for the wire format.

Each schema lives in one file per version, ``<family>.v<N>.avsc`` (e.g. ``audit_event.v1.avsc``),
and is identified on the wire by its fingerprint: the CRC-64-AVRO (Rabin) fingerprint of its
Parsing Canonical Form, as defined by the Avro 1.11 specification ("Schema Fingerprints",
"Single-object encoding"). Versions are never edited in a way that changes that form and never
deleted, so any record ever written can still be decoded.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_many

import pipeline
from pipeline.errors import ConfigError

SCHEMAS_DIR_VARIABLE = "AUDITSEAL_SCHEMAS_DIR"
AUDIT_EVENT = "audit_event"
FINGERPRINT_ALGORITHM = "CRC-64-AVRO"

_FILE_NAME = re.compile(r"(?P<family>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc")


@dataclass(frozen=True)
class SchemaVersion:
    """One ``<family>.v<N>.avsc`` file, parsed once and fingerprinted."""

    family: str
    version: int
    path: Path
    raw: Mapping[str, Any] = field(repr=False)
    """The schema as written in the file (with docs and defaults)."""
    parsed: Mapping[str, Any] = field(repr=False)
    """``fastavro.parse_schema`` of ``raw``: what the readers and writers are compiled from."""
    canonical_form: str = field(repr=False)
    fingerprint: bytes
    """The 8 bytes that follow the single-object marker: CRC-64-AVRO of ``canonical_form``, little-endian."""

    @property
    def name(self) -> str:
        """File name without the directory, e.g. ``audit_event.v1.avsc`` (for messages)."""
        return self.path.name

    @property
    def full_name(self) -> str:
        """The Avro full name of the top-level type, e.g. ``dev.auditseal.AuditEvent``."""
        return str(self.parsed["name"])


# Where an installed wheel carries its copy of ``schemas/`` (setup.py copies it there at build time);
# a checkout (and an editable install) reads ``schemas/`` itself, the one source of truth.
PACKAGED_SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"


def schemas_dir(env: Mapping[str, str] | None = None) -> Path:
    """The schemas directory: ``$AUDITSEAL_SCHEMAS_DIR`` if set, else the copy shipped in the installed
    package, else ``schemas/`` at the top of the checkout."""
    override = (os.environ if env is None else env).get(SCHEMAS_DIR_VARIABLE)
    if override:
        return Path(override)
    if PACKAGED_SCHEMAS_DIR.is_dir():
        return PACKAGED_SCHEMAS_DIR
    return Path(pipeline.__file__).resolve().parent.parent / "schemas"


def fingerprint_of(canonical_form: str) -> bytes:
    """CRC-64-AVRO fingerprint of a Parsing Canonical Form, in wire (little-endian) byte order."""
    # fastavro already returns the little-endian byte order the Java implementation and the
    # single-object encoding use, as hex; the Avro spec test vector for "int" is 8f5c393f1ad57572.
    return bytes.fromhex(avro_fingerprint(canonical_form, FINGERPRINT_ALGORITHM))


def load_schema_file(path: Path) -> SchemaVersion:
    """Parse one ``<family>.v<N>.avsc`` file; ConfigError naming the file if its name or content is invalid."""
    match = _FILE_NAME.fullmatch(path.name)
    if match is None:
        raise ConfigError(
            f"{path}: schema files must be named <family>.v<N>.avsc (e.g. audit_event.v2.avsc), "
            "one file per version"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the schema: {exc}") from exc
    try:
        # A fresh named-types table per file: two versions legitimately define the same full name.
        parsed = fastavro.parse_schema(raw)
        canonical_form = to_parsing_canonical_form(raw)
    except Exception as exc:  # fastavro raises several unrelated types for malformed schemas
        raise ConfigError(f"{path}: not a valid Avro schema: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise ConfigError(f"{path}: the top-level type must be a record")
    return SchemaVersion(
        family=match["family"],
        version=int(match["version"]),
        path=path,
        raw=raw,
        parsed=parsed,
        canonical_form=canonical_form,
        fingerprint=fingerprint_of(canonical_form),
    )


class SchemaCatalog:
    """Every schema version of every family, by family and by fingerprint."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        """Index ``versions``; ConfigError if a family skips a version number."""
        self._families: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for schema in sorted(versions, key=lambda s: (s.family, s.version)):
            family = self._families.setdefault(schema.family, [])
            expected = len(family) + 1
            if schema.version != expected:
                raise ConfigError(
                    f"{schema.path}: found {schema.family}.v{schema.version} but "
                    f"{schema.family}.v{expected}.avsc is missing; versions are never deleted, "
                    "or data written with them could no longer be decoded"
                )
            family.append(schema)
            # A later version whose canonical form is unchanged (docs or defaults edited) writes
            # bytes identical to the earlier one, so the earlier file stays the writer schema.
            self._by_fingerprint.setdefault(schema.fingerprint, schema)

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaCatalog:
        """Load every ``*.avsc`` in ``directory`` (default: :func:`schemas_dir`)."""
        directory = schemas_dir() if directory is None else directory
        if not directory.is_dir():
            raise ConfigError(
                f"schemas directory {directory} does not exist; set {SCHEMAS_DIR_VARIABLE} to the "
                "directory holding the .avsc files"
            )
        return cls(load_schema_file(path) for path in sorted(directory.glob("*.avsc")))

    @property
    def families(self) -> list[str]:
        """Names of the schema families present, sorted."""
        return sorted(self._families)

    def versions(self, family: str) -> list[SchemaVersion]:
        """All versions of ``family``, oldest first; ConfigError if there is none."""
        try:
            return list(self._families[family])
        except KeyError:
            raise ConfigError(f"no {family}.v<N>.avsc schema found") from None

    def latest(self, family: str) -> SchemaVersion:
        """The newest version of ``family``: what producers write and readers resolve into."""
        return self.versions(family)[-1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The schema version whose fingerprint (wire byte order) is ``fingerprint``, if any."""
        return self._by_fingerprint.get(bytes(fingerprint))


@lru_cache(maxsize=None)
def _load_cached(directory: Path) -> SchemaCatalog:
    return SchemaCatalog.load(directory)


def default_catalog() -> SchemaCatalog:
    """The catalog of :func:`schemas_dir`, loaded once per process and directory."""
    return _load_cached(schemas_dir())


# -- evolution rules (schemas/README.md) ------------------------------------------------------


def compatibility_problems(
    older: SchemaVersion,
    newer: SchemaVersion,
    samples: Iterable[Mapping[str, Any]] = (),
    random_samples: int = 200,
) -> list[str]:
    """Why ``newer`` may not follow ``older`` under the evolution rules in ``schemas/README.md``.

    Two independent checks, both must pass (empty list):

    - structural rules: no field removed or renamed without an alias, every added field has a
      default, no type changed (records are compared field by field, recursively), enum symbols
      only added, and only if the older enum has a default symbol for readers to fall back on;
    - data: records written with each version are read with the other through Avro schema
      resolution (fastavro), both ways: ``samples`` (valid for ``older``) plus
      ``random_samples`` random records of each version.
    """
    problems: list[str] = []
    _compare_types(older.parsed, newer.parsed, older.full_name.rsplit(".", 1)[-1], older, newer, problems, set())
    old_records = list(samples) + list(generate_many(older.parsed, random_samples))
    new_records = list(generate_many(newer.parsed, random_samples))
    backward = _resolution_problem(older, newer, old_records, "backward")
    if backward is None:
        # Sample events as a newer-version reader sees them are valid newer-version records.
        new_records += [_read(older, newer, record) for record in samples]
    for problem in (backward, _resolution_problem(newer, older, new_records, "forward")):
        if problem is not None:
            problems.append(problem)
    return problems


def _read(writer: SchemaVersion, reader: SchemaVersion, record: Mapping[str, Any]) -> Any:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer.parsed, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, writer.parsed, reader.parsed)


def _resolution_problem(
    writer: SchemaVersion, reader: SchemaVersion, records: Iterable[Mapping[str, Any]], direction: str
) -> str | None:
    for record in records:
        try:
            _read(writer, reader, record)
        except Exception as exc:  # resolution and decoding failures come as several types
            return (
                f"{direction} compatibility: data written with {writer.name} cannot be read with "
                f"{reader.name}: {type(exc).__name__}: {exc}"
            )
    return None


def _resolve(schema: Any, version: SchemaVersion) -> Any:
    if isinstance(schema, str) and schema in version.parsed.get("__named_schemas", {}):
        return version.parsed["__named_schemas"][schema]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    logical = schema.get("logicalType")
    return f"{schema['type']}/{logical}" if logical else str(schema["type"])


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _compare_types(
    old: Any, new: Any, path: str, older: SchemaVersion, newer: SchemaVersion, problems: list[str], seen: set[Any]
) -> None:
    old, new = _resolve(old, older), _resolve(new, newer)
    old_kind, new_kind = _kind(old), _kind(new)
    if old_kind != new_kind:
        problems.append(f"{path}: type changed from {old_kind} to {new_kind}; add a new field instead")
        return
    if old_kind in ("record", "error"):
        if (old["name"], new["name"]) in seen:  # recursive types
            return
        seen.add((old["name"], new["name"]))
        if _short(old["name"]) != _short(new["name"]) and _short(old["name"]) not in map(_short, new.get("aliases", [])):
            problems.append(f"{path}: record {old['name']} renamed to {new['name']} without an alias")
        old_fields = {f["name"]: f for f in old["fields"]}
        matched: set[str] = set()
        for new_field in new["fields"]:
            names = [new_field["name"], *new_field.get("aliases", [])]
            match = next((old_fields[name] for name in names if name in old_fields), None)
            if match is None:
                if "default" not in new_field:
                    problems.append(
                        f"{path}.{new_field['name']}: added without a default; readers of {newer.name} "
                        f"could not read data written with {older.name}"
                    )
                continue
            matched.add(match["name"])
            _compare_types(match["type"], new_field["type"], f"{path}.{new_field['name']}", older, newer, problems, seen)
        for name in old_fields.keys() - matched:
            problems.append(
                f"{path}.{name}: removed or renamed without an alias; keep it, or alias the new name to it"
            )
    elif old_kind == "enum":
        removed = [s for s in old["symbols"] if s not in new["symbols"]]
        added = [s for s in new["symbols"] if s not in old["symbols"]]
        if removed:
            problems.append(f"{path}: enum {_short(old['name'])} lost symbol(s) {', '.join(removed)}")
        if added and "default" not in old:
            problems.append(
                f"{path}: enum {_short(old['name'])} gained {', '.join(added)} but has no default symbol in "
                f"{older.name}, so its readers cannot read them"
            )
        if added and "default" not in new:
            problems.append(f"{path}: enum {_short(new['name'])} gained symbols but has no default symbol in {newer.name}")
    elif old_kind == "fixed":
        if old["size"] != new["size"]:
            problems.append(f"{path}: fixed size changed from {old['size']} to {new['size']}")
    elif old_kind == "array":
        _compare_types(old["items"], new["items"], f"{path}[]", older, newer, problems, seen)
    elif old_kind == "map":
        _compare_types(old["values"], new["values"], f"{path}{{}}", older, newer, problems, seen)
    elif old_kind == "union":
        if len(old) != len(new):
            problems.append(f"{path}: union branches changed from {len(old)} to {len(new)}")
            return
        for branch, (old_branch, new_branch) in enumerate(zip(old, new)):
            _compare_types(old_branch, new_branch, f"{path}<{branch}>", older, newer, problems, seen)
