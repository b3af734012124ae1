"""Setting up personal-data protection on a cluster: the key store topic, the KEK, the pseudonym key.

``auditseal dev up`` runs :func:`provision_keystore` (as the setup user), :func:`ensure_kek` (the KEK file,
the stack's default) and :func:`ensure_token_kek` (a KEK in the stack's SoftHSM2 token); on a production
cluster the admin creates the topic with :data:`~pipeline.privacy.keystore.KEYS_TOPIC_CONFIGS`
(replication factor 3) and the KEK is a non-extractable key in the organisation's HSM
(``AUDITSEAL_KEK=pkcs11:LABEL``), never a file.
"""

from __future__ import annotations

import time
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
TOKEN_KEK_LABEL = "auditseal-kek"
# roles whose commands need the KEK; the producer also gets the privacy role's key-store identity
KEK_ROLES = ("producer", "privacy", "investigator")


def ensure_kek(keys_dir: Path) -> MasterKey:
    """The stack's KEK (``keys/kek.json``, mode 600), created on first call."""
    path = keys_dir / KEK_FILE_NAME
    if path.exists():
        return load_master_key(path)
    return generate_master_key(path, key_id="kek-1")


def ensure_token_kek(token, label: str = TOKEN_KEK_LABEL):
    """The KEK labelled ``label`` in ``token`` (a :class:`pipeline.keys.pkcs11.Token`), made inside it
    (non-extractable) on first call: ``AUDITSEAL_KEK=pkcs11:<label>`` selects it."""
    import secrets

    if token.master_key_count(label) == 0:
        return token.generate_master_key(label, "kek-hsm-" + secrets.token_hex(6))
    return token.master_key(label)


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
    _wait_for_leaders(KafkaSettings.from_env(setup_env), KEYS_TOPIC, KEYS_TOPIC_PARTITIONS)
    with KeyStore(KafkaSettings.from_env(setup_env), kek) as store:
        version = store.ensure_pseudonym_key().version
        subjects = store.subject_count()
    log(f"kafka: key store {KEYS_TOPIC} (compacted), pseudonym key v{version}, {subjects} subject(s)")


def _wait_for_leaders(settings: KafkaSettings, topic: str, partitions: int, timeout: float = 60.0) -> None:
    # On a cluster a new topic reaches each broker's metadata at its own pace; the key store reads it
    # from whichever broker it asks ("Unknown topic or partition" right after creation), so ask each
    deadline = time.monotonic() + timeout
    brokers = AdminClient(settings.client_config()).list_topics(timeout=30).brokers.values()
    for broker in brokers:
        one = AdminClient(settings.client_config(**{"bootstrap.servers": f"{broker.host}:{broker.port}"}))
        while True:
            found = one.list_topics(topic, timeout=30).topics.get(topic)
            if (found is not None and found.error is None and len(found.partitions) == partitions
                    and all(p.leader >= 0 for p in found.partitions.values())):
                break
            if time.monotonic() > deadline:
                raise ConfigError(f"{topic}: broker {broker.id} did not show its {partitions} partitions "
                                  f"within {timeout:.0f}s")
            time.sleep(0.2)
