"""Versity S3 Gateway (Apache-2.0) over TLS on loopback: the Object Lock server of the local stack.

Built once from the Go module proxy at a pinned release into the cache. v1.8.0 (2026-09-04) is the first
release that refuses to shorten COMPLIANCE retention, which ``auditseal s3 check`` proves on every ``up``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.dev.gotools import go_install
from pipeline.dev.processes import ManagedProcess, make_private, run_checked

VERSITYGW_MODULE = "github.com/versity/versitygw"
VERSITYGW_VERSION = "v1.8.0"


def ensure_binary(cache: Path, log: Callable[[str], object] = print) -> Path:
    """Build ``versitygw`` with ``go install`` into the cache (Go's module and build caches live there too)."""
    return go_install(cache, package=f"{VERSITYGW_MODULE}/cmd/versitygw", version=VERSITYGW_VERSION, log=log)


def start_server(
    process: ManagedProcess, binary: Path, *, port: int, root_access: str, root_secret: str,
    cert: Path, key: Path, data: Path, versions: Path, iam: Path,
) -> int:
    """Start the gateway with the posix backend, versioning (needed by Object Lock) and internal IAM."""
    for folder in (data, versions, iam):
        make_private(folder)  # the archive's objects: owner only (the server itself runs with umask 077)
    env = dict(os.environ, ROOT_ACCESS_KEY=root_access, ROOT_SECRET_KEY=root_secret)
    argv = [
        str(binary), "--port", f"127.0.0.1:{port}", "--cert", str(cert), "--key", str(key),
        # no --keep-alive: with it, a full make test saw the gateway answer the sink's locked probes with
        # BadRequest and one object read back cut short ("expected sync marker not found"); every request
        # then pays its own TCP connection and TLS handshake
        "--iam-dir", str(iam), "--quiet", "posix", "--versioning-dir", str(versions),
        # the gateway sets object files' modes itself (0644 by default, umask or not): owner only
        "--dir-perms", "0700", "--file-perms", "0600", str(data),
    ]
    # root credentials go through the environment, never argv, so `ps` does not show them
    return process.start(argv, env=env)


def create_user(binary: Path, *, endpoint: str, ca_file: Path, root_access: str, root_secret: str,
                access: str, secret: str, role: str) -> None:
    """Create an IAM user of the gateway (``role`` is versitygw's: user or admin), unless it exists."""
    env = dict(os.environ, SSL_CERT_FILE=str(ca_file), ADMIN_ACCESS_KEY=root_access, ADMIN_SECRET_KEY=root_secret)
    listed = run_checked([str(binary), "admin", "--er", endpoint, "list-users"], "listing S3 users", env=env)
    if any(line.split()[:1] == [access] for line in listed.splitlines()):
        return
    # the user's secret is passed on argv for this one short call; the gateway has no other way in
    run_checked(
        [str(binary), "admin", "--er", endpoint, "create-user", "-a", access, "-s", secret, "-r", role],
        f"creating S3 user {access}", env=env,
    )


def bucket_policy(bucket: str, readers: list[str], writers: list[str]) -> str:
    """The bucket policy: writers may put objects and their retention, readers may only read.

    Nobody is granted DeleteObject or DeleteObjectVersion: with COMPLIANCE retention even the owner
    cannot delete a locked version, and this also keeps the unlocked manifests of the sink safe.
    """
    read = [
        "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:ListBucket",
        "s3:ListBucketVersions", "s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning",
        # the sink proves at start and every hour that the policy opens nothing (it reads it, no more)
        "s3:GetBucketPolicy",
    ]
    write = read + ["s3:PutObject", "s3:PutObjectRetention"]
    resources = [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]
    statements = []
    if writers:
        statements.append({"Sid": "ArchiveWriters", "Effect": "Allow", "Principal": {"AWS": writers},
                           "Action": write, "Resource": resources})
    if readers:
        statements.append({"Sid": "ArchiveReaders", "Effect": "Allow", "Principal": {"AWS": readers},
                           "Action": read, "Resource": resources})
    return json.dumps({"Version": "2012-10-17", "Statement": statements})
