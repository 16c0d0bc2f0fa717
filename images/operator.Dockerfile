# syntax=docker/dockerfile:1
# The sheepdog operator: slim Python and the `sheepdog` package with its [operator] extra
# (kopf, urllib3, prometheus-client). No torch, no CUDA.
#
#   docker build -f images/operator.Dockerfile -t ghcr.io/sheepdog-dev/sheepdog-operator:0.1.0 .
#
# Build context: the repository root. tests/chart/test_images.py checks that the chart's
# defaults (runAsUser, entrypoint, ports) match what this file builds.
# The base is a build ARG: the pinned registry tag by default; the release workflow passes the
# tag's digest (and records it in BASE_DIGEST), scripts/build-images a local Debian base.
ARG PYTHON_IMAGE=python:3.12.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY images/pip_check.py images/lock_pins.py /opt/sheepdog/build/
COPY requirements/locks/operator.txt requirements/locks/operator.txt
COPY operator/ operator/
# A virtual environment is copied whole into the runtime stage; the pins of the operator's lock
# (requirements/locks/operator.txt, made by scripts/lock from requirements/operator.txt: kopf,
# kubernetes and every package below them) are constraints (images/lock_pins.py), so the image
# runs what CI tested.
# The build machine's CA bundle and pip configuration come in as build secrets (mounted for this
# step only, never in a layer) and pip's cache is a cache mount: neither is in the image.
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-pip,target=/root/.cache/pip \
    if [ -s /run/secrets/cacert ]; then export PIP_CERT=/run/secrets/cacert; fi \
 && if [ -s /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi \
 && python /opt/sheepdog/build/lock_pins.py requirements/locks/operator.txt > /tmp/lock-pins.txt \
 && python -m venv /opt/sheepdog \
 && /opt/sheepdog/bin/pip install --constraint /tmp/lock-pins.txt "./operator[operator]" \
 && /opt/sheepdog/bin/sheepdog --help >/dev/null

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/sheepdog /opt/sheepdog
ENV PATH=/opt/sheepdog/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
# A numeric, non-root user: Pod Security "restricted" and runAsNonRoot need a numeric UID to
# verify. The chart's securityContext.runAsUser is the same number.
RUN groupadd --system --gid 10001 sheepdog \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sheepdog
USER 10001:10001
# metrics (Prometheus), liveness (Kopf /healthz)
EXPOSE 8080 8081
ENTRYPOINT ["sheepdog", "operator"]
# Provenance, filled in by the release workflow and scripts/build-images; last, so that a new
# revision changes only the image's configuration and every layer above stays cached.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/sheepdog-dev/sheepdog
ARG BASE_DIGEST=""
LABEL org.opencontainers.image.title="sheepdog-operator" \
      org.opencontainers.image.description="Kopf operator for I-SHEEP self-alignment runs (SelfAlignmentRun)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}"
