# syntax=docker/dockerfile:1
# A stand-in for vllm/vllm-openai:v0.32.0 (the GPU worker's base), for machines that reach PyPI
# but no container registry: `scripts/build-images --only worker-gpu` builds it on the local
# Debian base and then images/worker.Dockerfile on it, so the GPU worker's own steps (the
# constraints from the base's freeze, pip check, the import smoke) run without a GPU or the
# registry. Like the official image: vLLM's CUDA wheel from PyPI and the torch it pins, in the
# system Python, with pip. Not a released image: the release builds on the official one.
ARG PYTHON_IMAGE=localhost/sheepdog-base:bookworm

FROM ${PYTHON_IMAGE}
ARG VLLM_VERSION=0.32.0
COPY images/uv-env.sh /opt/sheepdog/build/uv-env.sh
RUN --mount=type=secret,id=cacert --mount=type=secret,id=pipconf \
    --mount=type=cache,id=sheepdog-uv,target=/root/.cache/uv \
    --mount=type=cache,id=sheepdog-uv-bin,target=/uv \
    . /opt/sheepdog/build/uv-env.sh \
 && uv pip install --system --python "$(command -v python3)" --link-mode copy --compile-bytecode \
      "vllm==${VLLM_VERSION}" \
 && python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
