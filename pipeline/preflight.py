"""Before a daemon or a command starts its real work: can it use this Kafka cluster at all?

Every long-running part (the sealer, the sink, the detector, the access auditor) and ``verify --kafka``
call :func:`check_kafka` first. Without it a wrong password, an unknown user or an unreachable broker
never ends: librdkafka and Faust's aiokafka retry forever and print a line per attempt. Here one short
metadata request per topic either succeeds within a bounded time or raises :class:`KafkaUnusableError`,
a :class:`~pipeline.errors.ConfigError`, so the command line prints one line and exits 2.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError

PREFLIGHT_TIMEOUT_S = 20.0
# librdkafka's error codes that no retry can cure: the credentials, the TLS setup or the SASL setup are wrong
_FATAL_CODES = {
    KafkaError._AUTHENTICATION: "refused the credentials of user {user!r}",
    KafkaError._SSL: "failed the TLS handshake",
    KafkaError.SASL_AUTHENTICATION_FAILED: "refused the credentials of user {user!r}",
    KafkaError.ILLEGAL_SASL_STATE: "refused the SASL handshake",
    KafkaError.UNSUPPORTED_SASL_MECHANISM: "does not offer SCRAM-SHA-512",
}


class KafkaUnusableError(ConfigError):
    """The cluster cannot be used with these settings: unreachable, credentials or TLS refused, or a
    topic missing or not granted. The message names the broker, the user and the cause."""


def check_kafka(settings: KafkaSettings, topics: Iterable[str] = (), *,
                timeout: float = PREFLIGHT_TIMEOUT_S) -> dict[str, int]:
    """Prove within ``timeout`` seconds that the cluster answers, accepts ``settings``' credentials over
    TLS and shows each of ``topics`` to this principal; return each topic's partition count.

    Raises KafkaUnusableError on the first cause no retry can cure (credentials, TLS), when no broker
    answered within ``timeout``, or naming the topic that does not exist or is not granted.
    """
    fatal: list[KafkaError] = []
    transient: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        (fatal if error.code() in _FATAL_CODES or error.fatal() else transient).append(error)

    where = f"Kafka at {settings.bootstrap}"
    try:
        # log_level 0: the errors come to on_error, and the one line below says what they mean
        admin = AdminClient(settings.client_config(error_cb=on_error, log_level=0, **{
            "socket.connection.setup.timeout.ms": 10_000, "reconnect.backoff.max.ms": 2_000}))
    except KafkaException as exc:
        raise KafkaUnusableError(f"cannot connect to {where}: {exc.args[0].str()}") from None
    names = list(topics)
    deadline = time.monotonic() + timeout
    described = {}
    # one topic per request: a topic this principal may not describe is reported as not authorized,
    # where a listing of every topic would silently leave it out
    for name in names or [None]:
        while name not in described:
            admin.poll(0)  # serves on_error
            if fatal:
                error = fatal[0]
                what = _FATAL_CODES.get(error.code(), "stopped the client").format(user=settings.username)
                raise KafkaUnusableError(f"{where} {what}: {error.str()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = f" (last error: {transient[-1].str()})" if transient else ""
                raise KafkaUnusableError(f"no broker of {where} answered within {timeout:.0f}s{last}")
            try:
                # short requests in a loop: a refused login arrives through on_error and must end the wait now
                described[name] = admin.list_topics(name, timeout=min(remaining, 1.0)).topics.get(name)
            except KafkaException as exc:
                transient.append(exc.args[0])
    partitions: dict[str, int] = {}
    for name in names:
        topic = described[name]
        error = topic.error if topic is not None else None
        if topic is None or (error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            raise KafkaUnusableError(f"topic {name!r} does not exist on {where}")
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise KafkaUnusableError(f"user {settings.username!r} is not granted topic {name!r} on {where}")
        if error is not None:
            raise KafkaUnusableError(f"metadata of topic {name!r} on {where}: {error.name()}: {error.str()}")
        partitions[name] = len(topic.partitions)
    return partitions
