"""Connection settings, read from the ``AUDITSEAL_*`` and ``AWS_*`` environment variables.

Every command reads the same variables, so pointing the tools at a production cluster is the
same as pointing them at the local stack: ``eval "$(auditseal dev env --role producer)"``.
This module is the one place where client configuration dicts are built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.errors import ConfigError

KAFKA_VARIABLES = (
    "AUDITSEAL_BOOTSTRAP",
    "AUDITSEAL_SASL_USERNAME",
    "AUDITSEAL_SASL_PASSWORD",
    "AUDITSEAL_CA_FILE",
)
S3_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_CA_BUNDLE",
    "AUDITSEAL_BUCKET",
)
# mutual TLS instead of SCRAM (the super users' way in: a certificate, never a password)
CERTIFICATE_VARIABLES = ("AUDITSEAL_SSL_CERT_FILE", "AUDITSEAL_SSL_KEY_FILE")
SASL_MECHANISM = "SCRAM-SHA-512"


def _require(env: Mapping[str, str], names: tuple[str, ...]) -> dict[str, str]:
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigError(
            f"missing environment variable(s) {', '.join(missing)}; "
            "run `eval \"$(auditseal dev env --role ROLE)\"` or set them for your cluster"
        )
    return {name: env[name] for name in names}


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach and authenticate to the Kafka cluster as one principal: SCRAM over TLS, or (with a
    certificate and key file, for the certificate-only super users) mutual TLS."""

    bootstrap: str
    username: str
    password: str = field(repr=False)  # never in a repr, a log line or an error
    ca_file: str
    certificate_file: str = ""
    key_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        """Read the settings from ``AUDITSEAL_BOOTSTRAP``, ``_SASL_USERNAME``, ``_SASL_PASSWORD``, ``_CA_FILE``
        (or, for mutual TLS, ``AUDITSEAL_SSL_CERT_FILE`` and ``_SSL_KEY_FILE`` instead of the SASL pair)."""
        env = os.environ if env is None else env
        if env.get("AUDITSEAL_SSL_CERT_FILE"):
            values = _require(env, ("AUDITSEAL_BOOTSTRAP", "AUDITSEAL_CA_FILE") + CERTIFICATE_VARIABLES)
            return cls(bootstrap=values["AUDITSEAL_BOOTSTRAP"], username="", password="",
                       ca_file=values["AUDITSEAL_CA_FILE"], certificate_file=values["AUDITSEAL_SSL_CERT_FILE"],
                       key_file=values["AUDITSEAL_SSL_KEY_FILE"])
        values = _require(env, KAFKA_VARIABLES)
        return cls(
            bootstrap=values["AUDITSEAL_BOOTSTRAP"],
            username=values["AUDITSEAL_SASL_USERNAME"],
            password=values["AUDITSEAL_SASL_PASSWORD"],
            ca_file=values["AUDITSEAL_CA_FILE"],
        )

    def client_config(self, **overrides: object) -> dict[str, object]:
        """The librdkafka configuration dict for SASL_SSL + SCRAM-SHA-512 (or mutual TLS), plus ``overrides``."""
        if self.certificate_file:
            config: dict[str, object] = {
                "bootstrap.servers": self.bootstrap,
                "security.protocol": "SSL",
                "ssl.ca.location": self.ca_file,
                "ssl.certificate.location": self.certificate_file,
                "ssl.key.location": self.key_file,
                "ssl.endpoint.identification.algorithm": "https",
            }
            config.update(overrides)
            return config
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SASL_MECHANISM,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ca_file,
            "ssl.endpoint.identification.algorithm": "https",
        }
        config.update(overrides)
        return config


@dataclass(frozen=True)
class S3Settings:
    """How to reach the archive bucket."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str = field(repr=False)  # never in a repr, a log line or an error
    ca_bundle: str
    bucket: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Settings:
        """Read the settings from ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
        ``AWS_CA_BUNDLE`` and ``AUDITSEAL_BUCKET``."""
        values = _require(os.environ if env is None else env, S3_VARIABLES)
        return cls(
            endpoint_url=values["AWS_ENDPOINT_URL"],
            access_key_id=values["AWS_ACCESS_KEY_ID"],
            secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            ca_bundle=values["AWS_CA_BUNDLE"],
            bucket=values["AUDITSEAL_BUCKET"],
        )

    def client(self):  # -> botocore S3 client; boto3 is imported lazily to keep start-up fast
        """A boto3 S3 client verifying TLS against ``ca_bundle``."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            verify=self.ca_bundle,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
