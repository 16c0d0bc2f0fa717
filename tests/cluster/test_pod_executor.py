"""The pod executor runs pods bound to its node as local processes, with the real Job controller."""

from __future__ import annotations

import json
import os
import sys

import pytest

from tests.cluster.pod_executor import TAINT, TOLERATION

pytestmark = pytest.mark.cluster

WRITER = r"""
import json, os, sys
out, term = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(out), exist_ok=True)
with open(out, "w") as f:
    json.dump({"pod": os.environ["POD_NAME"], "namespace": os.environ["POD_NAMESPACE"],
               "index": os.environ["INDEX"], "token": os.environ["TOKEN"],
               "greeting": os.environ["GREETING"], "cwd": os.getcwd()}, f)
with open(term, "w") as f:
    json.dump({"written": out.endswith("out/result.json"), "samples": 3}, f)
"""


def executor_job(name: str, node: str, command: list[str], args: list[str] | None = None,
                 env: list[dict] | None = None, volumes: list[dict] | None = None,
                 mounts: list[dict] | None = None, backoff_limit: int = 0, **container_extra) -> dict:
    container = {"name": "main", "image": "local/python", "command": command, "args": args or [],
                 "env": env or [], "volumeMounts": mounts or [], **container_extra}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "completions": 1,
            "completionMode": "Indexed",
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [TOLERATION],
                    "containers": [container],
                    "volumes": volumes or [],
                }
            },
        },
    }


def finished(cluster, ns: str, name: str) -> str | None:
    for c in cluster.get_json("job", name, "-n", ns).get("status", {}).get("conditions", []):
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return c["type"]
    return None


def test_executor_node_is_ready_and_not_kwok(cluster, pod_executor):
    node = cluster.get_json("node", pod_executor.node)
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["metadata"]["labels"]["sheepdog.dev/pod-executor"] == "true"
    assert TAINT in node["spec"]["taints"]  # pods that do not tolerate it stay off
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    lease = cluster.get_json("lease", pod_executor.node, "-n", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == pod_executor.node


def test_job_runs_locally_writes_pvc_and_termination_message(cluster, namespace, pod_executor):
    cluster.create_pvc(namespace, "work")
    cluster.kubectl("create", "secret", "generic", "creds", "-n", namespace, "--from-literal=token=s3cret")
    env = [
        {"name": "GREETING", "value": "hello"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "INDEX", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
    ]
    job = executor_job(
        "writer", pod_executor.node, [sys.executable, "-c", WRITER],
        args=["/data/out/result.json", "/dev/termination-log"], env=env,
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "work"}},
                 {"name": "scratch", "emptyDir": {}}],
        mounts=[{"name": "data", "mountPath": "/data"}, {"name": "scratch", "mountPath": "/scratch"}],
        workingDir="/scratch",
    )
    cluster.apply(job, namespace)
    assert cluster.wait_for("writer job finished", lambda: finished(cluster, namespace, "writer")) == "Complete"

    result = pod_executor.volume_root / "work" / "out" / "result.json"
    assert result.is_file(), f"{result} was not written"
    data = json.loads(result.read_text())
    pod = cluster.get_json("pods", "-n", namespace, "-l", "job-name=writer")["items"][0]
    assert data["pod"] == pod["metadata"]["name"]
    assert data["namespace"] == namespace
    assert data["index"] == "0"
    assert data["token"] == "s3cret"
    assert data["greeting"] == "hello"
    assert data["cwd"] != "/scratch" and data["cwd"].endswith("/volumes/scratch")

    assert pod["spec"]["nodeName"] == pod_executor.node
    assert pod["status"]["phase"] == "Succeeded"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0
    assert json.loads(term["message"]) == {"written": True, "samples": 3}


def test_failing_command_fails_the_job_with_log_fallback(cluster, namespace, pod_executor):
    code = "import sys; print('stage exploded: bad batch'); sys.exit(4)"
    job = executor_job("boom", pod_executor.node, [sys.executable, "-c", code],
                       terminationMessagePolicy="FallbackToLogsOnError")
    cluster.apply(job, namespace)
    assert cluster.wait_for("boom job finished", lambda: finished(cluster, namespace, "boom")) == "Failed"
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=boom")["items"]
    assert len(pods) == 1
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert pods[0]["status"]["phase"] == "Failed"
    assert term["exitCode"] == 4
    assert "stage exploded: bad batch" in term["message"]


def test_deleting_a_running_pod_stops_its_process(cluster, namespace, pod_executor):
    marker = pod_executor.volume_root / "sleeper" / "alive"
    cluster.create_pvc(namespace, "sleeper")
    code = "import os, sys, time, pathlib; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(600)"
    job = executor_job("sleeper", pod_executor.node, [sys.executable, "-c", code], args=["/v/alive"],
                       volumes=[{"name": "v", "persistentVolumeClaim": {"claimName": "sleeper"}}],
                       mounts=[{"name": "v", "mountPath": "/v"}])
    cluster.apply(job, namespace)
    cluster.wait_for("sleeper started", lambda: marker.is_file() and marker.read_text())
    pid = int(marker.read_text())
    assert os.path.exists(f"/proc/{pid}")
    pod = cluster.get_json("pods", "-n", namespace, "-l", "job-name=sleeper")["items"][0]
    assert pod["status"]["phase"] == "Running"
    cluster.kubectl("delete", "job", "sleeper", "-n", namespace, "--cascade=foreground", "--wait=false")
    cluster.wait_for("sleeper pod gone", lambda: not cluster.get_json(
        "pods", "-n", namespace, "-l", "job-name=sleeper")["items"], timeout=60)
    cluster.wait_for("sleeper process ended", lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)


def test_json_argument_paths_under_a_mount_are_mapped(tmp_path):
    from tests.cluster.pod_executor import PodRun

    map_path, map_string = PodRun._mapper(None, [("/data", tmp_path / "claim"), ("/tmp", tmp_path / "t")])
    arg = json.dumps({"root": "/data", "runDir": "/data/runs/r", "nested": {"paths": ["/data/a", "/tmp/b"]},
                      "other": "/database", "name": "data", "n": 3, "ok": True, "none": None})
    mapped = json.loads(map_string(arg))
    assert mapped["root"] == str(tmp_path / "claim")
    assert mapped["runDir"] == str(tmp_path / "claim" / "runs" / "r")
    assert mapped["nested"]["paths"] == [str(tmp_path / "claim" / "a"), str(tmp_path / "t" / "b")]
    assert (mapped["other"], mapped["name"], mapped["n"], mapped["ok"], mapped["none"]) == ("/database", "data", 3, True, None)
    # untouched: JSON without mount paths (byte for byte), text that only looks like JSON
    plain = '{"a": "/elsewhere", "b": 1}'
    assert map_string(plain) == plain
    assert map_string("{not json /data/x}") == "{not json /data/x}"
    assert map_string("[/data/x") == "[/data/x"


def test_job_with_a_json_config_argument_sees_local_paths(cluster, namespace, pod_executor):
    cluster.create_pvc(namespace, "jsonwork")
    code = ("import json, pathlib, sys; c = json.loads(sys.argv[1]); "
            "p = pathlib.Path(c['outDir']) / 'done.txt'; p.parent.mkdir(parents=True, exist_ok=True); "
            "p.write_text(c['root'])")
    config = json.dumps({"root": "/data", "outDir": "/data/runs/x/i1/curate"})
    job = executor_job("jsonarg", pod_executor.node, [sys.executable, "-c", code], args=[config],
                       volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "jsonwork"}}],
                       mounts=[{"name": "data", "mountPath": "/data"}])
    cluster.apply(job, namespace)
    assert cluster.wait_for("jsonarg job finished", lambda: finished(cluster, namespace, "jsonarg")) == "Complete"
    done = pod_executor.volume_root / "jsonwork" / "runs" / "x" / "i1" / "curate" / "done.txt"
    assert done.read_text() == str(pod_executor.volume_root / "jsonwork")
