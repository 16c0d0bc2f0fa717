"""The cleanup Job of a deleted run (kube/data_cleanup.py): what it runs, where, and that Pod
Security "restricted" admits it; the finalizer patch as the operator sends it."""

from __future__ import annotations

from typing import Any

import pytest

from sheepdog.api.spec import RunSpec
from sheepdog.kube.cache import WatchCache
from sheepdog.kube.client import Conflict
from sheepdog.kube.data_cleanup import LABEL_RUN_UID, build_cleanup_job, cleanup_job_name, ensure_finalizer
from sheepdog.kube.pod_admission import job_problems
from sheepdog.planner.data_cleanup_policy import FINALIZER

UID = "5f0c2d3e-aaaa-4bbb-8ccc-0123456789ab"


def run(spec: dict[str, Any], finalizers=None) -> dict[str, Any]:
    meta = {"name": "r", "namespace": "team", "uid": UID, "resourceVersion": "7"}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    return {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "metadata": meta, "spec": spec}


SPEC = {"model": {"base": "models/tiny"}, "storage": {"claimName": "shared", "deleteDataOnDelete": True},
        "stages": {"curate": {"image": "registry.example/worker:cpu", "nodeSelector": {"pool": "cpu"}}}}


def test_the_cleanup_job_removes_the_runs_directory_under_restricted_security():
    spec = RunSpec.model_validate(SPEC)
    job = build_cleanup_job(run(SPEC), spec, {"image": "registry.example/worker:1", "pullSecrets": ["regcred"]})
    assert job["metadata"]["name"] == cleanup_job_name("r", UID) == "r-delete-data-5f0c2d3e"
    assert "ownerReferences" not in job["metadata"]  # the run is going: the GC would take it along
    assert job["metadata"]["labels"]["sheepdog.dev/run"] == "r" and job["metadata"]["labels"][LABEL_RUN_UID] == UID
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["python", "-m", "sheepdog_jobs", "delete-run-data", "--run-dir", "/data/runs/r",
                            "--uid", UID]
    assert c["image"] == "registry.example/worker:cpu"  # the curate stage's image: CPU only
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}} in pod["volumes"]
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    assert pod["automountServiceAccountToken"] is False and pod["nodeSelector"] == {"pool": "cpu"}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert job_problems(job, "cleanup") == []  # Pod Security "restricted"
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and job["spec"]["activeDeadlineSeconds"] > 0


def test_the_cleanup_job_follows_sub_path():
    spec = RunSpec.model_validate({**SPEC, "storage": {"subPath": "teams/a/r", "deleteDataOnDelete": True}})
    cmd = build_cleanup_job(run(SPEC), spec)["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--run-dir") + 1] == "/data/teams/a/r"


class PatchingKube:
    def __init__(self, conflict: bool = False):
        self.patches: list[tuple[str, str, dict]] = []
        self.conflict = conflict

    def patch_run(self, namespace, name, patch):
        self.patches.append((namespace, name, patch))
        if self.conflict:
            raise Conflict("changed")
        return {**run(SPEC, patch["metadata"]["finalizers"]), "metadata": {
            **run(SPEC)["metadata"], "finalizers": patch["metadata"]["finalizers"], "resourceVersion": "8"}}


def test_the_finalizer_is_added_conditionally_and_the_cache_keeps_the_patched_run():
    kube, cache = PatchingKube(), WatchCache()
    patched = ensure_finalizer(kube, cache, run(SPEC, ["other"]), RunSpec.model_validate(SPEC))
    assert kube.patches == [("team", "r", {"metadata": {"finalizers": ["other", FINALIZER], "resourceVersion": "7"}})]
    assert patched["metadata"]["resourceVersion"] == "8" and cache.run("team", "r") == patched
    assert ensure_finalizer(kube, cache, patched, RunSpec.model_validate(SPEC)) is None and len(kube.patches) == 1


def test_a_conflict_forgets_the_cached_run():
    kube, cache = PatchingKube(conflict=True), WatchCache()
    cache.put_run(run(SPEC))
    with pytest.raises(Conflict):
        ensure_finalizer(kube, cache, run(SPEC), RunSpec.model_validate(SPEC))
    assert cache.run("team", "r") is None
