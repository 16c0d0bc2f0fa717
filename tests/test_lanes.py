"""make test's lanes really form: with `pytest -n 4 --dist loadgroup` and tests/conftest.py's
grouping hook, every kwok test that needs the control plane runs on one worker (so one control
plane starts for them), and the tiny-model modules of a lane run on one worker. A pytest or pytest-xdist upgrade
once made loadgroup silently group nothing (every worker started a control plane of its own):
this test runs a small project through the same hook and fails if that happens again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFTEST = '''
import json, os
import pytest
from tests.conftest import pytest_collection_modifyitems  # noqa: F401  (the hook under test)

def _note(kind, worker_id):
    with open(os.path.join(os.environ["LANES_OUT"], f"{kind}-{worker_id}-{os.getpid()}"), "w") as fh:
        fh.write(kind)

@pytest.fixture(scope="session")
def cluster(worker_id):
    _note("cluster", worker_id)

@pytest.fixture(scope="session")
def tiny_model(worker_id):
    _note("model", worker_id)
'''

MODULE = '''
import os, time
def test_{name}_cluster(cluster, worker_id):
    time.sleep(0.2)
    open(os.path.join(os.environ["LANES_OUT"], "ran-cluster-{name}-" + worker_id), "w").close()
def test_{name}_model_a(tiny_model, worker_id):
    time.sleep(0.2)
    open(os.path.join(os.environ["LANES_OUT"], "ran-model-{name}-" + worker_id), "w").close()
def test_{name}_model_b(tiny_model, worker_id):
    time.sleep(0.2)
    open(os.path.join(os.environ["LANES_OUT"], "ran-model-{name}-" + worker_id), "w").close()
def test_{name}_unit():
    time.sleep(0.1)
'''


def test_control_plane_tests_share_one_worker_and_a_model_lane_stays_on_one(tmp_path):
    project, out = tmp_path / "project", tmp_path / "out"
    project.mkdir()
    out.mkdir()
    (project / "conftest.py").write_text(CONFTEST)
    for name in ("a", "b", "c", "d", "e", "f"):
        (project / f"test_{name}.py").write_text(MODULE.format(name=name))
    env = {**os.environ, "LANES_OUT": str(out), "PYTHONPATH": str(REPO)}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "4",
                           "--dist", "loadgroup", "-c", os.devnull, "--rootdir", str(project), str(project)],
                          capture_output=True, text=True, timeout=240, env=env, cwd=project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = [p.name for p in out.iterdir()]
    clusters = [n for n in names if n.startswith("cluster-")]
    assert len(clusters) == 1, f"the control plane started on several workers: {clusters}"
    cluster_workers = {n.rsplit("-", 1)[1] for n in names if n.startswith("ran-cluster-")}
    assert len(cluster_workers) == 1, cluster_workers
    # modules not listed in MODEL_LANES: all in lane model-b, so on one worker
    model_workers = {n.rsplit("-", 1)[1] for n in names if n.startswith("ran-model-")}
    assert len(model_workers) == 1, model_workers
    assert len({n for n in names if n.startswith("ran-model-")}) == 6  # every module ran
    print(json.dumps(sorted(names)))


def test_the_front_door_starts_first_in_its_lane():
    """Collection order is the order a lane runs its tests in: the longest one goes first."""
    from types import SimpleNamespace

    from tests.conftest import pytest_collection_modifyitems

    def item(nodeid, module, fixtures=("tiny_model",)):
        marks = []
        return SimpleNamespace(nodeid=nodeid, fixturenames=list(fixtures), module=SimpleNamespace(__name__=module),
                               get_closest_marker=lambda name: None, add_marker=marks.append, marks=marks)

    items = [item("tests/jobs/test_vllm_engine.py::test_a", "tests.jobs.test_vllm_engine"),
             item("tests/api/test_x.py::test_unit", "tests.api.test_x", fixtures=()),
             item("tests/test_front_door.py::test_make_demo", "tests.test_front_door")]
    pytest_collection_modifyitems(None, items)
    assert [i.nodeid.split("::")[0] for i in items] == [
        "tests/test_front_door.py", "tests/jobs/test_vllm_engine.py", "tests/api/test_x.py"]
    assert [m.args for m in items[0].marks] == [("model-a",)]  # still in its lane
