"""The level of the broker's authorizer logger, read (and, for tests of the attack, set) over the admin protocol.

confluent-kafka's admin client has no BROKER_LOGGER resource, so this speaks DescribeConfigs (API 32) and
IncrementalAlterConfigs (API 44, version 0) for resource type 8 through aiokafka's protocol layer (already
installed with Faust): the same requests Kafka's own ``kafka-configs --entity-type broker-loggers`` sends.
A broker logger change lives in the broker's memory only: it is in no metadata log and no file, so the
access auditor reads it back every few seconds.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TypeAlias

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DescribeConfigsRequest
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError

BROKER_LOGGER = 8  # Kafka's ConfigResource.Type.BROKER_LOGGER
AUTHORIZER_LOGGER = "kafka.authorizer.logger"
# levels at which the broker still writes the allowed decisions (DEBUG) and the denials (INFO)
FULL_LEVELS = ("DEBUG", "TRACE", "ALL")
TIMEOUT_S = 20.0


class BrokerLoggerError(AuditSealError):
    """The broker refused or failed a logger config request."""


class IncrementalAlterConfigsResponse_v0(Response):
    API_KEY = 44
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("responses", Array(("error_code", Int16), ("error_message", String("utf-8")), ("resource_type", Int8),
                            ("resource_name", String("utf-8")))),
    )


class IncrementalAlterConfigsRequest_v0(RequestStruct):
    API_KEY = 44
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(
        ("resources", Array(("resource_type", Int8), ("resource_name", String("utf-8")),
                            ("configs", Array(("name", String("utf-8")), ("config_operation", Int8),
                                              ("value", String("utf-8")))))),
        ("validate_only", Boolean),
    )


IncrementalAlterConfigsRequestStruct: TypeAlias = IncrementalAlterConfigsRequest_v0


class IncrementalAlterConfigsRequest(Request[IncrementalAlterConfigsRequestStruct]):
    API_KEY = 44

    def __init__(self, resources: list) -> None:
        self._resources = resources

    def build(self, request_struct_class: type[IncrementalAlterConfigsRequestStruct]
              ) -> IncrementalAlterConfigsRequestStruct:
        return request_struct_class(self._resources, False)


def _client(settings: KafkaSettings) -> AIOKafkaAdminClient:
    context = ssl.create_default_context(cafile=settings.ca_file)
    if settings.certificate_file:
        context.load_cert_chain(settings.certificate_file, settings.key_file)
        return AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, security_protocol="SSL", ssl_context=context)
    return AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap, security_protocol="SASL_SSL", ssl_context=context,
                               sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=settings.username,
                               sasl_plain_password=settings.password)


async def _send(settings: KafkaSettings, requests: list[tuple[int, Request]]) -> list:
    admin = _client(settings)
    await admin.start()
    try:
        # aiokafka has no public call for an arbitrary request: _send_request is its own admin calls' path
        return [await admin._send_request(request, broker) for broker, request in requests]
    finally:
        await admin.close()


def _run(settings: KafkaSettings, requests: list[tuple[int, Request]]) -> list:
    try:
        return asyncio.run(asyncio.wait_for(_send(settings, requests), TIMEOUT_S))
    except (OSError, asyncio.TimeoutError, Exception) as exc:  # aiokafka raises its own KafkaError family
        if isinstance(exc, BrokerLoggerError):
            raise
        raise BrokerLoggerError(f"logger config request to {settings.bootstrap} failed: "
                                f"{type(exc).__name__}: {exc}") from None


def authorizer_levels(settings: KafkaSettings, brokers: list[int]) -> dict[int, str]:
    """The level of ``kafka.authorizer.logger`` on each broker (cluster DESCRIBE_CONFIGS needed)."""
    requests = [(b, DescribeConfigsRequest([(BROKER_LOGGER, str(b), [AUTHORIZER_LOGGER])])) for b in brokers]
    levels = {}
    for broker, response in zip(brokers, _run(settings, requests)):
        for error, message, _type, _name, entries in response.resources:
            if error:
                raise BrokerLoggerError(f"broker {broker} refused to describe its loggers: error {error} {message}")
            for entry in entries:
                if entry[0] == AUTHORIZER_LOGGER:
                    levels[broker] = entry[1]
    return levels


def set_authorizer_level(settings: KafkaSettings, broker: int, level: str) -> None:
    """Set ``kafka.authorizer.logger`` on ``broker`` (cluster ALTER_CONFIGS needed): what the attack does."""
    request = IncrementalAlterConfigsRequest([(BROKER_LOGGER, str(broker), [(AUTHORIZER_LOGGER, 0, level)])])
    (response,) = _run(settings, [(broker, request)])
    for error, message, _type, _name in response.responses:
        if error:
            raise BrokerLoggerError(f"broker {broker} refused to set {AUTHORIZER_LOGGER}={level}: error {error} "
                                    f"{message}")
