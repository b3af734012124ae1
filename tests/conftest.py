"""Shared fixtures: the real local stack (Kafka + S3), brought up once per test session."""

from __future__ import annotations

import pytest

from pipeline.dev.stack import LocalStack


@pytest.fixture(scope="session")
def stack() -> LocalStack:
    """The running local stack (``auditseal dev up`` is idempotent and fast when it already runs)."""
    local = LocalStack()
    local.up(log=lambda _line: None)
    return local


@pytest.fixture(scope="session")
def role_env(stack: LocalStack):
    """``role_env("producer")`` -> the AUDITSEAL_*/AWS_* variables of that role."""
    return stack.env


@pytest.fixture()
def moto_bucket():
    """An in-process moto S3 server with an Object Lock bucket ``audit-archive``: the negative example of a
    server that accepts COMPLIANCE retention but lets it be shortened."""
    import socket

    import certifi
    from moto.server import ThreadedMotoServer

    from pipeline.config import S3Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    settings = S3Settings(endpoint_url=f"http://127.0.0.1:{port}", access_key_id="testing",
                          secret_access_key="testing", ca_bundle=certifi.where(), bucket="audit-archive")
    settings.client().create_bucket(Bucket="audit-archive", ObjectLockEnabledForBucket=True)
    yield settings
    server.stop()
