"""gpu_cost: GPUs x pod running time of a finished stage Job, from its pods or its own times."""

from sheepdog.api.spec import RunSpec
from sheepdog.kube import jobs
from sheepdog.kube.gpu_cost import job_gpu_seconds, pod_gpus, pod_running_seconds
from sheepdog.kube.observe import observe_job
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.stage_config import kube_layout

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:30:00Z"


def pod(started, finished, exit_code=0):
    return {"metadata": {"labels": {"batch.kubernetes.io/job-name": "r-i1-train"}},
            "status": {"startTime": started, "containerStatuses": [{"name": "stage", "state": {"terminated": {
                "exitCode": exit_code, "startedAt": started, "finishedAt": finished, "message": '{"ok": true}'}}}]}}


def built_job(gpus: int, **stage):
    spec = RunSpec.model_validate({"model": {"base": "m"}, "stages": {"train": {"gpus": gpus, **stage}}})
    config = stage_config("r", spec, 1, "train", kube_layout("r", spec))
    job = jobs.build_stage_job("r", "ns", "uid", spec, config, {"gpuResourceName": "amd.com/gpu"})
    job["status"] = {"startTime": T0, "completionTime": T2, "succeeded": 1,
                     "conditions": [{"type": "Complete", "status": "True"}]}
    return job


def test_gpus_come_from_the_builders_annotation_whatever_the_resource_name():
    job = built_job(4)
    assert job["metadata"]["annotations"][jobs.GPUS_ANNOTATION] == "4"
    assert pod_gpus(job) == 4
    # a Job without the annotation (an older operator): the */gpu container limits
    old = {"spec": {"template": {"spec": {"containers": [
        {"resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "8"}}}]}}}}
    assert pod_gpus(old) == 2


def test_every_attempt_counts_from_its_container_start_to_end():
    job = built_job(4)
    failed_then_ok = [pod(T0, T1, exit_code=1), pod(T1, T2)]
    assert pod_running_seconds(failed_then_ok[0]) == 600
    assert job_gpu_seconds(job, failed_then_ok, T0, T2) == 4 * (600 + 1200)


def test_without_pods_the_jobs_own_times_count():
    job = built_job(2, nodes=3)  # an Indexed Job of 3 pods of 2 GPUs
    assert job_gpu_seconds(job, [], T0, T2) == 2 * 1800 * 3
    assert job_gpu_seconds(job, [], T0, None) is None


def test_cpu_stage_costs_nothing():
    assert job_gpu_seconds(built_job(0), [pod(T0, T2)], T0, T2) == 0


def test_observation_of_a_finished_job_carries_its_cost_only_when_pods_are_read():
    job = built_job(1)
    read = observe_job(job, {}, [pod(T0, T1)])
    assert read.gpu_seconds == 600
    recorded = {"iterations": [{"iteration": 1, "stages": {"train": {"phase": "Succeeded"}}}]}
    assert observe_job(job, recorded, None).gpu_seconds is None  # the status keeps the figure
