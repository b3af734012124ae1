"""A private certificate authority and the TLS certificates of the local stack.

Everything is ECDSA P-256 and PEM: Kafka reads PEM key stores (``ssl.keystore.type=PEM``), librdkafka,
botocore and the Go S3 server read PEM natively, so no JKS or PKCS#12 file is ever needed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1")
_VALIDITY = datetime.timedelta(days=825)


@dataclass(frozen=True)
class Pki:
    """Paths of the CA and of the certificates the stack serves with."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    def cert(self, name: str) -> Path:
        """The certificate (leaf then CA) of service ``name``."""
        return self.directory / f"{name}.pem"

    def key(self, name: str) -> Path:
        """The unencrypted PKCS#8 private key of service ``name``, readable by its owner only."""
        return self.directory / f"{name}.key"

    def keystore(self, name: str) -> Path:
        """Key then certificate chain in one PEM file, the layout Kafka's PEM key store expects."""
        return self.directory / f"{name}.keystore.pem"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (no window where others can read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _name(common_name: str, organization: str = "AuditSeal local stack") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def create_ca(directory: Path, common_name: str = "AuditSeal local CA") -> Pki:
    """Create a new self-signed CA in ``directory`` (which must not hold one yet)."""
    pki = Pki(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private(pki.ca_key, _pem_key(key))
    pki.ca_cert.write_bytes(_pem_cert(cert))
    return pki


def issue_certificate(pki: Pki, name: str, *, client_auth: bool = False, extra_names: tuple[str, ...] = (),
                      organization: str = "AuditSeal local stack") -> None:
    """Issue a server certificate for ``name`` with SANs localhost, 127.0.0.1 and ::1, plus ``extra_names``
    (host names such as compose service names).

    ``client_auth`` adds the clientAuth usage, for a broker that authenticates to its own controller
    and inter-broker listeners with the same certificate (mutual TLS).
    """
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client_auth else [])
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in (*extra_names, *LOOPBACK_NAMES)]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in LOOPBACK_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name, organization))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = _pem_cert(cert) + _pem_cert(ca_cert)
    write_private(pki.key(name), _pem_key(key))
    pki.cert(name).write_bytes(chain)
    write_private(pki.keystore(name), _pem_key(key) + chain)


def ensure_pki(directory: Path, services: dict[str, bool]) -> Pki:
    """Create the CA and a certificate per service unless they already exist; ``services`` maps
    each service name to whether its certificate also serves as a TLS client certificate."""
    pki = Pki(directory)
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        create_ca(directory)
    for name, client_auth in services.items():
        if not pki.keystore(name).exists():
            issue_certificate(pki, name, client_auth=client_auth)
    return pki
