"""Kubernetes objects of one stage execution: pure builders returning plain dicts.

No I/O and no kubernetes client: the operator sends these dicts as they are, `sheepdog render`
prints them, and tests read them.

One stage of one iteration = one batch/v1 Job named `<run>-i<N>-<stage>` (never recreated),
owned by the run (controller ownerReference), labelled with the run, iteration and stage.
Its container runs exactly `stage_command(config)` (the contract shared with the local
executor); the stage's one-line JSON summary is its termination message. Retries are the Job
controller's (backoffLimit = the stage's backoffLimit or spec.retries; a podFailurePolicy makes
disruptions free). Pods pass the Pod Security "restricted" profile.

Two stages can span several pods, as an Indexed Job:
- synthesize with `stages.synthesize.shards > 1`: completions = parallelism = shards; each pod
  reads its shard from JOB_COMPLETION_INDEX (StageConfig.shard.index is left unset) and
  StageConfig.shard.count = shards;
  each index has its own retries (backoffLimitPerIndex), so one bad shard does not fail the rest;
- train with `stages.train.nodes > 1`: completions = parallelism = nodes, a headless Service
  `<job>-rdzv` (build_rendezvous_service) gives pod 0 a stable DNS name, and every pod runs
  `torchrun --nnodes=N --nproc-per-node=G --rdzv-backend=c10d --rdzv-endpoint=<job>-0.<svc>:29500
  --max-restarts=R -m sheepdog_jobs train ...` (no SSH, no MPI operator): when any rank fails,
  every node's agent restarts its ranks together, in the same pods, spending no Job attempt
  (ELASTIC_ENV; docs/design.md "GPUs").
A train of one node with gpus > 1 runs `torchrun --standalone --nproc-per-node=G ...`: one rank
per GPU, the same command `sheepdog run` runs (stage_config.launcher_args).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from sheepdog import __version__
from sheepdog.api.spec import GROUP, JUDGE_API_KEY_ENV, KIND, VERSION, RunSpec
from sheepdog.kube.network_policy import NetworkPolicyError, build_run_network_policy, egress_cidrs
from sheepdog.kube.pod_template import apply_to_pod, merge_metadata
from sheepdog.kube.resources import DEFAULT_SHM_SIZE, GPU_RESOURCE, container_resources
from sheepdog.kube import stage_config_map
from sheepdog.stage_config import (EXIT_UNFIXABLE, TERMINATION_LOG, VOLUME_MOUNT, Rendezvous, Shard, StageConfig,
                                   stage_command, train_ranks)

try:  # the planner's retry policy is the one rule both executors share
    from sheepdog.planner.retry_policy import backoff_limit
except ImportError:  # pragma: no cover - the planner ships in the same package

    def backoff_limit(spec: RunSpec, stage: str) -> int:
        own = spec.stages.of(stage).backoff_limit
        return spec.retries if own is None else own


# --- names, labels ---------------------------------------------------------------------------

LABEL_RUN = f"{GROUP}/run"
LABEL_ITERATION = f"{GROUP}/iteration"
LABEL_STAGE = f"{GROUP}/stage"
# On the Job of a retried stage (recovery_policy): which retry it is; absent on the first Job.
LABEL_RETRY = f"{GROUP}/retry"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on pods by the Job controller
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# The stage's `gpus` per pod, on the Job: the GPU cost (gpu_cost) reads it whatever the
# cluster's GPU resource is called.
GPUS_ANNOTATION = f"{GROUP}/gpus"

WORKER_IMAGE_REPOSITORY = "ghcr.io/sheepdog-dev/sheepdog-worker"
DEFAULT_WORKER_IMAGE = f"{WORKER_IMAGE_REPOSITORY}:{__version__}"
PYTHON = "python"  # the worker image's entrypoint
# The worker image's numeric user (images/worker.Dockerfile: USER 10001:10001), so files the
# stages write to the run's volume belong to the image's user whichever image runs them.
RUN_AS_USER = 10001
HOME_DIR = "/home/sheepdog"  # an emptyDir: writable whatever the image's home holds
CACHE_DIR = f"{VOLUME_MOUNT}/.cache"  # on the run's volume: a hub model downloads once
HF_HOME = f"{CACHE_DIR}/huggingface"
RENDEZVOUS_PORT = 29500
CONTAINER_NAME = "stage"
# torchrun's settings that make a multi-node train restart as a group (docs/design.md, "GPUs"):
# - By default the agents share one TCPStore for every round of the rendezvous, so the ranks of
#   a restarted group read the dead ranks' keys of the round before (gloo's addresses): they
#   dial the dead ports and never meet. Opting out, rank 0 of each round hosts a fresh store.
# - INFO: the agents log each rendezvous round and restart, so `kubectl logs` shows a group
#   restart in place, which no Job or pod status records.
ELASTIC_ENV = (("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1"), ("LOGLEVEL", "INFO"))


def job_name(run: str, iteration: int, stage: str, retry: int = 0) -> str:
    """`<run>-i<N>-<stage>` (`-r<K>` after the K-th retry request): the one name of a stage
    execution (the planner's stage_name)."""
    return f"{run}-i{iteration}-{stage}" + (f"-r{retry}" if retry else "")


def rendezvous_service_name(job: str) -> str:
    return f"{job}-rdzv"


def labels(run: str, iteration: int, stage: str) -> dict[str, str]:
    return {
        LABEL_RUN: run,
        LABEL_ITERATION: str(iteration),
        LABEL_STAGE: stage,
        # name is sheepdog-worker, not sheepdog: the operator's own Service selects on
        # app.kubernetes.io/name=sheepdog and must never select a stage pod.
        "app.kubernetes.io/name": "sheepdog-worker",
        "app.kubernetes.io/instance": run,
        "app.kubernetes.io/component": stage,
        "app.kubernetes.io/part-of": "sheepdog",
        "app.kubernetes.io/managed-by": "sheepdog-operator",
    }


def owner_reference(run_name: str, run_uid: str) -> dict[str, Any]:
    """The run as controller of what the operator creates for it: the garbage collector deletes
    them with the run. No blockOwnerDeletion: it only makes a foreground deletion of the run
    wait for them, which nothing of sheepdog's asks for, and where the
    OwnerReferencesPermissionEnforcement admission plugin is on it costs `update
    selfalignmentruns/finalizers`, a grant no request of the operator would use."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": run_name,
        "uid": run_uid,
        "controller": True,
    }


# --- images ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageDefaults:
    """The operator's defaults for stage Jobs (flags / Helm `worker:` values). A run's own
    settings always win: a stage's `image` over `stages[stage]` over `image`; a stage's
    tolerations over the GPU defaults (applied to stages with gpus > 0 only), its nodeSelector
    merged over `gpu_node_selector`; a resource named in its `resources` over
    `resources_per_gpu` (x gpus, requests = limits); spec.scheduling.queueName over
    `queue_name`."""

    image: str = DEFAULT_WORKER_IMAGE
    stages: Mapping[str, str] = field(default_factory=dict)
    pull_policy: Optional[str] = None  # Always | IfNotPresent | Never; None: the cluster default
    pull_secrets: tuple[str, ...] = ()
    gpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[Mapping[str, Any], ...] = ()
    queue_name: str = ""
    gpu_resource: str = GPU_RESOURCE
    resources_per_gpu: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # stage -> cpu, memory
    shm_size: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SHM_SIZE))  # stage -> size
    # The run's NetworkPolicy (network_policy.py) with its stage objects; egress CIDRs restrict
    # the stage pods' egress (empty: open).
    network_policy: bool = False
    egress_cidrs: tuple[str, ...] = ()

    @classmethod
    def coerce(cls, value: Union[None, str, Mapping[str, Any], "ImageDefaults"]) -> "ImageDefaults":
        """None (built-in default), an image string, a mapping (image, stages, pullPolicy,
        pullSecrets; snake_case also accepted) or an ImageDefaults."""
        if value is None:
            return cls()
        if isinstance(value, ImageDefaults):
            return value
        if isinstance(value, str):
            return cls(image=value or DEFAULT_WORKER_IMAGE)
        if isinstance(value, Mapping):
            get = lambda *keys: next((value[k] for k in keys if value.get(k) is not None), None)  # noqa: E731
            return cls(
                image=get("image") or DEFAULT_WORKER_IMAGE,
                stages=dict(get("stages") or {}),
                pull_policy=get("pullPolicy", "pull_policy"),
                pull_secrets=tuple(get("pullSecrets", "pull_secrets") or ()),
                gpu_node_selector=dict(get("gpuNodeSelector", "gpu_node_selector") or {}),
                gpu_tolerations=tuple(get("gpuTolerations", "gpu_tolerations") or ()),
                queue_name=get("queueName", "queue_name") or "",
                gpu_resource=get("gpuResourceName", "gpu_resource") or GPU_RESOURCE,
                resources_per_gpu={s: dict(r) for s, r in (get("resourcesPerGpu", "resources_per_gpu") or {}).items()},
                shm_size={**DEFAULT_SHM_SIZE, **(get("shmSize", "shm_size") or {})},
                **_network_policy_defaults(get("networkPolicy", "network_policy"),
                                           get("egressCIDRs", "egress_cidrs") or ()),
            )
        raise TypeError(f"image defaults: expected None, str, mapping or ImageDefaults, got {type(value).__name__}")

    def for_stage(self, stage: str, own: Optional[str] = None) -> str:
        return own or self.stages.get(stage) or self.image


# --- the command -----------------------------------------------------------------------------


def escape_for_kubelet(arg: str) -> str:
    """The kubelet expands `$(VAR)` in command and args and turns `$$` into `$`: doubling every
    `$` makes the container receive the argument exactly (a chat template or path may hold one)."""
    return arg.replace("$", "$$")


def multinode(spec: RunSpec, stage: str) -> bool:
    return stage == "train" and spec.stages.train.nodes > 1


def sharded(spec: RunSpec, stage: str) -> bool:
    return stage == "synthesize" and spec.stages.synthesize.shards > 1


def effective_config(spec: RunSpec, config: StageConfig) -> StageConfig:
    """The config the pods run: a sharded synthesize carries shard.count = shards and no index
    (each pod takes JOB_COMPLETION_INDEX). Unchanged for every other stage."""
    if config.stage == "synthesize":
        shards = spec.stages.synthesize.shards
        if config.shard.count != shards or (shards > 1 and config.shard.index is not None):
            return config.model_copy(update={"shard": Shard(index=None if shards > 1 else config.shard.index,
                                                            count=shards)})
    return config


def rendezvous(spec: RunSpec, job: str) -> Optional[Rendezvous]:
    """The c10d rendezvous of a multi-node train: pod 0's stable DNS name, and as many group
    restarts in place as the stage has retries (a restart spends no Job attempt)."""
    if not multinode(spec, "train"):
        return None
    return Rendezvous(endpoint=f"{job}-0.{rendezvous_service_name(job)}:{RENDEZVOUS_PORT}", run_id=job,
                      max_restarts=backoff_limit(spec, "train"))


def container_command(spec: RunSpec, config: StageConfig, job: str) -> list[str]:
    """The container's command, as written in the Job (kubelet-escaped): stage_command, which
    starts a train of several ranks under torchrun (one rank per GPU, `gpus x nodes` in all)."""
    rdzv = rendezvous(spec, job) if config.stage == "train" else None
    command = stage_command(config, python=PYTHON, summary_file=TERMINATION_LOG, rendezvous=rdzv,
                            config_file=stage_config_map.CONFIG_PATH)
    return [escape_for_kubelet(a) for a in command]


# --- the pod ---------------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        # never chown a volume full of model weights recursively at every pod start
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    # readOnlyRootFilesystem: a stage writes only the run's volume (/data), /tmp and HOME
    # (emptyDirs), /dev/shm and its termination message; nothing of the image can be changed
    return {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def container_env(spec: RunSpec, config: StageConfig, job: str) -> list[dict[str, Any]]:
    env = [
        _env("PYTHONUNBUFFERED", "1"),
        _env("HOME", HOME_DIR),
        _env("XDG_CACHE_HOME", CACHE_DIR),
        _env("TMPDIR", "/tmp"),
        # numba caches beside its sources by default: the root filesystem is read-only
        _env("NUMBA_CACHE_DIR", "/tmp/numba"),
        _env("HF_HOME", HF_HOME),
        _env("TRANSFORMERS_CACHE", f"{HF_HOME}/hub"),
        _env("SHEEPDOG_RUN", config.run),
        _env("SHEEPDOG_ITERATION", str(config.iteration)),
        _env("SHEEPDOG_STAGE", config.stage),
    ]
    ref = spec.model.hub_token_secret_ref
    if ref is not None:
        # by reference only: the token's value never appears in the Job, the spec or status
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    judge = spec.evaluation.judge
    if config.stage == "evaluate" and judge is not None and judge.api_key_secret_ref is not None:
        # only the stage that calls the judge gets its key
        jref = judge.api_key_secret_ref
        env.append({"name": JUDGE_API_KEY_ENV,
                    "valueFrom": {"secretKeyRef": {"name": jref.name, "key": jref.key}}})
    if multinode(spec, config.stage):
        train = spec.stages.train
        nproc = max(1, train.gpus)
        # For people reading the pod: torchrun's rendezvous assigns the ranks; it sets each
        # worker's own RANK/WORLD_SIZE/MASTER_* over these.
        env += [
            _env("NNODES", str(train.nodes)),
            _env("NPROC_PER_NODE", str(nproc)),
            _env("WORLD_SIZE", str(train_ranks(spec))),  # processes, as torch.distributed counts
            *(_env(k, v) for k, v in ELASTIC_ENV),
        ]
    return env


def volumes(spec: RunSpec, shm_size: Optional[str] = None) -> list[dict[str, Any]]:
    shm: dict[str, Any] = {"medium": "Memory"}  # NCCL / vLLM tensor parallel
    if shm_size:
        shm["sizeLimit"] = shm_size  # counts against the memory limit (resources.py)
    return [
        {"name": "data", "persistentVolumeClaim": {"claimName": spec.storage.claim_name}},
        {"name": "dshm", "emptyDir": shm},
        {"name": "home", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]


def volume_mounts() -> list[dict[str, Any]]:
    return [
        {"name": "data", "mountPath": VOLUME_MOUNT},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "home", "mountPath": HOME_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]


def base_pod_spec(spec: RunSpec, images: ImageDefaults, container: dict[str, Any],
                  pod_volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """What every pod of a run has, stage or export: one container, restricted, no API token."""
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": pod_volumes,
    }
    if images.pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in images.pull_secrets]
    if spec.scheduling.priority_class_name:
        pod["priorityClassName"] = spec.scheduling.priority_class_name
    return pod


def build_pod_spec(spec: RunSpec, config: StageConfig, job: str, images: ImageDefaults) -> dict[str, Any]:
    stage = config.stage
    res = spec.stages.of(stage)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": images.for_stage(stage, res.image),
        "command": container_command(spec, config, job),
        "env": container_env(spec, config, job),
        "resources": container_resources(res, images.resources_per_gpu.get(stage), images.gpu_resource),
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*volume_mounts(), stage_config_map.mount()],
    }
    if images.pull_policy:
        container["imagePullPolicy"] = images.pull_policy
    tracking = spec.training.tracking_secret_ref
    if stage == "train" and tracking is not None:
        # the tracking server's credentials, by reference: only the stage that reports gets them
        container["envFrom"] = [{"secretRef": {"name": tracking.name}}]
    if multinode(spec, stage):
        container["ports"] = [{"name": "rdzv", "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    pod = base_pod_spec(spec, images, container, [*volumes(spec, images.shm_size.get(stage)),
                                                  stage_config_map.volume(job, config.to_json())])
    selector = {**(images.gpu_node_selector if res.gpus > 0 else {}), **(res.node_selector or {})}
    if selector:
        pod["nodeSelector"] = selector
    if res.tolerations:
        pod["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in res.tolerations]
    elif res.gpus > 0 and images.gpu_tolerations:
        pod["tolerations"] = [dict(t) for t in images.gpu_tolerations]
    if multinode(spec, stage):
        pod["subdomain"] = rendezvous_service_name(job)
    apply_to_pod(pod, res.pod_template)
    return pod


# --- the Job and the Service -----------------------------------------------------------------


def fail_job_rule() -> dict[str, Any]:
    """The podFailurePolicy rule that fails a stage Job when its program exits EXIT_UNFIXABLE
    (docs/design.md, "The stage command"). A train under torchrun exits 1 whatever its ranks
    did, so there the Job's retries are spent as before."""
    return {"action": "FailJob",
            "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": [EXIT_UNFIXABLE]}}


def pod_metadata(lab: Mapping[str, str], res: Any) -> dict[str, Any]:
    """Labels and annotations of the stage's pods: sheepdog's, plus the podTemplate's."""
    tpl = res.pod_template
    out: dict[str, Any] = {"labels": merge_metadata(lab, tpl.labels if tpl else {}, "labels")}
    if tpl is not None and tpl.annotations:
        out["annotations"] = dict(tpl.annotations)
    return out


def build_stage_job(
    run_name: str,
    namespace: str,
    run_uid: str,
    spec: RunSpec,
    config: StageConfig,
    image_defaults: Union[None, str, Mapping[str, Any], ImageDefaults] = None,
    retry: int = 0,
) -> dict[str, Any]:
    """The batch/v1 Job of one stage execution (config.stage of config.iteration; `retry`:
    the stage's retries, recovery_policy)."""
    if config.run != run_name:
        raise ValueError(f"config is for run {config.run!r}, not {run_name!r}")
    images = ImageDefaults.coerce(image_defaults)
    stage, iteration = config.stage, config.iteration
    config = job_config(spec, config, run_uid)
    name = job_name(run_name, iteration, stage, retry)
    lab = labels(run_name, iteration, stage)
    res = spec.stages.of(stage)

    job_labels = dict(lab)
    if retry:
        job_labels[LABEL_RETRY] = str(retry)
    job_spec: dict[str, Any] = {
        "backoffLimit": backoff_limit(spec, stage),
        # A node drained or lost, a preemption, an eviction: not the stage's fault, no retry spent.
        # An error no retry can fix (EXIT_UNFIXABLE: the stage refused its config, bad seeds)
        # fails the Job at once, its retries unspent.
        "podFailurePolicy": {
            "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                      fail_job_rule()]
        },
        # no ttlSecondsAfterFinished: the operator reads finished Jobs (and the run owns them)
        "template": {
            "metadata": pod_metadata(lab, res),
            "spec": build_pod_spec(spec, config, name, images),
        },
    }
    pods = spec.stages.train.nodes if multinode(spec, stage) else (
        spec.stages.synthesize.shards if sharded(spec, stage) else 1)
    if pods > 1:
        job_spec.update({"completionMode": "Indexed", "completions": pods, "parallelism": pods})
    if sharded(spec, stage):
        # Shards are independent: each index gets its own retries, and a shard that spends
        # them fails only itself while the others finish (the Job then fails, FailedIndexes).
        # A Job-wide backoffLimit would let failures of one shard end all of them.
        job_spec["backoffLimitPerIndex"] = job_spec.pop("backoffLimit")
    if res.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = res.active_deadline_seconds
    queue = spec.scheduling.queue_name or images.queue_name
    if queue:
        # Kueue admits the Job by unsuspending it when the LocalQueue has quota.
        job_labels[LABEL_QUEUE] = queue
        job_spec["suspend"] = True

    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": job_labels,
            "annotations": {GPUS_ANNOTATION: str(res.gpus)},
            "ownerReferences": [owner_reference(run_name, run_uid)],
        },
        "spec": job_spec,
    }


def job_config(spec: RunSpec, config: StageConfig, run_uid: str) -> StageConfig:
    """The config a stage execution's pods read (its ConfigMap's): the effective one, with the
    run's uid, which lets the stage tell this run's directory from a deleted namesake's
    (sheepdog_jobs.run_marker)."""
    return effective_config(spec, config).model_copy(update={"run_uid": run_uid})


def build_stage_config_map(run_name: str, namespace: str, run_uid: str, spec: RunSpec, config: StageConfig,
                           retry: int = 0) -> dict[str, Any]:
    """The ConfigMap that holds the stage execution's config file (kube/stage_config_map.py)."""
    job = job_name(run_name, config.iteration, config.stage, retry)
    return stage_config_map.build_config_map(job, namespace, labels(run_name, config.iteration, config.stage),
                                             owner_reference(run_name, run_uid),
                                             job_config(spec, config, run_uid).to_json())


def build_rendezvous_service(run_name: str, namespace: str, run_uid: str, config: StageConfig,
                             retry: int = 0) -> dict[str, Any]:
    """The headless Service of a multi-node train Job: pod k of the Indexed Job is reachable as
    `<job>-k.<job>-rdzv` (its hostname and subdomain), before it is Ready."""
    job = job_name(run_name, config.iteration, config.stage, retry)
    svc = rendezvous_service_name(job)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": svc,
            "namespace": namespace,
            "labels": labels(run_name, config.iteration, config.stage),
            "ownerReferences": [owner_reference(run_name, run_uid)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: job},
            "ports": [{"name": "rdzv", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT, "protocol": "TCP"}],
        },
    }


def _network_policy_defaults(enabled: Any, cidrs: Any) -> dict[str, Any]:
    if cidrs and not enabled:
        raise NetworkPolicyError("egressCIDRs need networkPolicy: the restriction is the run's NetworkPolicy")
    return {"network_policy": bool(enabled), "egress_cidrs": egress_cidrs(cidrs)}


def build_stage_objects(
    run_name: str,
    namespace: str,
    run_uid: str,
    spec: RunSpec,
    config: StageConfig,
    image_defaults: Union[None, str, Mapping[str, Any], ImageDefaults] = None,
    retry: int = 0,
) -> list[dict[str, Any]]:
    """Everything one stage execution needs, in creation order (the run's NetworkPolicy, a
    rendezvous Service and the config's ConfigMap first, then the Job)."""
    objs = []
    images = ImageDefaults.coerce(image_defaults)
    if images.network_policy:
        objs.append(build_run_network_policy(
            run_name, namespace, LABEL_RUN, owner_reference(run_name, run_uid),
            {LABEL_RUN: run_name, "app.kubernetes.io/managed-by": "sheepdog"}, images.egress_cidrs))
    if multinode(spec, config.stage):
        objs.append(build_rendezvous_service(run_name, namespace, run_uid, config, retry))
    objs.append(build_stage_config_map(run_name, namespace, run_uid, spec, config, retry))
    objs.append(build_stage_job(run_name, namespace, run_uid, spec, config, image_defaults, retry))
    return objs
