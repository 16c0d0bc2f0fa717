"""The export Job (spec.export): what kube/export_job.py builds from the planner's StartExport."""

from __future__ import annotations

import json

from sheepdog.export import ExportConfig
from sheepdog.kube.export_job import build_export_job
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
    command = container["command"]
    assert command[:3] == ["python", "-m", "sheepdog.export"]
    assert command[-2:] == ["--summary-file", "/dev/termination-log"]
    config = ExportConfig.model_validate_json(command[command.index("--config") + 1].replace("$$", "$"))
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
    command = container["command"]
    assert ExportConfig.model_validate_json(command[command.index("--config") + 1]).to == "/data/exports/demo"
