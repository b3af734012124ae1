"""What ``auditseal seal`` checks before it starts its worker: a configuration it cannot use ends in
one line and exit 2 (ConfigError), not in a crash loop of the Faust worker."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.preflight import KafkaUnusableError, check_kafka
from pipeline.sealer.app import SealerConfig


def check_sealer_setup(settings: KafkaSettings, config: SealerConfig, timeout: float = 30.0) -> None:
    """ConfigError if the CA file is missing, the cluster cannot be used as this role or a topic does not
    exist or is not readable by it (:func:`pipeline.preflight.check_kafka`), or the consumer group
    ``config.app_id`` is not the role's; returns within about ``timeout`` seconds."""
    if not Path(settings.ca_file).is_file():
        raise ConfigError(f"AUDITSEAL_CA_FILE {settings.ca_file}: no such file (the CA certificate of the brokers)")
    for option, topic in (("--raw-topic", config.raw_topic), ("--sealed-topic", config.sealed_topic)):
        try:
            check_kafka(settings, [topic], timeout=timeout)
        except KafkaUnusableError as exc:
            raise KafkaUnusableError(f"{option} {topic}: {exc}") from None
    consumer = Consumer(settings.client_config(**{"group.id": config.app_id, "enable.auto.commit": False,
                                                  "log_level": 2}))
    try:
        consumer.committed([TopicPartition(config.raw_topic, 0)], timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            raise ConfigError(f"--app-id {config.app_id}: {settings.username} may not use this consumer group "
                              "(the roles file grants the sealer the groups starting with auditseal-sealer)") from None
        raise ConfigError(f"--app-id {config.app_id}: the group coordinator did not answer: {error.str()}") from None
    finally:
        consumer.close()
