"""The stage Job builders (sheepdog.kube.jobs): pure dicts in, pure dicts out."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sheepdog.api.spec import STAGES, RunSpec
from sheepdog.kube import jobs, stage_config_map
from sheepdog.kube.podsecurity import restricted_violations
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.stage_config import TERMINATION_LOG, kube_layout, stage_command

RUN = "qwen72b-isheep"
NS = "research"
UID = "5f1c0ffe-0000-4000-8000-000000000001"


def make_spec(**over: Any) -> RunSpec:
    data: dict[str, Any] = {"model": {"base": "models/Qwen1.5-72B"}}
    data.update(over)
    return RunSpec.model_validate(data)


FILE = stage_config_map.CONFIG_PATH  # where a stage pod reads its config


def config_file_of(spec: RunSpec, stage: str, iteration: int = 1, run: str = RUN, retry: int = 0) -> dict:
    """The config a stage execution's pods read: its ConfigMap's file."""
    objs = jobs.build_stage_objects(run, NS, UID, spec, config_for(spec, stage, iteration, run), None, retry)
    return json.loads(stage_config_map.config_text(objs))


def config_for(spec: RunSpec, stage: str, iteration: int = 1, run: str = RUN):
    """The config as the Job carries it: the planner's, plus the run's uid (build_stage_job adds
    it; test_the_config_carries_the_runs_uid)."""
    config = stage_config(run, spec, iteration, stage, kube_layout(run, spec))
    return config.model_copy(update={"run_uid": UID})


def build(spec: RunSpec, stage: str, iteration: int = 1, images: Any = None, run: str = RUN) -> dict[str, Any]:
    return jobs.build_stage_job(run, NS, UID, spec, config_for(spec, stage, iteration, run), images)


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def container_of(job: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod_of(job)["containers"]
    return c


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container_of(job)["env"]}


def kubelet_expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command/args (k8s third_party/forked/golang/expansion):
    `$$` -> `$`, `$(NAME)` -> the value when NAME is defined, else left as written."""
    out, i = [], 0
    while i < len(arg):
        ch = arg[i]
        if ch == "$" and i + 1 < len(arg):
            nxt = arg[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = arg.find(")", i + 2)
                if end != -1:
                    name = arg[i + 2 : end]
                    out.append(env.get(name, f"$({name})"))
                    i = end + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def effective_command(job: dict[str, Any], extra_env: dict[str, str] | None = None) -> list[str]:
    env = {e["name"]: e["value"] for e in container_of(job)["env"] if "value" in e}
    env.update(extra_env or {})
    return [kubelet_expand(a, env) for a in container_of(job)["command"]]


# --- names, labels, owner ----------------------------------------------------------------------


def test_job_name_is_the_planners_stage_name() -> None:
    from sheepdog.planner.actions import stage_name

    assert jobs.job_name("r", 3, "train") == "r-i3-train" == stage_name("r", 3, "train")


@pytest.mark.parametrize("stage", STAGES)
def test_name_namespace_labels_and_owner(stage: str) -> None:
    job = build(make_spec(), stage, iteration=2)
    meta = job["metadata"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert meta["name"] == f"{RUN}-i2-{stage}"
    assert meta["namespace"] == NS
    for where in (meta["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert where["sheepdog.dev/run"] == RUN
        assert where["sheepdog.dev/iteration"] == "2"
        assert where["sheepdog.dev/stage"] == stage
        assert where["app.kubernetes.io/instance"] == RUN
        assert where["app.kubernetes.io/component"] == stage
        assert where["app.kubernetes.io/managed-by"] == "sheepdog-operator"
        assert all(isinstance(v, str) and len(v) <= 63 for v in where.values())
    assert meta["ownerReferences"] == [{
        "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "name": RUN, "uid": UID,
        "controller": True,  # no blockOwnerDeletion: it would cost the finalizers grant
    }]


def test_longest_names_fit_kubernetes_limits() -> None:
    run = "r" + "x" * 39  # 40: the CRD's limit
    spec = make_spec(iterations=100, stages={"train": {"nodes": 2}})
    for stage in STAGES:
        name = jobs.job_name(run, 100, stage)
        assert len(name) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
    svc = jobs.build_rendezvous_service(run, NS, UID, config_for(spec, "train", 100, run))
    assert len(svc["metadata"]["name"]) <= 63
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", svc["metadata"]["name"])  # DNS-1035
    hostname = f"{jobs.job_name(run, 100, 'train')}-255"  # pod hostname of an Indexed Job
    assert len(hostname) <= 63


def test_a_retried_stage_is_a_new_job_labelled_with_its_retry() -> None:
    """recovery_policy: the K-th retry of a failed stage is the Job `<job>-r<K>`, labelled
    sheepdog.dev/retry=K (how observe tells it from the failed Job), within the name limits."""
    from sheepdog.planner.actions import stage_name

    spec = make_spec(stages={"train": {"nodes": 2}})
    assert jobs.job_name("r", 3, "train", 2) == "r-i3-train-r2" == stage_name("r", 3, "train", 2)
    svc, cm, job = jobs.build_stage_objects(RUN, NS, UID, spec, config_for(spec, "train"), None, 1)
    assert job["metadata"]["name"] == f"{RUN}-i1-train-r1" and job["metadata"]["labels"]["sheepdog.dev/retry"] == "1"
    assert cm["metadata"]["name"].startswith(f"{RUN}-i1-train-r1-config-")
    assert svc["metadata"]["name"] == f"{RUN}-i1-train-r1-rdzv"
    assert pod_of(job)["subdomain"] == svc["metadata"]["name"]
    assert f"--rdzv-endpoint={RUN}-i1-train-r1-0.{RUN}-i1-train-r1-rdzv:29500" in container_of(job)["command"]
    assert "sheepdog.dev/retry" not in build(spec, "train")["metadata"]["labels"]  # the first Job
    run = "r" + "x" * 39  # 40: the CRD's limit
    for stage in STAGES:
        assert len(jobs.job_name(run, 100, stage, 99)) <= 63
    assert len(f"{jobs.job_name(run, 100, 'train', 99)}-rdzv") <= 63  # the Service, DNS-1035
    assert len(f"{jobs.job_name(run, 100, 'train', 99)}-255") <= 63  # an Indexed pod's hostname


def test_config_of_another_run_is_refused() -> None:
    spec = make_spec()
    with pytest.raises(ValueError):
        jobs.build_stage_job("other", NS, UID, spec, config_for(spec, "train"))


# --- the command -------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_command_is_the_stage_command(stage: str) -> None:
    spec = make_spec()
    config = config_for(spec, stage)
    job = jobs.build_stage_job(RUN, NS, UID, spec, config)
    expected = stage_command(config, python="python", summary_file=TERMINATION_LOG, config_file=FILE)
    assert container_of(job)["command"] == expected  # no `$` in it: written as it is
    # the config itself is the file of the stage's ConfigMap, not on the command line
    assert config_file_of(spec, stage) == json.loads(config.to_json())
    assert "args" not in container_of(job)
    program = expected[expected.index("-m"):][:3]
    assert program == ["-m", "sheepdog_jobs", stage]
    # the default train (8 GPUs) starts one rank per GPU; every other stage is one process
    assert expected[0] == ("torchrun" if stage == "train" else "python")


def test_the_config_carries_the_runs_uid() -> None:
    """The stage claims its run directory for this uid (sheepdog_jobs.run_marker)."""
    spec = make_spec()
    config = stage_config(RUN, spec, 1, "curate", kube_layout(RUN, spec))
    assert config.run_uid is None
    objs = jobs.build_stage_objects(RUN, NS, UID, spec, config)
    assert json.loads(stage_config_map.config_text(objs))["runUid"] == UID


def test_dollar_signs_reach_the_stage_unchanged() -> None:
    """A chat template may contain `$(HOME)` or `$$`: the kubelet must not expand them."""
    spec = make_spec(model={"base": "m", "chatTemplate": "{{ '$(HOME) costs $$5 and $' }}"})
    config = config_for(spec, "synthesize")
    job = jobs.build_stage_job(RUN, NS, UID, spec, config)
    assert effective_command(job) == stage_command(config, config_file=FILE)
    # a file's contents are never expanded by the kubelet
    assert config_file_of(spec, "synthesize")["spec"]["model"]["chatTemplate"] == "{{ '$(HOME) costs $$5 and $' }}"


@pytest.mark.parametrize("stage", STAGES)
def test_termination_message(stage: str) -> None:
    c = container_of(build(make_spec(), stage))
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["command"][-2:] == ["--summary-file", "/dev/termination-log"]


# --- retries, deadlines, lifecycle ------------------------------------------------------------


def test_backoff_limit_is_the_stage_limit_or_retries() -> None:
    spec = make_spec(retries=4, stages={"train": {"backoffLimit": 0}})
    assert build(spec, "train")["spec"]["backoffLimit"] == 0
    assert build(spec, "curate")["spec"]["backoffLimit"] == 4
    from sheepdog.planner.retry_policy import backoff_limit

    for stage in STAGES:
        assert build(spec, stage)["spec"]["backoffLimit"] == backoff_limit(spec, stage)


@pytest.mark.parametrize("stage", STAGES)
def test_disruptions_do_not_spend_retries_and_finished_jobs_stay(stage: str) -> None:
    job = build(make_spec(), stage)
    assert job["spec"]["podFailurePolicy"] == {
        "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                  # an error no retry can fix (the stage program's exit code 3) fails the Job at once
                  {"action": "FailJob",
                   "onExitCodes": {"containerName": "stage", "operator": "In", "values": [3]}}]
    }
    assert pod_of(job)["restartPolicy"] == "Never"  # required by podFailurePolicy
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert "suspend" not in job["spec"]


def test_active_deadline() -> None:
    spec = make_spec(stages={"train": {"activeDeadlineSeconds": 3600}})
    assert build(spec, "train")["spec"]["activeDeadlineSeconds"] == 3600
    # every stage has a deadline by default, its own (a hung process does not hold GPUs for ever)
    defaults = {stage: build(make_spec(), stage)["spec"]["activeDeadlineSeconds"] for stage in STAGES}
    assert defaults == {"synthesize": 3 * 86400, "curate": 12 * 3600, "train": 7 * 86400, "evaluate": 86400}
    assert build(spec, "synthesize")["spec"]["activeDeadlineSeconds"] == 3 * 86400


# --- resources and placement --------------------------------------------------------------------


def test_gpus_and_resources() -> None:
    spec = make_spec(stages={
        "train": {"gpus": 4, "resources": {"requests": {"cpu": 16, "memory": "256Gi", "nvidia.com/gpu": 1},
                                           "limits": {"memory": "300Gi"}}},
        "curate": {"resources": {"requests": {"cpu": "2"}}},
    })
    train = container_of(build(spec, "train"))["resources"]
    assert train == {
        "requests": {"cpu": "16", "memory": "256Gi", "nvidia.com/gpu": "4"},  # gpus wins over resources
        "limits": {"memory": "300Gi", "nvidia.com/gpu": "4"},
    }
    curate = container_of(build(spec, "curate"))["resources"]
    assert curate == {"requests": {"cpu": "2"}}  # curate takes no GPU by default
    synth = container_of(build(spec, "synthesize"))["resources"]
    assert synth == {"requests": {"nvidia.com/gpu": "8"}, "limits": {"nvidia.com/gpu": "8"}}
    evaluate = container_of(build(spec, "evaluate"))["resources"]
    assert evaluate["limits"]["nvidia.com/gpu"] == "8"  # synthesize's tensorParallel (issue 22.5)


def test_gpu_free_stage_requests_no_gpu() -> None:
    spec = make_spec(stages={"synthesize": {"gpus": 0, "tensorParallel": 1}})
    assert container_of(build(spec, "synthesize"))["resources"] == {}


def test_node_selector_tolerations_priority() -> None:
    spec = make_spec(
        stages={"train": {"nodeSelector": {"gpu": "h100"},
                          "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}},
        scheduling={"priorityClassName": "research-high"},
    )
    pod = pod_of(build(spec, "train"))
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "research-high"
    other = pod_of(build(spec, "curate"))
    assert "nodeSelector" not in other and "tolerations" not in other
    assert other["priorityClassName"] == "research-high"
    assert "priorityClassName" not in pod_of(build(make_spec(), "train"))


def test_kueue_queue_suspends_and_labels_the_job() -> None:
    spec = make_spec(scheduling={"queueName": "gpu-queue"})
    for stage in STAGES:
        job = build(spec, stage)
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
        assert job["spec"]["suspend"] is True
        assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    plain = build(make_spec(), "train")
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]


# --- storage, environment, secrets --------------------------------------------------------------


def test_volumes_and_writable_home() -> None:
    spec = make_spec(storage={"claimName": "team-data", "subPath": "exp/a"})
    job = build(spec, "train")
    pod, c = pod_of(job), container_of(job)
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert vols["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": "team-data"}}
    assert mounts["/data"] == "data"
    # memory-backed and sized (the built-in size of the stage; the chart's worker.shmSize)
    assert vols[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    env = env_of(job)
    # HOME and the caches lie on something a non-root user can write: an emptyDir or the volume
    for var in ("HOME", "HF_HOME", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "TMPDIR"):
        path = env[var]["value"]
        mount = max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len)
        vol = vols[mounts[mount]]
        assert "emptyDir" in vol or "persistentVolumeClaim" in vol, var
    assert env["HF_HOME"]["value"].startswith("/data/")
    # the config's paths are under the mount (the train of 8 GPUs runs under torchrun)
    config = config_file_of(spec, "train")
    assert config["runDir"] == "/data/exp/a" and config["root"] == "/data"
    # and the config file is a read-only ConfigMap volume of the stage execution's own
    assert c["command"][c["command"].index("--config") + 1] == FILE
    assert {"name": "stage-config", "mountPath": "/etc/sheepdog/stage", "readOnly": True} in c["volumeMounts"]
    assert vols["stage-config"]["configMap"]["name"].startswith(f"{job['metadata']['name']}-config-")


def test_hub_token_by_reference_only() -> None:
    secret_value = "hf_SUPERSECRETVALUE"  # what the Secret would hold: nothing here may know it
    spec = make_spec(model={"base": "org/model", "hubTokenSecretRef": {"name": "hf-token", "key": "token"}})
    for stage in STAGES:
        job = build(spec, stage)
        env = env_of(job)
        assert env["HF_TOKEN"] == {"name": "HF_TOKEN",
                                   "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}
        text = json.dumps(job)
        assert secret_value not in text
        assert all("value" not in e for e in container_of(job)["env"] if "secretKeyRef" in json.dumps(e))
    assert "HF_TOKEN" not in env_of(build(make_spec(), "train"))


def test_judge_api_key_by_reference_for_evaluate_only() -> None:
    from sheepdog.api.spec import JUDGE_API_KEY_ENV

    spec = make_spec(evaluation={"enabled": True, "suites": ["heldout"], "judge": {
        "url": "http://judge:8000/v1", "model": "judge", "apiKeySecretRef": {"name": "judge", "key": "api-key"}}})
    env = env_of(build(spec, "evaluate"))
    assert env[JUDGE_API_KEY_ENV] == {"name": JUDGE_API_KEY_ENV,
                                      "valueFrom": {"secretKeyRef": {"name": "judge", "key": "api-key"}}}
    for stage in ("synthesize", "curate", "train"):
        assert JUDGE_API_KEY_ENV not in env_of(build(spec, stage))


# --- pod security --------------------------------------------------------------------------------


def all_variants() -> list[tuple[str, dict[str, Any]]]:
    specs = {
        "default": make_spec(),
        "multinode": make_spec(stages={"train": {"nodes": 4}}),
        "sharded": make_spec(stages={"synthesize": {"shards": 4}}),
        "everything": make_spec(
            model={"base": "org/m", "hubTokenSecretRef": {"name": "s", "key": "k"}},
            scheduling={"queueName": "q", "priorityClassName": "p"},
            stages={"train": {"nodes": 2, "nodeSelector": {"a": "b"}, "tolerations": [{"operator": "Exists"}]}},
        ),
    }
    out = []
    for label, spec in specs.items():
        for stage in STAGES:
            out.append((f"{label}-{stage}", build(spec, stage)))
    return out


@pytest.mark.parametrize("label,job", all_variants(), ids=[v[0] for v in all_variants()])
def test_every_built_pod_passes_the_restricted_profile(label: str, job: dict[str, Any]) -> None:
    pod = pod_of(job)
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001  # images/worker.Dockerfile
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container_of(job)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True  # what a stage writes has a volume (below)
    writable = {m["mountPath"] for m in container_of(job)["volumeMounts"]}
    assert {"/data", "/tmp", "/dev/shm", "/home/sheepdog"} <= writable
    env = {e["name"]: e.get("value") for e in container_of(job)["env"]}
    for var in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "HF_HOME", "NUMBA_CACHE_DIR"):
        if var in env:  # every place a library writes by default is one of those volumes
            assert any(env[var] == w or env[var].startswith(w + "/") for w in writable), (var, env[var])
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_restricted_checker_finds_violations() -> None:
    good = pod_of(build(make_spec(), "train"))
    assert restricted_violations(good) == []

    def broken(mutate) -> list[str]:
        pod = json.loads(json.dumps(good))
        mutate(pod)
        return restricted_violations(pod)

    c = lambda p: p["containers"][0]  # noqa: E731
    assert broken(lambda p: c(p)["securityContext"].pop("allowPrivilegeEscalation"))
    assert broken(lambda p: c(p)["securityContext"].update(capabilities={"drop": ["NET_RAW"]}))
    assert broken(lambda p: c(p)["securityContext"].update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}))
    assert broken(lambda p: c(p)["securityContext"].update(privileged=True))
    assert broken(lambda p: c(p)["securityContext"].update(runAsUser=0))
    assert broken(lambda p: c(p)["securityContext"].update(runAsNonRoot=False))

    def no_non_root(p):
        p["securityContext"].pop("runAsNonRoot")
        c(p)["securityContext"].pop("runAsNonRoot")

    assert broken(no_non_root)

    def no_seccomp(p):
        p["securityContext"].pop("seccompProfile")
        c(p)["securityContext"].pop("seccompProfile")

    assert broken(no_seccomp)
    assert broken(lambda p: c(p)["securityContext"].update(seccompProfile={"type": "Unconfined"}))
    assert broken(lambda p: p.update(hostNetwork=True))
    assert broken(lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}))
    assert broken(lambda p: c(p).update(ports=[{"containerPort": 80, "hostPort": 80}]))
    assert broken(lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]))
    # allowed: NET_BIND_SERVICE, a pod-level seccomp profile only
    assert not broken(lambda p: c(p)["securityContext"].update(
        capabilities={"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}))
    assert not broken(lambda p: c(p)["securityContext"].pop("seccompProfile"))


# --- images --------------------------------------------------------------------------------------


def test_images_default_operator_and_stage_overrides() -> None:
    from sheepdog import __version__

    spec = make_spec(stages={"train": {"image": "my/train:1"}})
    assert container_of(build(spec, "synthesize"))["image"] == f"ghcr.io/sheepdog-dev/sheepdog-worker:{__version__}"
    assert container_of(build(spec, "train"))["image"] == "my/train:1"
    assert container_of(build(spec, "curate", images="reg/worker:2"))["image"] == "reg/worker:2"
    defaults = jobs.ImageDefaults(image="reg/worker:2", stages={"synthesize": "reg/vllm:2", "train": "reg/ds:2"},
                                  pull_policy="IfNotPresent", pull_secrets=("regcred",))
    assert container_of(build(spec, "synthesize", images=defaults))["image"] == "reg/vllm:2"
    assert container_of(build(spec, "train", images=defaults))["image"] == "my/train:1"  # the spec wins
    job = build(spec, "curate", images={"image": "reg/worker:3", "pullPolicy": "Always", "pullSecrets": ["a"]})
    assert container_of(job)["image"] == "reg/worker:3"
    assert container_of(job)["imagePullPolicy"] == "Always"
    assert pod_of(job)["imagePullSecrets"] == [{"name": "a"}]
    assert "imagePullPolicy" not in container_of(build(spec, "curate"))
    with pytest.raises(TypeError):
        jobs.ImageDefaults.coerce(42)


def test_worker_defaults_for_gpu_stages_and_queue() -> None:
    defaults = jobs.ImageDefaults.coerce({
        "gpuNodeSelector": {"nvidia.com/gpu.present": "true"},
        "gpuTolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "queueName": "default-queue",
    })
    spec = make_spec(stages={"train": {"nodeSelector": {"pool": "h100"}}})
    synth = build(spec, "synthesize", images=defaults)
    assert pod_of(synth)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod_of(synth)["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert synth["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "default-queue"
    assert synth["spec"]["suspend"] is True
    train = build(spec, "train", images=defaults)
    # the run's own selector is merged over the default (its keys win)
    assert pod_of(train)["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "h100"}
    own = build(make_spec(stages={"train": {"nodeSelector": {"nvidia.com/gpu.present": "no"}}}), "train",
                images=defaults)
    assert pod_of(own)["nodeSelector"] == {"nvidia.com/gpu.present": "no"}
    curate = build(spec, "curate", images=defaults)  # no GPU: no GPU placement
    assert "nodeSelector" not in pod_of(curate) and "tolerations" not in pod_of(curate)
    own_queue = build(make_spec(scheduling={"queueName": "mine"}), "curate", images=defaults)
    assert own_queue["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "mine"


# --- multi-node training -------------------------------------------------------------------------


def test_multinode_train_is_an_indexed_job_running_torchrun() -> None:
    spec = make_spec(stages={"train": {"nodes": 3, "gpus": 8}}, retries=2)
    config = config_for(spec, "train")
    job = jobs.build_stage_job(RUN, NS, UID, spec, config)
    name = f"{RUN}-i1-train"
    svc = f"{name}-rdzv"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    pod = pod_of(job)
    assert pod["subdomain"] == svc
    cmd = container_of(job)["command"]
    # elastic c10d rendezvous at pod 0: the agents restart the whole group in place
    assert cmd[:7] == [
        "torchrun", "--nnodes=3", "--nproc-per-node=8", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={name}-0.{svc}:29500", f"--rdzv-id={name}", "--max-restarts=2",
    ]
    # after torchrun's own flags: exactly the stage program and its arguments
    assert cmd[7:] == program_of(stage_command(config, config_file=FILE))
    assert not any("ssh" in a.lower() for a in cmd[:7])
    env = env_of(job)
    assert env["NNODES"]["value"] == "3"
    assert env["WORLD_SIZE"]["value"] == "24"
    # a restarted group meets on a fresh store (the shared one holds the dead ranks' addresses)
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"]["value"] == "1"
    assert env["LOGLEVEL"]["value"] == "INFO"  # the agents log each rendezvous and restart
    assert container_of(job)["ports"] == [{"name": "rdzv", "containerPort": 29500, "protocol": "TCP"}]
    # a stage's own backoffLimit is its restart budget too
    own = make_spec(stages={"train": {"nodes": 2, "gpus": 1, "backoffLimit": 5}})
    assert "--max-restarts=5" in container_of(build(own, "train"))["command"]


def program_of(command: list[str]) -> list[str]:
    """`-m sheepdog_jobs <stage> ...`: the command without its launcher (python or torchrun)."""
    return command[command.index("-m"):]


@pytest.mark.parametrize("gpus, nodes, ranks", [(8, 1, 8), (2, 1, 2), (1, 2, 2), (4, 2, 8), (0, 3, 3)])
def test_train_starts_one_rank_per_gpu_on_every_node(gpus: int, nodes: int, ranks: int) -> None:
    spec = make_spec(stages={"train": {"gpus": gpus, "nodes": nodes}})
    cmd = container_of(build(spec, "train"))["command"]
    assert cmd[0] == "torchrun"
    per_node = int(next(a for a in cmd if a.startswith("--nproc-per-node=")).split("=")[1])
    pods = build(spec, "train")["spec"].get("completions", 1)
    assert (per_node * pods, pods) == (ranks, nodes)
    if nodes == 1:  # the ranks meet on localhost: the command sheepdog run runs on a laptop
        assert cmd[1:4] == ["--standalone", "--nnodes=1", f"--nproc-per-node={ranks}"]
        assert cmd == stage_command(config_for(spec, "train"), config_file=FILE)
        assert cmd[4:] == program_of(cmd)


def test_a_world_of_one_is_the_plain_stage_command() -> None:
    for gpus in (0, 1):
        spec = make_spec(stages={"train": {"gpus": gpus}})
        assert container_of(build(spec, "train"))["command"] == stage_command(config_for(spec, "train"), config_file=FILE)
        assert container_of(build(spec, "train"))["command"][0] == "python"


def test_rendezvous_service() -> None:
    spec = make_spec(stages={"train": {"nodes": 2}})
    svc = jobs.build_rendezvous_service(RUN, NS, UID, config_for(spec, "train", 4))
    job = f"{RUN}-i4-train"
    assert svc["apiVersion"] == "v1" and svc["kind"] == "Service"
    assert svc["metadata"]["name"] == f"{job}-rdzv"
    assert svc["metadata"]["namespace"] == NS
    assert svc["metadata"]["ownerReferences"][0]["uid"] == UID
    assert svc["metadata"]["labels"]["sheepdog.dev/stage"] == "train"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": job}
    objs = jobs.build_stage_objects(RUN, NS, UID, spec, config_for(spec, "train", 4))
    assert [o["kind"] for o in objs] == ["Service", "ConfigMap", "Job"]
    assert [o["kind"] for o in jobs.build_stage_objects(RUN, NS, UID, make_spec(), config_for(make_spec(), "train"))] == [
        "ConfigMap", "Job"]


def test_single_node_train_is_a_plain_job() -> None:
    job = build(make_spec(), "train")
    assert "completionMode" not in job["spec"] and "subdomain" not in pod_of(job)
    assert "NNODES" not in env_of(job) and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in env_of(job)
    assert container_of(job)["command"][:2] == ["torchrun", "--standalone"]  # 8 ranks in one pod


# --- sharded synthesis -----------------------------------------------------------------------------


def test_sharded_synthesize_is_an_indexed_job() -> None:
    spec = make_spec(stages={"synthesize": {"shards": 4}})
    config = config_for(spec, "synthesize")
    job = jobs.build_stage_job(RUN, NS, UID, spec, config)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    sent = config_file_of(spec, "synthesize")
    assert sent["shard"] == {"count": 4}  # no index: each pod reads JOB_COMPLETION_INDEX
    assert container_of(job)["command"] == stage_command(jobs.effective_config(spec, config), config_file=FILE)
    assert "subdomain" not in pod_of(job)
    # only synthesize is sharded
    assert "completionMode" not in build(spec, "curate")["spec"]


def test_each_shard_has_its_own_retries() -> None:
    spec = make_spec(stages={"synthesize": {"shards": 4, "backoffLimit": 3}}, retries=1)
    job = build(spec, "synthesize")
    assert job["spec"]["backoffLimitPerIndex"] == 3
    # no Job-wide limit: the failures of one shard must not end the others
    assert "backoffLimit" not in job["spec"]
    assert build(make_spec(retries=1), "synthesize")["spec"]["backoffLimit"] == 1  # one pod: as before
    assert "backoffLimitPerIndex" not in build(make_spec(stages={"train": {"nodes": 2}}), "train")["spec"]


def test_output_is_plain_deterministic_json() -> None:
    spec = make_spec(stages={"train": {"nodes": 2}})
    a, b = build(spec, "train"), build(spec, "train")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.loads(json.dumps(a)) == a


# --- render ----------------------------------------------------------------------------------------


def test_render_iteration_one_of_the_examples() -> None:
    import pathlib

    import yaml

    from sheepdog.api.spec import SelfAlignmentRun
    from sheepdog.kube.render import PLACEHOLDER_UID, render_run, render_run_yaml

    root = pathlib.Path(__file__).resolve().parents[2]
    for path in sorted((root / "examples").glob("*.yaml")):
        run = SelfAlignmentRun.model_validate(yaml.safe_load(path.read_text()))
        objs = render_run(run, "ns")
        jobs_ = [o for o in objs if o["kind"] == "Job"]
        expected = ["synthesize", "curate", "train"] + (["evaluate"] if run.spec.evaluation.enabled else [])
        assert [j["metadata"]["labels"]["sheepdog.dev/stage"] for j in jobs_] == expected
        name = run.metadata.name
        assert [j["metadata"]["name"] for j in jobs_] == [f"{name}-i1-{s}" for s in expected]
        for o in objs:
            assert o["metadata"]["namespace"] == "ns"
            assert o["metadata"]["ownerReferences"][0]["uid"] == PLACEHOLDER_UID
        for j in jobs_:
            assert restricted_violations(pod_of(j)) == []
        text = render_run_yaml(run, "ns")
        assert text.startswith("# ") and "placeholder uid" in text
        assert [d for d in yaml.safe_load_all(text) if d] == objs


def test_render_uses_the_planners_lineage_and_the_runs_uid() -> None:
    from sheepdog.api.spec import SelfAlignmentRun
    from sheepdog.kube.render import render_run

    run = SelfAlignmentRun.model_validate({
        "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
        "metadata": {"name": "r", "namespace": "team", "uid": UID},
        "spec": {"model": {"base": "models/b"}, "training": {"strategy": "one_last"},
                 "evaluation": {"enabled": True}, "stages": {"train": {"nodes": 2}}},
    })
    objs = render_run(run, iteration=2)
    # each Job after its config's ConfigMap (`<job>-config-<hash>`)
    assert [(o["kind"], re.sub(r"-config-[0-9a-f]{8}$", "-config", o["metadata"]["name"])) for o in objs] == [
        ("ConfigMap", "r-i2-synthesize-config"), ("Job", "r-i2-synthesize"),
        ("ConfigMap", "r-i2-curate-config"), ("Job", "r-i2-curate"), ("Service", "r-i2-train-rdzv"),
        ("ConfigMap", "r-i2-train-config"), ("Job", "r-i2-train"),
        ("ConfigMap", "r-i2-evaluate-config"), ("Job", "r-i2-evaluate"),
    ]
    assert all(o["metadata"]["namespace"] == "team" for o in objs)
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == UID for o in objs)
    train = objs[6]
    assert container_of(train)["command"][-3] == FILE
    config = json.loads(stage_config_map.config_text(objs[5:7]))
    expected = config_for(run.spec, "train", 2, "r")
    assert config["generatorModel"] == expected.generator_model == "/data/runs/r/i1/model"
    assert config["baseModel"] == expected.base_model == "/data/runs/r/i1/model"  # one_last


# --- pods a GPU cluster accepts (issue 14) -------------------------------------------------------

GPU_DEFAULTS = {"gpuResourceName": "amd.com/gpu", "shmSize": {"train": "100Gi"},
                "resourcesPerGpu": {"synthesize": {"cpu": "8", "memory": "64Gi"},
                                    "train": {"cpu": 6, "memory": "1.5Gi"}}}


def qos_class(resources: dict[str, Any]) -> str:
    """Kubernetes' QoS class of a one-container pod."""
    req, lim = resources.get("requests", {}), resources.get("limits", {})
    if not req and not lim:
        return "BestEffort"
    if all(lim.get(r) is not None and req.get(r, lim[r]) == lim[r] for r in ("cpu", "memory")):
        return "Guaranteed"
    return "Burstable"


def test_gpu_stages_are_guaranteed_by_default_per_gpu():
    spec = make_spec(stages={"train": {"gpus": 4}})
    synth = container_of(build(spec, "synthesize", images=GPU_DEFAULTS))["resources"]
    assert synth == {"requests": {"cpu": "64", "memory": "512Gi", "amd.com/gpu": "8"},
                     "limits": {"cpu": "64", "memory": "512Gi", "amd.com/gpu": "8"}}
    assert qos_class(synth) == "Guaranteed"
    train = container_of(build(spec, "train", images=GPU_DEFAULTS))["resources"]
    assert train["requests"] == train["limits"] == {"cpu": "24", "memory": "6Gi", "amd.com/gpu": "4"}
    assert container_of(build(spec, "curate", images=GPU_DEFAULTS))["resources"] == {}  # no GPU: no default
    cpu_only = make_spec(stages={"synthesize": {"gpus": 0, "tensorParallel": 1}})
    assert container_of(build(cpu_only, "synthesize", images=GPU_DEFAULTS))["resources"] == {}


def test_a_resource_the_run_names_replaces_the_default_for_it_only():
    spec = make_spec(stages={"synthesize": {"resources": {"limits": {"memory": "700Gi"}, "requests": {"memory": "700Gi"}}}})
    res = container_of(build(spec, "synthesize", images=GPU_DEFAULTS))["resources"]
    assert res["requests"] == {"cpu": "64", "memory": "700Gi", "amd.com/gpu": "8"}
    assert res["limits"] == {"cpu": "64", "memory": "700Gi", "amd.com/gpu": "8"}
    # a request alone: the default's limit for that resource goes too (no request > limit)
    spec = make_spec(stages={"synthesize": {"resources": {"requests": {"cpu": "100"}}}})
    res = container_of(build(spec, "synthesize", images=GPU_DEFAULTS))["resources"]
    assert res["requests"]["cpu"] == "100" and "cpu" not in res["limits"]


def test_gpu_resource_name_and_shm_size_come_from_the_defaults():
    job = build(make_spec(), "train", images=GPU_DEFAULTS)
    res = container_of(job)["resources"]
    assert "nvidia.com/gpu" not in res["limits"] and res["limits"]["amd.com/gpu"] == "8"
    dshm = next(v for v in pod_of(job)["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "100Gi"}
    dshm = next(v for v in pod_of(build(make_spec(), "curate", images=GPU_DEFAULTS))["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"]["sizeLimit"] == "1Gi"  # the built-in size of the stage


@pytest.mark.parametrize("value,factor,expected", [(8, 4, "32"), ("64Gi", 8, "512Gi"), ("500m", 3, "1500m"),
                                                   ("1.5Gi", 3, "4.5Gi"), ("0.25", 4, "1")])
def test_scale_quantity(value, factor, expected):
    from sheepdog.kube.resources import scale_quantity

    assert scale_quantity(value, factor) == expected


def test_scale_quantity_refuses_what_is_not_a_quantity():
    from sheepdog.kube.resources import scale_quantity

    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        scale_quantity("lots", 2)
