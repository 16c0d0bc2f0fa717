"""The chart hands Job defaults to the operator as SHEEPDOG_WORKER_DEFAULTS."""

import json

import pytest

from sheepdog.kube.operator import image_defaults, parse_args


def test_worker_defaults_from_env_with_flag_image_on_top():
    env = {"SHEEPDOG_WORKER_DEFAULTS": json.dumps({
        "image": "registry.example/worker:1", "gpuNodeSelector": {"gpu": "a100"},
        "gpuTolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}], "queueName": "team-a"})}
    d = image_defaults(parse_args(["--worker-image", "registry.example/worker:2"]), env)
    assert d.image == "registry.example/worker:2"
    assert d.gpu_node_selector == {"gpu": "a100"}
    assert d.queue_name == "team-a"
    assert d.gpu_tolerations[0]["key"] == "nvidia.com/gpu"


def test_worker_defaults_absent_keeps_builtin_image():
    d = image_defaults(parse_args([]), {})
    assert d.image.startswith("ghcr.io/sheepdog-dev/sheepdog-worker:")


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]"])
def test_worker_defaults_invalid_is_a_clear_error(raw):
    with pytest.raises(SystemExit, match="SHEEPDOG_WORKER_DEFAULTS"):
        image_defaults(parse_args([]), {"SHEEPDOG_WORKER_DEFAULTS": raw})


def test_gpu_defaults_from_env():
    env = {"SHEEPDOG_WORKER_DEFAULTS": json.dumps({
        "gpuResourceName": "amd.com/gpu", "resourcesPerGpu": {"train": {"cpu": "8", "memory": "96Gi"}},
        "shmSize": {"train": "128Gi"}})}
    d = image_defaults(parse_args([]), env)
    assert d.gpu_resource == "amd.com/gpu"
    assert d.resources_per_gpu == {"train": {"cpu": "8", "memory": "96Gi"}}
    assert d.shm_size["train"] == "128Gi" and d.shm_size["curate"] == "1Gi"  # built-in for the rest
