"""The export Job (spec.export): what kube/export_job.py builds from the planner's StartExport."""

from __future__ import annotations

import json

from sheepdog.export import ExportConfig
from sheepdog.kube.export_job import build_export_job, export_objects
from sheepdog.kube.stage_config_map import CONFIG_PATH, config_text
from sheepdog.planner import StageObservation, plan
from sheepdog.planner.export_policy import StartExport
from sheepdog.stage_config import kube_layout
from tests.planner.simulate import make_spec, summary_for


RUN = {"metadata": {"name": "demo", "namespace": "ns", "uid": "uid-1"}}


def _start_export(spec) -> StartExport:
    """The planner's export action for a run whose one iteration finished."""
    observed = [StageObservation(1, s, "succeeded", summary=summary_for(1, s), finished_at="2026-01-01T00:00:01Z")
                for s in ("synthesize", "curate", "train")]
    p = plan("demo", spec, None, observed, kube_layout("demo", spec), "2026-01-01T00:00:02Z", 1)
    assert p.status.reason == "Exporting", p.status
    (action,) = p.actions
    return action


def test_export_job_runs_the_export_command_with_the_secret_by_reference():
    spec = make_spec(iterations=1, export={"to": "s3://models/demo", "credentialsSecretRef": {"name": "s3-creds"}})
    action = _start_export(spec)
    job = build_export_job(RUN, spec, action.config, "registry.example/worker:1")
    assert job["metadata"]["name"] == "demo-i1-export"
    assert job["metadata"]["labels"]["sheepdog.dev/stage"] == "export"
    assert job["metadata"]["labels"]["sheepdog.dev/iteration"] == "1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert job["spec"]["backoffLimit"] == spec.retries
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/worker:1"
    assert container["command"] == ["python", "-m", "sheepdog.export", "--config", CONFIG_PATH,
                                    "--summary-file", "/dev/termination-log"]
    config = ExportConfig.model_validate_json(config_text(export_objects(RUN, spec, action, None)))
    assert (config.iteration, config.model_dir, config.to) == (1, "/data/runs/demo/i1/model", "s3://models/demo")
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(job)  # never a value, only the reference
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["allowPrivilegeEscalation"] is False


def test_export_to_the_volume_needs_no_secret():
    spec = make_spec(iterations=1, export={"to": "exports/demo"})
    job = build_export_job(RUN, spec, _start_export(spec).config)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in container
    assert ExportConfig.model_validate_json(config_text(export_objects(
        RUN, spec, _start_export(spec), None))).to == "/data/exports/demo"


def test_the_export_command_line_carries_no_config():
    """The ExportConfig (the whole spec: URLs, names, the destination) reaches the pod as a file,
    the run-owned ConfigMap mounted read-only, as a stage's config does: the Job's and pod's
    spec and `ps` on the node show a path, no JSON and none of the config's values."""
    planted = "s3://models/planted-destination-5e1f"
    spec = make_spec(iterations=1, export={"to": planted, "credentialsSecretRef": {"name": "s3-creds"}},
                     model={"base": "models/planted-base-9b3d"})
    action = _start_export(spec)
    cm, job = export_objects(RUN, spec, action, None)
    assert (cm["kind"], job["kind"]) == ("ConfigMap", "Job")  # the file first: the pod never waits for it
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command == ["python", "-m", "sheepdog.export", "--config", CONFIG_PATH,
                       "--summary-file", "/dev/termination-log"]
    assert not any(a.lstrip().startswith(("{", "[")) or '"' in a for a in command), command  # no JSON
    job_text = json.dumps(job)
    for value in (planted, "planted-base-9b3d", "/data/runs/demo/i1/model", "modelDir"):
        assert value not in job_text, value  # nor any of the config's values, anywhere in the Job
    # the file: the config as the planner made it, in an immutable ConfigMap owned by the run
    assert ExportConfig.model_validate_json(config_text([cm])) == action.config
    assert cm["immutable"] is True and cm["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert cm["metadata"]["labels"]["sheepdog.dev/stage"] == "export"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if CONFIG_PATH.startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    assert volumes[mount["name"]]["configMap"]["name"] == cm["metadata"]["name"]
