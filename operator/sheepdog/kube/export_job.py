"""The Job of a run's export (spec.export, planner/export_policy.py): a pure builder, as
jobs.py's are for stages.

`<run>-i<N>-export` runs export_command (`python -m sheepdog.export --config FILE ...`) in the
worker image, its ExportConfig in a ConfigMap mounted as a stage's is (kube/stage_config_map.py:
the config holds the whole spec, kept out of the command line, the pod spec and `ps`), with the
run's volume at /data, the pod and container security of stage pods,
no GPU, and the export's S3 credentials as the environment of spec.export.credentialsSecretRef
(envFrom: the Secret's values never appear in the Job, the spec or the status). Retries are a
stage's: backoffLimit spec.retries, disruptions free.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from sheepdog.api.spec import RunSpec
from sheepdog.export.config import ExportConfig, export_command
from sheepdog.kube import stage_config_map
from sheepdog.kube.jobs import (
    CACHE_DIR, CONTAINER_NAME, HOME_DIR, LABEL_RETRY, PYTHON, ImageDefaults, container_security_context, escape_for_kubelet,
    base_pod_spec, job_name, labels, owner_reference, volume_mounts, volumes,
)
from sheepdog.planner.retry_policy import backoff_limit
from sheepdog.stage_config import TERMINATION_LOG

EXPORT = "export"
# Copying a model is disk and network bound: a small, bounded request (a cluster's LimitRange
# or ResourceQuota may demand requests).
EXPORT_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}


def export_env(spec: RunSpec, config: ExportConfig) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in (
        ("PYTHONUNBUFFERED", "1"), ("HOME", HOME_DIR), ("XDG_CACHE_HOME", CACHE_DIR), ("TMPDIR", "/tmp"),
        ("SHEEPDOG_RUN", config.run), ("SHEEPDOG_ITERATION", str(config.iteration)), ("SHEEPDOG_STAGE", EXPORT))]


def build_export_job(run: Mapping[str, Any], spec: RunSpec, config: ExportConfig,
                     image_defaults: Union[None, str, Mapping[str, Any], ImageDefaults] = None,
                     retry: int = 0) -> dict[str, Any]:
    """The Job of `run` (its metadata: name, namespace, uid) that exports as `config` says
    (`retry`: the export record's retries, recovery_policy)."""
    meta = run["metadata"]
    run_name, namespace, run_uid = meta["name"], meta["namespace"], meta["uid"]
    if config.run != run_name:
        raise ValueError(f"export config is for run {config.run!r}, not {run_name!r}")
    images = ImageDefaults.coerce(image_defaults)
    name = job_name(run_name, config.iteration, EXPORT, retry)
    lab = labels(run_name, config.iteration, EXPORT)
    job_labels = {**lab, LABEL_RETRY: str(retry)} if retry else dict(lab)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": images.for_stage(EXPORT),
        "command": [escape_for_kubelet(a) for a in export_command(
            config, python=PYTHON, summary_file=TERMINATION_LOG, config_file=stage_config_map.CONFIG_PATH)],
        "env": export_env(spec, config),
        "resources": {k: dict(v) for k, v in EXPORT_RESOURCES.items()},
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*volume_mounts(), stage_config_map.mount()],
    }
    secret = spec.export.credentials_secret_ref if spec.export is not None else None
    if secret is not None:
        container["envFrom"] = [{"secretRef": {"name": secret.name}}]
    if images.pull_policy:
        container["imagePullPolicy"] = images.pull_policy
    pod = base_pod_spec(spec, images, container, [*volumes(spec), stage_config_map.volume(name, config.to_json())])
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels,
                     "ownerReferences": [owner_reference(run_name, run_uid)]},
        "spec": {
            "backoffLimit": backoff_limit(spec, EXPORT),
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [
                {"type": "DisruptionTarget", "status": "True"}]}]},
            "template": {"metadata": {"labels": dict(lab)}, "spec": pod},
        },
    }


def is_export(action: Any) -> bool:
    return getattr(action, "stage", None) == EXPORT


def build_export_config_map(run: Mapping[str, Any], config: ExportConfig, retry: int = 0) -> dict[str, Any]:
    """The ConfigMap of the export Job's config file (created before the Job, owned by the run)."""
    meta = run["metadata"]
    name = job_name(meta["name"], config.iteration, EXPORT, retry)
    return stage_config_map.build_config_map(name, meta["namespace"], labels(meta["name"], config.iteration, EXPORT),
                                             owner_reference(meta["name"], meta["uid"]), config.to_json())


def export_objects(run: Mapping[str, Any], spec: RunSpec, action: Any, image_defaults: Optional[Any]) -> list[dict]:
    retry = getattr(action, "retry", 0)
    return [build_export_config_map(run, action.config, retry),
            build_export_job(run, spec, action.config, image_defaults, retry)]
