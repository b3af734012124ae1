"""Validate rendered Kubernetes manifests against the API schemas; run with the validators' virtualenv
(:func:`tests.deployment.toolchain.ensure_validators`), not the project's.

    python validate_manifests.py --kubernetes 1.29.0 --kubernetes 1.37.0 FILE...

Built-in kinds are checked with ``kubernetes-validate`` in strict mode (an unknown field is an error, as
``kubectl apply --validate=strict`` would say); Prometheus Operator kinds with the ``cloudcoil`` models of
their CRDs, which accept unknown fields, so a field the model does not keep is reported here instead.
Prints one JSON list of problems (empty: all valid); exit 0 either way, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import kubernetes_validate
import yaml

MONITORING = "monitoring.coreos.com/v1"


def _dropped(original: Any, kept: Any, path: str) -> list[str]:
    """Paths present in ``original`` that the model did not keep: fields the CRD does not have."""
    if isinstance(original, dict):
        if not isinstance(kept, dict):
            return [path]
        return [p for key, value in original.items()
                for p in ([f"{path}.{key}"] if key not in kept else _dropped(value, kept[key], f"{path}.{key}"))]
    if isinstance(original, list) and isinstance(kept, list) and len(original) == len(kept):
        return [p for i, (a, b) in enumerate(zip(original, kept, strict=False)) for p in _dropped(a, b, f"{path}[{i}]")]
    return []


def validate_custom_resource(document: dict[str, Any]) -> list[str]:
    """Problems of a monitoring.coreos.com/v1 object (ServiceMonitor, PrometheusRule, ...)."""
    from cloudcoil.models.prometheus_operator import v1
    from pydantic import ValidationError

    model = getattr(v1, document.get("kind", ""), None)
    if model is None:
        return [f"unknown kind {document.get('kind')!r} in {MONITORING}"]
    try:
        kept = model.model_validate(document).model_dump(by_alias=True, exclude_unset=True, mode="json")
    except ValidationError as exc:
        return [str(exc)]
    return [f"unknown field {path}" for path in _dropped(document, kept, "")]


def validate_documents(documents: list[dict[str, Any]], versions: list[str]) -> list[dict[str, str]]:
    """One problem record (kind, name, version, error) per invalid document and Kubernetes version."""
    problems = []
    for document in documents:
        identity = {"kind": str(document.get("kind")), "name": str(document.get("metadata", {}).get("name"))}
        if document.get("apiVersion") == MONITORING:
            problems += [{**identity, "version": "crd", "error": e} for e in validate_custom_resource(document)]
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                message = getattr(exc, "message", None) or type(exc).__name__
                path = "/".join(str(p) for p in getattr(exc, "path", []))
                problems.append({**identity, "version": version, "error": f"{path}: {message}" if path else message})
    return problems


def main(argv: list[str]) -> int:
    """Entry point: validate every document of every FILE."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes", action="append", required=True, help="a version such as 1.29.0")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    documents = []
    for name in args.files:
        with open(name) as handle:
            documents += [d for d in yaml.safe_load_all(handle) if d]
    print(json.dumps(validate_documents(documents, args.kubernetes)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
