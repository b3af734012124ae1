"""Setting up personal-data protection on a cluster: the key store topic, the KEK, the pseudonym key.

``auditseal dev up`` runs :func:`provision_keystore` (as the setup user) and :func:`ensure_kek`; on a
production cluster the admin creates the topic with :data:`~pipeline.privacy.keystore.KEYS_TOPIC_CONFIGS`
(replication factor 3) and the KEK comes from the organisation's KMS or HSM, never from this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType
from confluent_kafka.error import KafkaError, KafkaException

from pipeline.archive.encryption import MasterKey, generate_master_key, load_master_key
from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.privacy.keystore import (
    KEK_FILE_VARIABLE,
    KEYS_TOPIC_CONFIGS,
    KEYS_TOPIC_PARTITIONS,
    KEYSTORE_PASSWORD_VARIABLE,
    KEYSTORE_USERNAME_VARIABLE,
    KeyStore,
)
from pipeline.wire.topics import KEYS_TOPIC

KEK_FILE_NAME = "kek.json"
# roles whose commands need the KEK; the producer also gets the privacy role's key-store identity
KEK_ROLES = ("producer", "privacy", "investigator")


def ensure_kek(keys_dir: Path) -> MasterKey:
    """The stack's KEK (``keys/kek.json``, mode 600), created on first call."""
    path = keys_dir / KEK_FILE_NAME
    if path.exists():
        return load_master_key(path)
    return generate_master_key(path, key_id="kek-1")


def privacy_env(role_name: str, keys_dir: Path, passwords: Mapping[str, str]) -> dict[str, str]:
    """The extra variables of ``role_name`` on a local stack: the KEK file, and for producers the key store identity."""
    if role_name not in KEK_ROLES:
        return {}
    env = {KEK_FILE_VARIABLE: str(keys_dir / KEK_FILE_NAME)}
    if role_name == "producer" and "privacy" in passwords:
        env[KEYSTORE_USERNAME_VARIABLE] = "privacy"
        env[KEYSTORE_PASSWORD_VARIABLE] = passwords["privacy"]
    return env


def provision_keystore(admin: AdminClient, setup_env: Mapping[str, str], kek: MasterKey, log=print) -> None:
    """Create ``audit.keys`` (compacted) or re-assert its configs, then its pseudonym key if it has none."""
    futures = admin.create_topics([NewTopic(KEYS_TOPIC, num_partitions=KEYS_TOPIC_PARTITIONS, replication_factor=1,
                                            config=KEYS_TOPIC_CONFIGS)])
    for future in futures.values():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ConfigError(f"creating {KEYS_TOPIC} failed: {exc.args[0].str()}") from None
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in KEYS_TOPIC_CONFIGS.items()]
    for future in admin.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, KEYS_TOPIC,
                                                                  incremental_configs=entries)]).values():
        future.result(timeout=30)
    with KeyStore(KafkaSettings.from_env(setup_env), kek) as store:
        version = store.ensure_pseudonym_key().version
        subjects = store.subject_count()
    log(f"kafka: key store {KEYS_TOPIC} (compacted), pseudonym key v{version}, {subjects} subject(s)")
