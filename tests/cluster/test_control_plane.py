"""The test control plane is real Kubernetes: version, scheduling, Jobs, GC, PodSecurity, RBAC."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def build_versions() -> dict[str, str]:
    """The versions tests/cluster/build builds (its defaults, or the same env overrides)."""
    text = (Path(__file__).parent / "build").read_text()
    out = {}
    for key in ("K8S", "ETCD", "KWOK", "HELM"):
        m = re.search(rf"^{key}_VERSION=\$\{{{key}_VERSION:-([^}}]+)\}}", text, re.M)
        assert m, f"{key}_VERSION not found in tests/cluster/build"
        out[key.lower()] = os.environ.get(f"{key}_VERSION", m.group(1))
    return out


def job_manifest(name: str, annotations: dict[str, str] | None = None, backoff_limit: int = 0,
                 gpus: int = 1, owner: dict | None = None) -> dict:
    meta: dict = {"name": name}
    if owner:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "registry.invalid/sheepdog/stage:test",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def job_condition(cluster, ns: str, name: str) -> str | None:
    job = cluster.get_json("job", name, "-n", ns)
    for c in job.get("status", {}).get("conditions", []):
        if c["type"] in ("Complete", "Failed") and c["status"] == "True":
            return c["type"]
    return None


def test_server_version_matches_build(cluster):
    want = build_versions()["k8s"]
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == want
    assert version["gitTreeState"] == "clean"
    assert not version["buildDate"].startswith("1970"), "buildDate comes from the module version"
    assert f"{version['major']}.{version['minor']}" == want.lstrip("v").rsplit(".", 1)[0]
    client = cluster.kubectl("version", "--client", "-o", "json")
    assert json.loads(client.stdout)["clientVersion"]["gitVersion"] == want


def test_gpu_nodes_ready_with_gpus(cluster):
    nodes = cluster.get_json("nodes", "-l", "sheepdog.dev/gpu-node=true")["items"]
    assert len(nodes) == cluster.control_plane.nodes >= 1
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        assert not node["spec"].get("taints"), "fake GPU nodes carry no taint by default"
    text = cluster.kubectl("get", "nodes").stdout
    assert text.count(" Ready ") >= len(nodes)


def test_gpu_job_completes_with_termination_message(cluster, namespace):
    message = json.dumps({"stage": "generate", "samples": 32, "loss": 0.25})
    cluster.apply(job_manifest("ok", {"sheepdog.test/termination-message": message}), namespace)
    assert cluster.wait_for("job ok finished", lambda: job_condition(cluster, namespace, "ok")) == "Complete"
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=ok")["items"]
    assert len(pods) == 1
    pod = pods[0]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] in cluster.control_plane.node_names()
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0
    assert term["message"] == message
    job = cluster.get_json("job", "ok", "-n", namespace)
    assert job["status"]["succeeded"] == 1


def test_gpu_job_that_fails_uses_its_backoff_limit(cluster, namespace):
    annotations = {"sheepdog.test/fail": "true", "sheepdog.test/exit-code": "3",
                   "sheepdog.test/termination-message": "out of memory"}
    cluster.apply(job_manifest("bad", annotations, backoff_limit=1), namespace)
    assert cluster.wait_for("job bad finished", lambda: job_condition(cluster, namespace, "bad"), timeout=180) == "Failed"
    job = cluster.get_json("job", "bad", "-n", namespace)
    assert job["status"]["failed"] == 2
    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"][0]
    assert failed["reason"] == "BackoffLimitExceeded"
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=bad")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert term["exitCode"] == 3
        assert term["message"] == "out of memory"


def test_held_pod_outlives_its_duration(cluster, namespace):
    # sheepdog.test/hold cancels the end kwok scheduled when the pod started
    cluster.apply(job_manifest("held", {"sheepdog.test/duration": "6s"}), namespace)

    def running_pod():
        pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=held")["items"]
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)

    name = cluster.wait_for("held pod running", running_pod, timeout=120, interval=0.2)["metadata"]["name"]
    cluster.kubectl("annotate", "pod", name, "-n", namespace, "sheepdog.test/hold=true")
    held = cluster.wait_for("pod held", lambda: (p := cluster.get_json("pod", name, "-n", namespace))
                            ["status"].get("reason") == "SheepdogTestHeld" and p, timeout=60, interval=0.2)
    assert held["status"]["phase"] == "Running"
    time.sleep(10)  # past the 6 s the pod would have run
    pod = cluster.get_json("pod", name, "-n", namespace)
    assert pod["status"]["phase"] == "Running", pod["status"]
    assert job_condition(cluster, namespace, "held") is None


def test_pod_beyond_gpu_capacity_stays_pending(cluster, namespace):
    # 9 GPUs fit on no node (8 each): the real scheduler must refuse to place it.
    cluster.apply(job_manifest("huge", gpus=9), namespace)
    cluster.wait_for(
        "FailedScheduling event",
        lambda: any(
            e.get("reason") == "FailedScheduling" and "nvidia.com/gpu" in e.get("message", "")
            for e in cluster.get_json("events", "-n", namespace)["items"]
        ),
    )
    pods = cluster.get_json("pods", "-n", namespace, "-l", "job-name=huge")["items"]
    assert pods and all(not p["spec"].get("nodeName") for p in pods)
    assert all(p["status"]["phase"] == "Pending" for p in pods)


def test_garbage_collector_deletes_owned_jobs(cluster, namespace):
    cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=b")
    owner = cluster.get_json("configmap", "owner", "-n", namespace)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}
    job = job_manifest("owned", {"sheepdog.test/duration": "1h"}, owner=ref)
    job["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    cluster.apply(job, namespace)
    cluster.wait_for("pod of owned job running", lambda: any(
        p["status"].get("phase") == "Running"
        for p in cluster.get_json("pods", "-n", namespace, "-l", "job-name=owned")["items"]))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    cluster.wait_for("owned job deleted", lambda: cluster.kubectl(
        "get", "job", "owned", "-n", namespace, check=False).returncode != 0)
    res = cluster.kubectl("get", "job", "owned", "-n", namespace, check=False)
    assert "NotFound" in res.stderr
    # The job's pod goes too (the GC deletes it, kwok removes the terminating pod).
    cluster.wait_for("owned job's pods deleted", lambda: not cluster.get_json(
        "pods", "-n", namespace, "-l", "job-name=owned")["items"])


PRIVILEGED_POD = """
apiVersion: v1
kind: Pod
metadata: {name: privileged}
spec:
  containers:
  - name: c
    image: registry.invalid/x
    securityContext: {privileged: true}
"""

RESTRICTED_POD = """
apiVersion: v1
kind: Pod
metadata: {name: compliant}
spec:
  securityContext:
    runAsNonRoot: true
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: c
    image: registry.invalid/x
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
"""


def test_pod_security_restricted_namespace(cluster, namespace):
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    bad = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=PRIVILEGED_POD, check=False)
    assert bad.returncode != 0
    assert "violates PodSecurity" in bad.stderr and "restricted" in bad.stderr
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=RESTRICTED_POD)
    assert cluster.get_json("pod", "compliant", "-n", namespace)["metadata"]["name"] == "compliant"
    res = cluster.kubectl("get", "pod", "privileged", "-n", namespace, check=False)
    assert res.returncode != 0


def test_rbac_refuses_service_account_without_rights(cluster, namespace):
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    who = f"system:serviceaccount:{namespace}:nobody"
    can = cluster.kubectl("auth", "can-i", "create", "jobs.batch", "-n", namespace, f"--as={who}", check=False)
    assert can.stdout.strip() == "no" and can.returncode != 0
    refused = cluster.kubectl("get", "pods", "-n", namespace, f"--as={who}", check=False)
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr and who in refused.stderr
    # Granting a Role makes the same request pass: the refusal came from RBAC.
    cluster.kubectl("create", "role", "pod-reader", "-n", namespace, "--verb=get,list", "--resource=pods")
    cluster.kubectl("create", "rolebinding", "nobody-reads", "-n", namespace, "--role=pod-reader",
                    f"--serviceaccount={namespace}:nobody")
    cluster.wait_for("RBAC grant visible", lambda: cluster.kubectl(
        "get", "pods", "-n", namespace, f"--as={who}", check=False).returncode == 0)
    still = cluster.kubectl("auth", "can-i", "delete", "pods", "-n", namespace, f"--as={who}", check=False)
    assert still.stdout.strip() == "no"


def test_restart_apiserver_keeps_data(cluster, namespace):
    cluster.kubectl("create", "configmap", "survivor", "-n", namespace, "--from-literal=k=v")
    port = cluster.control_plane.ports["kube-apiserver"]
    cluster.control_plane.restart("kube-apiserver")
    assert cluster.control_plane.ports["kube-apiserver"] == port
    data = cluster.get_json("configmap", "survivor", "-n", namespace)["data"]
    assert data == {"k": "v"}


def test_etcd_crash_and_restart_keeps_data(cluster, namespace):
    cp = cluster.control_plane
    cluster.kubectl("create", "configmap", "durable", "-n", namespace, "--from-literal=k=v")
    cp.kill("etcd")
    assert not cp.is_running("etcd")
    down = cluster.kubectl("get", "configmap", "durable", "-n", namespace, "--request-timeout=3s", check=False)
    assert down.returncode != 0
    cp.start("etcd")
    cp.wait_ready()
    assert cluster.get_json("configmap", "durable", "-n", namespace)["data"] == {"k": "v"}
