# syntax=docker/dockerfile:1.7
# The AuditSeal pipeline image: every `auditseal` command (seal, sink, access-audit, detect, verify, acl, emit).
#
#   docker build -t auditseal/pipeline:0.1.0 .
#
# Non-root (uid 10001), no compiler or pip cache in the final image, and it runs with a read-only root
# filesystem: the only places it writes are /tmp and /var/lib/auditseal, both volumes in the helm chart
# and in docker-compose.yml. The base is pinned to an exact tag; pin its digest too for a release build:
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# a C compiler and OpenSSL's headers (the compiled Merkle tree hashes with libcrypto, which the base image's
# Python already ships) for the Cython fast paths in pipeline/native (build stage only)
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
# dependencies first, from the metadata only, so a source change does not rebuild the wheel layer
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/auditseal \
    && /opt/auditseal/bin/pip install --upgrade pip \
    && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["pipeline"]))' \
       > /tmp/requirements.txt \
    && /opt/auditseal/bin/pip install -r /tmp/requirements.txt
COPY MANIFEST.in ./
COPY schemas ./schemas
COPY pipeline ./pipeline
COPY connectors ./connectors
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/auditseal/bin/pip install --no-deps . \
    && /opt/auditseal/bin/python -m compileall -q /opt/auditseal/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="auditseal-pipeline" \
      org.opencontainers.image.description="AuditSeal: immutable audit logs on Kafka (sealer, sink, access auditor, detector, verifier)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 auditseal \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/auditseal \
       --shell /usr/sbin/nologin auditseal \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/auditseal
COPY --from=build /opt/auditseal /opt/auditseal
# the wire format ships inside the wheel (pipeline/wire/schemas); the roles file and the compliance profiles
# are the deployment's data, looked up through these variables (pipeline.permissions.topology,
# pipeline.archive.retention); a deployment may mount its own
COPY config /app/config
ENV PATH=/opt/auditseal/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/auditseal \
    AUDITSEAL_ROLES_FILE=/app/config/roles.yaml \
    AUDITSEAL_COMPLIANCE_FILE=/app/config/compliance.yaml \
    AUDITSEAL_STACK_DIR=/var/lib/auditseal
# Faust keeps its data directory in the working directory
WORKDIR /var/lib/auditseal
USER 10001:10001
ENTRYPOINT ["auditseal"]
CMD ["--help"]
