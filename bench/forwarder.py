"""The baseline of ``bench/sealer.py``: a Faust agent that forwards raw records with no sealing.

Same consumption as the sealer (Faust, ``take_events`` batches of the same size and interval) and a
confluent-kafka producer (idempotent, acks=all, lz4, flushed per batch), but no decoding, validation,
hashing, signing or transactions: the ratio sealer/forwarder is the price of sealing.

    python -m bench.forwarder RAW_TOPIC OUT_TOPIC APP_ID   (AUDITSEAL_* variables of the sealer role)
"""

from __future__ import annotations

import ssl
import sys

import faust
from confluent_kafka import Producer

from pipeline.config import KafkaSettings


def main(raw_topic: str, out_topic: str, app_id: str, max_batch: int = 2000, interval: float = 0.2) -> None:
    """Run the forwarding worker until SIGTERM."""
    from faust.worker import Worker

    settings = KafkaSettings.from_env()
    app = faust.App(
        app_id, broker=f"kafka://{settings.bootstrap}",
        broker_credentials=faust.SASLCredentials(
            username=settings.username, password=settings.password,
            ssl_context=ssl.create_default_context(cafile=settings.ca_file), mechanism="SCRAM-SHA-512"),
        topic_disable_leader=True, topic_allow_declare=False, web_enabled=False, store="memory://",
        consumer_auto_offset_reset="earliest", stream_buffer_maxsize=max_batch * 2, autodiscover=False,
    )
    producer = Producer(settings.client_config(**{"enable.idempotence": True, "acks": "all", "linger.ms": 2,
                                                   "compression.type": "lz4", "batch.size": 1048576}))
    raw = app.topic(raw_topic, value_serializer="raw", key_serializer="raw", internal=False)

    @app.agent(raw, name="forward")
    async def forward(stream: faust.StreamT) -> None:
        async for events in stream.take_events(max_batch, within=interval):
            for event in events:
                message = event.message
                producer.produce(out_topic, message.value, message.key, partition=message.partition)
            producer.flush()

    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main(*sys.argv[1:4])
