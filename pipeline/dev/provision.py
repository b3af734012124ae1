"""Provision a freshly started stack: SCRAM users, ACLs and topics in Kafka; users, bucket and policy in S3.

Every step is idempotent so ``auditseal dev up`` can run again at any time. Users and ACLs are applied
from the roles file with the same code as ``auditseal acl apply`` (:mod:`pipeline.permissions.broker`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from confluent_kafka.error import KafkaError

from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev import s3server
from pipeline.dev.cache import stack_dir
from pipeline.dev.processes import StackError
from pipeline.permissions.acls import grant_entry
from pipeline.permissions.broker import apply_plan, plan_changes, remove_super_user_credentials
from pipeline.permissions.plan import SCRAM_ITERATIONS
from pipeline.wire.topics import TOPICS
from pipeline.permissions.topology import BUCKET, Grant, roles, roles_file

_S3_ROLE = {"admin": "admin"}


def acl_binding(principal: str, grant: Grant) -> AclBinding:
    """The Kafka ACL binding (ALLOW, any host) for one grant of a principal."""
    return grant_entry(principal, grant).to_binding()


@contextmanager
def acl_lock(root: Path) -> Iterator[None]:
    """Hold the local stack's lock on users and ACLs: ``dev up`` of sessions started at the same time
    apply one after the other, and a test that changes ACLs by hand is not undone half-way."""
    lock_file = root / "run" / "acl.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_all(futures: Mapping, what: str, tolerate: Callable[[KafkaError], bool] = lambda e: False) -> None:
    failures = []
    for key, future in futures.items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            error = exc.args[0]
            if not tolerate(error):
                failures.append(f"{key}: {error.str()}")
    if failures:
        raise StackError(f"{what} failed: " + "; ".join(failures))


def _admin_when_ready(config: Mapping[str, object], who: str, timeout: float = 90.0) -> AdminClient:
    # the port opens a little before SCRAM and metadata are served; retry until a request succeeds
    admin = AdminClient(dict(config))
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=5)
            return admin
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not answer {who} within {timeout:.0f}s: {exc}") from exc
            time.sleep(0.5)


def expected_users(creds) -> dict[str, str]:
    """Every SCRAM user the local stack needs, with its password: each role's user (the setup identity
    and the broker are certificates, never SCRAM users)."""
    return {r.name: creds.kafka[r.name] for r in roles()}


def users_without_credential(admin: AdminClient, names: Collection[str]) -> list[str]:
    """The users among ``names`` for which the broker holds no SCRAM-SHA-512 credential (a super user's
    or the admin role's client: it needs cluster DESCRIBE)."""
    described = admin.describe_user_scram_credentials()
    try:
        present = {user for user, description in described.result(timeout=30).items()
                   if any(info.mechanism == ScramMechanism.SCRAM_SHA_512 for info in description.scram_credential_infos)}
    except KafkaException as exc:
        raise StackError(f"describing SCRAM users failed: {exc.args[0].str()}") from None
    return sorted(set(names) - present)


def reassert_users(broker_tls: Mapping[str, str], creds, *, new_cluster: bool = False, timeout: float = 90.0,
                   log=print) -> list[str]:
    """Give every user the stack expects (:func:`expected_users`) its SCRAM credential again if the broker
    lacks it, as the broker itself (mutual TLS on the internal listener); returns the users repaired.

    Kafka 3.5 to 4.4 can lose every SCRAM user when a broker replays a metadata log in which a user was
    deleted (``ScramDelta.apply()`` removes from the map it iterates; README, "SCRAM users lost on a
    restart"). Then no password works; the broker's own certificate is a super user that needs none, so
    the stack repairs itself here. On a ``new_cluster`` they are simply created.
    """
    admin = _admin_when_ready(broker_tls, "on its internal listener", timeout)
    expected = expected_users(creds)
    missing = users_without_credential(admin, expected)
    if missing:
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        upsert = [UserScramCredentialUpsertion(user, info, expected[user].encode()) for user in missing]
        _wait_all(admin.alter_user_scram_credentials(upsert), "re-asserting SCRAM users")
        if not new_cluster:
            log(f"kafka: REPAIRED: the broker had lost the SCRAM credential of {', '.join(missing)}; set again "
                "(see README, \"SCRAM users lost on a restart\")")
    return missing


def provision_kafka(env: Mapping[str, str], creds, log=print, replicas: int | None = None) -> None:
    """Apply the roles file (each role's SCRAM-SHA-512 user and ACLs, with ``auditseal acl apply``'s code),
    then create the audit topics with their explicit configs. Like topic configs, ACLs are re-asserted:
    a hand-made ACL on AuditSeal's resources does not survive ``up`` (users unknown to the file do).
    ``replicas`` (a cluster's 3) overrides the topics' replication factor, with ``min.insync.replicas=2``."""
    admin = _admin_when_ready(KafkaSettings.from_env(env).client_config(), "as the setup user")
    with acl_lock(stack_dir()):
        # a SCRAM credential named like a super user (the setup user's of stacks formatted before super users
        # became certificate-only, or one an attacker set) is deleted: it must not exist, even unusable
        removed = remove_super_user_credentials(admin, roles_file())
        if removed:
            log(f"kafka: deleted SCRAM credential(s) named like a super user: {', '.join(removed)}")
        plan = plan_changes(admin, roles_file(), passwords=creds.kafka)
        apply_plan(admin, plan, passwords=creds.kafka)
    topics = [dataclasses.replace(t, replication_factor=replicas, min_insync_replicas=replicas - 1)
              if replicas and replicas > 1 else t for t in TOPICS]
    new = [NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication_factor, config=t.configs())
           for t in topics]
    _wait_all(admin.create_topics(new), "creating topics",
              tolerate=lambda e: e.code() == KafkaError.TOPIC_ALREADY_EXISTS)
    # topics that already existed get their configs re-asserted, so a hand edit does not survive `up`
    resources = [
        ConfigResource(ResourceType.TOPIC, t.name,
                       incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in t.configs().items()])
        for t in topics
    ]
    _wait_all(admin.incremental_alter_configs(resources), "asserting topic configs")
    from pipeline.privacy.provision import ensure_kek, provision_keystore

    provision_keystore(admin, env, ensure_kek(stack_dir() / "keys"), log=log)
    log(f"kafka: roles file {roles_file().path.name} applied ({len(roles())} users; {len(plan.users_to_set)} user(s) set, "
        f"{len(plan.acls_to_add)} ACL(s) added, {len(plan.acls_to_remove)} removed), "
        f"topics {', '.join(t.name for t in TOPICS)}")


def provision_s3(binary: Path, env: Mapping[str, str], creds, log=print) -> None:
    """Create each role's S3 user, the Object Lock bucket, and the bucket policy granting the roles' access."""
    settings = S3Settings.from_env(env)
    for role in roles():
        keys = creds.s3[role.name]
        s3server.create_user(
            binary, endpoint=settings.endpoint_url, ca_file=Path(settings.ca_bundle),
            root_access=settings.access_key_id, root_secret=settings.secret_access_key,
            access=keys["access"], secret=keys["secret"], role=_S3_ROLE.get(role.s3_access, "user"),
        )
    s3 = settings.client()
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    lock = s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]
    if lock.get("ObjectLockEnabled") != "Enabled":
        raise StackError(f"bucket {BUCKET} exists without Object Lock; it cannot be fixed in place, "
                         "run `auditseal dev down --purge` and `auditseal dev up`")
    writers = [creds.s3[r.name]["access"] for r in roles() if r.s3_access == "write"]
    readers = [creds.s3[r.name]["access"] for r in roles() if r.s3_access == "read"]
    s3.put_bucket_policy(Bucket=BUCKET, Policy=s3server.bucket_policy(BUCKET, readers, writers))
    log(f"s3: bucket {BUCKET} with Object Lock, {len(roles())} users, {len(writers)} writer(s), {len(readers)} reader(s)")
