"""Shared fixtures: the real local stack (Kafka + S3), brought up once per test session."""

from __future__ import annotations

import pytest

from pipeline.devstack.stack import LocalStack


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
