import os

import pytest

pytest_plugins = ["tests.cluster.fixture", "tests.lane_times"]

# Every stage program the tests start (the front door's `make demo`, the operator's Jobs, the
# stage modules) gets one intra-op thread unless told otherwise: four lanes share two cores, and
# OpenMP workers spin-waiting for a core made 2 threads many times slower than 1 (measured:
# tests/jobs/conftest.py; seen again with three vLLM engines at once, 2026-12-02).
os.environ.setdefault("SHEEPDOG_TORCH_THREADS", "1")
# The same for what is not a stage program: torch inside the test processes, vLLM's server in the
# MT-Bench test (OpenMP reads this when torch loads; stage programs set it themselves).
os.environ.setdefault("OMP_NUM_THREADS", os.environ["SHEEPDOG_TORCH_THREADS"])

# Lanes of `pytest -n 4 --dist loadgroup` (make test). xdist hands out groups largest first (by
# number of tests), so a long single-test module such as the front door would start last if it
# were a group of its own (seen: it began 40 minutes into a 60-minute run). Four fixed lanes
# instead, one per worker, balanced by the durations pytest prints (docs/testing.md):
#   control-plane  the kwok tests on the real control plane (mostly waiting on the API server,
#                  the Job controller and kwok);
#   real-stages    the operator's Jobs running the real stage programs (a control plane of its
#                  own) and the DeepSpeed train module;
#   model-a, -b    the other tiny-model modules (CPU-bound), split by measured cost (2026-12-02,
#                  before MT-Bench moved to model-b: model-a 1430 s, real-stages 1240 s,
#                  control-plane 1140 s, model-b 1070 s; at 00d473a model-a, the front door
#                  alone taking 1210 s, was about 1450 s and real-stages about 1060 s, so the vLLM
#                  engine tests, 186 s, moved to real-stages).
# A tiny-model module not listed here goes to model-b. The unit tests go wherever a worker is free.
MODEL_LANES = {
    "tests.test_front_door": "model-a",
    "tests.jobs.test_vllm_engine": "real-stages",
    "tests.jobs.test_engine_stop": "model-a",
    "tests.jobs.test_export_model": "model-a",
    "tests.jobs.test_train_deepspeed": "real-stages",
    # 2026-12-07 (fresh clone, 33 min 51 s): model-b was the last lane by minutes once the sweep
    # (237 s), paper-tiny (183 s), unmerged-run (141 s) and adapter-serving (141 s) modules
    # joined it by default; spread over the other lanes (and back, below)
    "tests.local.test_sweep_model": "model-a",
    "tests.local.test_paper_tiny": "model-b",
    "tests.local.test_unmerged_run": "real-stages",
    "tests.jobs.test_adapter_serving": "model-b",
    # The real node's module: the chart's operator and a small quickstart in containers, one
    # node start and one release (module fixtures). It needs the tiny model and a control plane:
    # the real-stages worker has both.
    # 2026-12-07, fresh clone at 5a7debf, 40 min 35 s: lanes control-plane 2409 s (this module
    # 585 s, paper-tiny and adapter-serving there too), model-a 1188, real-stages 947 (its
    # end-to-end run went to bulk), model-b 813; the last 10 minutes only control-plane ran.
    "tests.chart.test_real_node_install": "real-stages",
}


# Started first in their lanes: a lane's longest test left for last runs alone at the end, on one
# of two cores (seen 2026-12-02: the front door began 11 minutes into a 27-minute run, and the
# machine's last 100 s were half idle).
RUN_FIRST = ("tests/test_front_door.py::", "tests/chart/test_real_node_install.py::")


def lane(item) -> str | None:
    if item.module.__name__ in MODEL_LANES:  # named: that lane, whatever the test needs
        return MODEL_LANES[item.module.__name__]
    cluster = "cluster" in item.fixturenames or item.get_closest_marker("cluster")
    model = "tiny_model" in item.fixturenames or item.get_closest_marker("model")
    if cluster and model:
        return "real-stages"
    if cluster:
        return "control-plane"
    if model:
        return "model-b"
    return None


# tryfirst: xdist reads the groups in its own pytest_collection_modifyitems, which would
# otherwise run before this one and find none (seen: every worker started a control plane).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Puts every control-plane and tiny-model test into its lane (see MODEL_LANES). Without
    xdist the marks do nothing."""
    for item in items:
        name = lane(item)
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(name))
    items.sort(key=lambda item: not item.nodeid.startswith(RUN_FIRST))  # stable: the rest keep their order
