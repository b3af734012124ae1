"""Validation of OCSF events against the official OCSF schema source (1.9.0-dev, Apache-2.0).

The source tree (``../shared/ocsf-schema`` next to the checkout, or ``$AUDITSEAL_OCSF_SCHEMA``) is
compiled by ``ocsf-lib`` (the OCSF project's Python tooling, ``python -m ocsf.compile``), the class
JSON Schemas are generated from the compiled schema by ``ocsf-json-schema``, and ``jsonschema``
validates (Draft 2020-12). Two adaptations, both of the compiler's output format and not of the
rules: ``ocsf-lib`` 0.10.4 writes ``null`` for absent fields, and its object-type planner never
fires (it tests ``type[:-2] == "_t"``), so attributes naming an object keep the object's name as
their type instead of ``object_t`` + ``object_type``; and an attribute a class defines itself keeps
the ``profile`` tag of a profile its base event also includes (``api_activity.actor`` compiles as
the ``host`` profile's), which would drop a class's own required attributes from every event without
that profile. ``_export_form`` does what the planner meant to and drops the tag from attributes the
class's source (or an ancestor's, not through ``$include``) defines itself, as the OCSF server does.
The compiled schema is cached under ``$AUDITSEAL_CACHE/ocsf`` keyed by a hash of the source tree.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCHEMA_VARIABLE = "AUDITSEAL_OCSF_SCHEMA"


def schema_source() -> Path:
    """The OCSF schema source tree: ``$AUDITSEAL_OCSF_SCHEMA``, else ``shared/ocsf-schema`` beside the checkout (or
    beside the folder of worktrees)."""
    explicit = os.environ.get(SCHEMA_VARIABLE)
    candidates = [Path(explicit)] if explicit else [REPO.parent / "shared" / "ocsf-schema",
                                                    REPO.parents[1] / "shared" / "ocsf-schema"]
    for candidate in candidates:
        if (candidate / "version.json").is_file():
            return candidate
    raise FileNotFoundError(f"no OCSF schema source at {', '.join(map(str, candidates))}; set {SCHEMA_VARIABLE}")


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.json")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _strip_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_strip_nulls(item) for item in value]
    return value


def _own_attributes(source: Path) -> dict[str, set[str]]:
    # class name -> attributes its own file and its ancestors' files define directly
    files = {}
    for path in (source / "events").rglob("*.json"):
        data = json.loads(path.read_text())
        if "name" in data:
            files[data["name"]] = data
    own = {}
    for name in files:
        names, current, seen = set(), name, set()
        while current in files and current not in seen:
            seen.add(current)
            names.update(key for key in files[current].get("attributes", {}) if key != "$include")
            current = files[current].get("extends")
        own[name] = names
    return own


def _export_form(compiled: dict[str, Any], source: Path) -> dict[str, Any]:
    schema = _strip_nulls(compiled)
    objects = set(schema["objects"])
    for group in ("classes", "objects"):
        for definition in schema[group].values():
            for attribute in definition.get("attributes", {}).values():
                if attribute.get("type") in objects:
                    attribute["object_type"], attribute["type"] = attribute["type"], "object_t"
    own = _own_attributes(source)
    for name, definition in schema["classes"].items():
        for attribute_name, attribute in definition.get("attributes", {}).items():
            if "profile" in attribute and attribute_name in own.get(name, ()):
                del attribute["profile"]
    return schema


@lru_cache(maxsize=1)
def compiled_schema() -> dict[str, Any]:
    """The compiled OCSF schema (in the OCSF server's export form), from the cache or compiled now."""
    from ocsf.compile.compiler import Compilation
    from ocsf.compile.options import CompilationOptions
    from ocsf.repository import read_repo
    from ocsf.schema import to_dict

    source = schema_source()
    cache = Path(os.environ.get("AUDITSEAL_CACHE", Path.home() / ".cache" / "auditseal")) / "ocsf"
    cached = cache / f"compiled-{_tree_digest(source)}-v2.json"
    if cached.exists():
        return json.loads(cached.read_text())
    compiled = _export_form(to_dict(Compilation(read_repo(str(source), preserve_raw_data=False),
                                                CompilationOptions()).build()), source)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(compiled))
    partial.rename(cached)
    return compiled


@cache
def _validator(class_uid: int, profiles: tuple[str, ...]):
    import jsonschema
    from ocsf_json_schema import OcsfJsonSchemaEmbedded

    schema = compiled_schema()
    names = [name for name, definition in schema["classes"].items() if definition["uid"] == class_uid]
    if len(names) != 1:
        raise AssertionError(f"class_uid {class_uid} names {len(names)} classes of the OCSF schema")
    class_schema = OcsfJsonSchemaEmbedded(schema).get_class_schema(names[0], list(profiles))
    validator_class = jsonschema.validators.validator_for(class_schema)
    validator_class.check_schema(class_schema)
    return validator_class(class_schema)


def ocsf_errors(event: dict[str, Any]) -> list[str]:
    """Every violation of the OCSF class schema of ``event`` (class_uid, with its metadata.profiles)."""
    profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
    validator = _validator(event["class_uid"], profiles)
    return [f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in validator.iter_errors(event)]


def schema_version() -> str:
    """The version of the compiled schema (``1.9.0-dev``)."""
    return compiled_schema()["version"]
