"""Provision a freshly started stack: SCRAM users, ACLs and topics in Kafka; users, bucket and policy in S3.

Every step is idempotent so ``auditseal dev up`` can run again at any time. Until the roles file of
``auditseal acl`` manages them, the ACLs here are the minimal grants of ``pipeline.topology.ROLES``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from confluent_kafka.error import KafkaError

from pipeline.config import KafkaSettings, S3Settings
from pipeline.devstack import s3server
from pipeline.devstack.processes import StackError
from pipeline.topology import BUCKET, ROLES, TOPICS, Grant

SCRAM_ITERATIONS = 8192
_RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactional_id": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}
_S3_ROLE = {"admin": "admin"}


def acl_binding(principal: str, grant: Grant) -> AclBinding:
    """The Kafka ACL binding (ALLOW, any host) for one grant of a principal."""
    return AclBinding(
        _RESOURCE[grant.resource], grant.name, ResourcePatternType[grant.pattern.upper()], principal, "*",
        AclOperation[grant.operation.upper()], AclPermissionType.ALLOW,
    )


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


def _admin_when_ready(settings: KafkaSettings, timeout: float = 90.0) -> AdminClient:
    # the port opens a little before SCRAM and metadata are served; retry until a request succeeds
    admin = AdminClient(settings.client_config())
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=5)
            return admin
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise StackError(f"Kafka did not answer as the setup user within {timeout:.0f}s: {exc}") from exc
            time.sleep(0.5)


def provision_kafka(env: Mapping[str, str], creds, log=print) -> None:
    """Create each role's SCRAM-SHA-512 user, its ACLs, and the audit topics with their explicit configs."""
    admin = _admin_when_ready(KafkaSettings.from_env(env))
    upserts = [
        UserScramCredentialUpsertion(
            role.name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            creds.kafka[role.name].encode(),
        )
        for role in ROLES
    ]
    _wait_all(admin.alter_user_scram_credentials(upserts), "creating SCRAM users")
    bindings = [acl_binding(role.principal, grant) for role in ROLES for grant in role.kafka]
    _wait_all(admin.create_acls(bindings), "creating ACLs")
    new = [NewTopic(t.name, num_partitions=t.partitions, replication_factor=t.replication_factor, config=t.configs())
           for t in TOPICS]
    _wait_all(admin.create_topics(new), "creating topics",
              tolerate=lambda e: e.code() == KafkaError.TOPIC_ALREADY_EXISTS)
    # topics that already existed get their configs re-asserted, so a hand edit does not survive `up`
    resources = [
        ConfigResource(ResourceType.TOPIC, t.name,
                       incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in t.configs().items()])
        for t in TOPICS
    ]
    _wait_all(admin.incremental_alter_configs(resources), "asserting topic configs")
    log(f"kafka: {len(ROLES)} SCRAM users, {len(bindings)} ACLs, topics {', '.join(t.name for t in TOPICS)}")


def provision_s3(binary: Path, env: Mapping[str, str], creds, log=print) -> None:
    """Create each role's S3 user, the Object Lock bucket, and the bucket policy granting the roles' access."""
    settings = S3Settings.from_env(env)
    for role in ROLES:
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
    writers = [creds.s3[r.name]["access"] for r in ROLES if r.s3_access == "write"]
    readers = [creds.s3[r.name]["access"] for r in ROLES if r.s3_access == "read"]
    s3.put_bucket_policy(Bucket=BUCKET, Policy=s3server.bucket_policy(BUCKET, readers, writers))
    log(f"s3: bucket {BUCKET} with Object Lock, {len(ROLES)} users, {len(writers)} writer(s), {len(readers)} reader(s)")
