"""What a bucket policy and a bucket's default Object Lock rule may say, for the archive to stay WORM.

Pure (JSON text and dicts in, breaches out), so ``auditseal s3 check`` and the sink judge the same way:

- the policy grants nothing to anonymous or all principals (``"*"``, ``{"AWS": "*"}``), has no ``NotAction``
  or ``NotPrincipal`` Allow (they grant everything not named), and grants no principal a delete or a
  lock-changing right, wildcards included (``s3:*``, ``s3:Delete*``, ``s3:Put*`` cover them);
- a default retention rule, if the bucket has one, is COMPLIANCE for exactly the compliance profile's period
  (without one, every object is still locked, by the sink, with the profile's retain-until date).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from typing import Any

# rights that delete objects, or weaken or remove the protection of the archive
FORBIDDEN_ACTIONS = (
    "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:DeleteBucket", "s3:DeleteBucketPolicy",
    "s3:PutBucketObjectLockConfiguration", "s3:BypassGovernanceRetention", "s3:PutBucketVersioning",
    "s3:PutBucketPolicy", "s3:PutObjectLegalHold", "s3:PutLifecycleConfiguration", "s3:PutBucketLifecycle",
    "s3:PutBucketAcl", "s3:PutObjectAcl",
)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _principals(statement: Mapping[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if isinstance(principal, Mapping):
        return [str(p) for values in principal.values() for p in _list(values)]
    return [str(p) for p in _list(principal)]


def policy_breaches(policy_text: str | None) -> list[str]:
    """Each way the bucket policy ``policy_text`` (None: no policy) opens the archive; empty when it does not."""
    if policy_text is None:
        return []
    try:
        policy = json.loads(policy_text)
    except ValueError as exc:
        return [f"the bucket policy is not JSON ({exc}); it cannot be judged"]
    breaches = []
    for index, statement in enumerate(_list(policy.get("Statement")) if isinstance(policy, Mapping) else []):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        sid = statement.get("Sid") or f"statement {index}"
        if "NotAction" in statement or "NotPrincipal" in statement:
            breaches.append(f"{sid} allows with NotAction/NotPrincipal, which grants everything it does not name")
        principals = _principals(statement)
        if "*" in principals:
            breaches.append(f"{sid} grants {', '.join(map(str, _list(statement.get('Action'))))} to anonymous/all "
                            "principals (\"*\")")
        actions = [str(a) for a in _list(statement.get("Action"))]
        forbidden = sorted({f for f in FORBIDDEN_ACTIONS for a in actions
                            if fnmatch.fnmatchcase(f.lower(), a.lower())})
        if forbidden:
            breaches.append(f"{sid} grants {', '.join(principals) or 'someone'} {', '.join(forbidden)} "
                            f"(via {', '.join(actions)})")
    return breaches


def default_retention_breaches(lock_configuration: Mapping[str, Any], *, profile: str, days: int | None,
                               years: int | None) -> list[str]:
    """Whether the bucket's default Object Lock rule matches the profile (``days`` or ``years`` of it)."""
    default = (lock_configuration.get("Rule") or {}).get("DefaultRetention")
    if not default:
        return []
    found = {k: default.get(k) for k in ("Mode", "Days", "Years") if default.get(k) is not None}
    wanted = {"Mode": "COMPLIANCE", **({"Days": days} if days else {}), **({"Years": years} if years else {})}
    if found != wanted:
        return [f"default retention is {found}, the {profile} profile needs {wanted}"]
    return []


def describe(breaches: Iterable[str]) -> str:
    """One line for a list of breaches."""
    return "; ".join(breaches)
