# Sourced by the install steps of images/worker*.Dockerfile (build time only; see
# scripts/build-images). The build machine's CA bundle and pip configuration arrive as build
# secrets under /run/secrets, mounted for one step and never written to a layer. uv itself lives
# in a cache mount at /uv (installed there by the first step that needs it): it is in no layer.
# (Not a build stage mounted with --mount=type=bind,from=...: buildah 1.28 mounts nothing when
# that stage comes from its layer cache.)
UV_VERSION=0.13.9
if [ -s /run/secrets/cacert ]; then
  export SSL_CERT_FILE=/run/secrets/cacert PIP_CERT=/run/secrets/cacert
fi
if [ -s /run/secrets/pipconf ]; then
  export PIP_CONFIG_FILE=/run/secrets/pipconf
  # uv reads no pip.conf: a mirror the machine's pip uses is passed on.
  _index=$(python3 -m pip config get global.index-url 2>/dev/null || true)
  [ -z "$_index" ] || export UV_DEFAULT_INDEX="$_index"
  unset _index
fi
# `uv --version` prints "uv 0.13.9 (<commit> <date>)"
if ! /uv/bin/uv --version 2>/dev/null | grep -q "^uv $UV_VERSION\( \|$\)"; then
  rm -rf /uv/bin /uv/uv /uv/uv-*
  PYTHONPATH= python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check \
    --target /uv "uv==$UV_VERSION"
fi
export PATH="/uv/bin:$PATH"
