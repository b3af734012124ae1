"""The producer library, the one part of AuditSeal a service installs: ``pip install auditseal``.

- :class:`AuditProducer` — validates, encodes and sends audit events to ``audit.raw``, never a silent drop
- :func:`new_event`, :func:`complete_event` — build event dicts with the fields a service should not invent
- :mod:`pipeline.producer.emit` — what ``auditseal emit`` reads (JSON lines, options)
- :mod:`pipeline.producer.synthetic` — realistic synthetic events for demos, benchmarks and tests

It needs only confluent-kafka and fastavro: no Faust, boto3 or dev stack.
"""

from pipeline.producer.client import (
    AuditProducer,
    AuthenticationError,
    AuthorizationError,
    BrokerUnavailableError,
    DeliveryError,
    DeliveryResult,
    DeliveryTimeoutError,
    ProducerClosedError,
    ProducerFatalError,
    ProducerQueueFullError,
    UndeliveredEventsError,
)
from pipeline.producer.event import complete_event, new_event

__all__ = ["AuditProducer", "AuthenticationError", "AuthorizationError", "BrokerUnavailableError", "DeliveryError",
           "DeliveryResult", "DeliveryTimeoutError", "ProducerClosedError", "ProducerFatalError",
           "ProducerQueueFullError", "UndeliveredEventsError", "complete_event", "new_event"]
