"""Baselines of ``bench/sealer.py``: Faust agents that forward raw records with no sealing.

- ``batch`` mode: the sealer's own structure (librdkafka fetches batches, the Faust ``seal`` agent of
  :func:`pipeline.sealer.app.worker_app` handles them) but each batch is only produced to the output
  topic with an idempotent producer and flushed: no decoding, validation, hashing, signing or
  transactions. sealer/this ratio is the price of sealing.
- ``stream`` mode: Faust's own per-record path (``@app.agent(topic)`` with ``take_events``), for the
  record of why the sealer does not use it.

    python -m bench.forwarder MODE RAW_TOPIC OUT_TOPIC APP_ID   (AUDITSEAL_* variables of the sealer role)
"""

from __future__ import annotations

import ssl
import sys

import faust
from confluent_kafka import Consumer, Message, Producer

from pipeline.config import KafkaSettings
from pipeline.sealer.app import SealerConfig, worker_app

_PRODUCER = {"enable.idempotence": True, "acks": "all", "linger.ms": 2, "compression.type": "lz4",
             "batch.size": 1048576}


class BatchForwarder:
    """The sealer's batch worker with the sealing taken out."""

    def __init__(self, settings: KafkaSettings, raw_topic: str, out_topic: str, group: str) -> None:
        config = SealerConfig()
        self.raw_topic, self.out_topic, self.config = raw_topic, out_topic, config
        self.consumer = Consumer(settings.client_config(**{
            "group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50}))
        self.producer = Producer(settings.client_config(**_PRODUCER))

    def start(self) -> None:
        self.consumer.subscribe([self.raw_topic])

    def fetch(self) -> list[Message]:
        return [m for m in self.consumer.consume(self.config.max_batch, self.config.batch_interval) if not m.error()]

    def seal_batch(self, messages: list[Message]) -> int:
        for message in messages:
            self.producer.produce(self.out_topic, message.value(), message.key(), partition=message.partition())
        self.producer.flush()
        return len(messages)

    def update_lag(self) -> None:
        """No lag gauge in a benchmark."""

    def close(self) -> None:
        self.consumer.close()
        self.producer.flush()


def stream_app(settings: KafkaSettings, raw_topic: str, out_topic: str, app_id: str) -> faust.App:
    """Faust's per-record path: an agent over the topic, batched with take_events like the sealer."""
    config = SealerConfig()
    app = faust.App(
        app_id, broker=f"kafka://{settings.bootstrap}",
        broker_credentials=faust.SASLCredentials(
            username=settings.username, password=settings.password,
            ssl_context=ssl.create_default_context(cafile=settings.ca_file), mechanism="SCRAM-SHA-512"),
        topic_disable_leader=True, topic_allow_declare=False, web_enabled=False, store="memory://",
        consumer_auto_offset_reset="earliest", stream_buffer_maxsize=config.max_batch * 2, autodiscover=False,
    )
    producer = Producer(settings.client_config(**_PRODUCER))
    raw = app.topic(raw_topic, value_serializer="raw", key_serializer="raw", internal=False)

    @app.agent(raw, name="forward")
    async def forward(stream: faust.StreamT) -> None:
        async for events in stream.take_events(config.max_batch, within=config.batch_interval):
            for event in events:
                message = event.message
                producer.produce(out_topic, message.value, message.key, partition=message.partition)
            producer.flush()

    return app


def main(mode: str, raw_topic: str, out_topic: str, app_id: str) -> None:
    """Run one forwarding worker until SIGTERM."""
    from faust.worker import Worker

    settings = KafkaSettings.from_env()
    if mode == "batch":
        app = worker_app(BatchForwarder(settings, raw_topic, out_topic, app_id), f"{app_id}-worker",
                         settings.bootstrap)
    else:
        app = stream_app(settings, raw_topic, out_topic, app_id)
    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(*sys.argv[1:5])
