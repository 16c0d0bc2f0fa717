"""A stage's podTemplate: applied to the stage's pods, and refused (before any Job exists) when
it collides with sheepdog's pod or Pod Security "restricted" would refuse the pod."""

import pytest
from pydantic import ValidationError

from sheepdog.api.spec import RunSpec
from sheepdog.kube.preflight import prepare
from tests.operator.test_jobs_builder import build, container_of, pod_of

TEMPLATE = {
    "env": [{"name": "NCCL_SOCKET_IFNAME", "value": "eth0"}],
    "envFrom": [{"configMapRef": {"name": "nccl"}}],
    "serviceAccountName": "trainer",  # IRSA / Workload Identity
    "runtimeClassName": "nvidia",
    "annotations": {"k8s.v1.cni.cncf.io/networks": "rdma-net"},
    "labels": {"team": "align"},
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "volumes": [{"name": "ssh", "secret": {"secretName": "keys"}}],
    "volumeMounts": [{"name": "ssh", "mountPath": "/etc/keys", "readOnly": True}],
}


def spec_with(template, stage="train"):
    return RunSpec.model_validate({"model": {"base": "m"}, "stages": {stage: {"podTemplate": template}}})


def pod_template_problems(run, spec):
    """The pure part of the pre-flight (kube/preflight.py): every stage's Job built, its pods
    checked against Pod Security."""
    return prepare({"metadata": {"name": run, "namespace": "ns", "uid": "u"}}, spec, None).problems


def test_template_is_added_to_what_sheepdog_sets():
    job = build(spec_with(TEMPLATE), "train")
    pod, c = pod_of(job), container_of(job)
    meta = job["spec"]["template"]["metadata"]
    assert c["env"][-1] == {"name": "NCCL_SOCKET_IFNAME", "value": "eth0"}
    assert any(e["name"] == "SHEEPDOG_STAGE" for e in c["env"])  # ours stay
    assert c["envFrom"] == [{"configMapRef": {"name": "nccl"}}]
    assert (pod["serviceAccountName"], pod["runtimeClassName"]) == ("trainer", "nvidia")
    assert pod["affinity"] == TEMPLATE["affinity"]
    assert [v["name"] for v in pod["volumes"]][-1] == "ssh" and "data" in [v["name"] for v in pod["volumes"]]
    assert c["volumeMounts"][-1]["mountPath"] == "/etc/keys"
    assert meta["labels"]["team"] == "align" and meta["labels"]["sheepdog.dev/stage"] == "train"
    assert meta["annotations"]["k8s.v1.cni.cncf.io/networks"] == "rdma-net"
    assert "serviceAccountName" not in pod_of(build(spec_with(TEMPLATE), "synthesize"))  # per stage
    assert pod_template_problems("r", spec_with(TEMPLATE)) == []


def test_host_path_volume_is_refused_with_the_stage_and_the_rule():
    bad = {"volumes": [{"name": "nvme", "hostPath": {"path": "/mnt/nvme"}}],
           "volumeMounts": [{"name": "nvme", "mountPath": "/scratch"}]}
    (problem,) = pod_template_problems("r", spec_with(bad))
    assert problem.startswith('stages.train.podTemplate: the pod would violate Pod Security "restricted"')
    assert "hostPath volumes are forbidden" in problem


def test_unconfined_apparmor_annotation_is_refused():
    bad = {"annotations": {"container.apparmor.security.beta.kubernetes.io/stage": "unconfined"}}
    (problem,) = pod_template_problems("r", spec_with(bad, "synthesize"))
    assert "stages.synthesize.podTemplate" in problem and "unconfined" in problem


@pytest.mark.parametrize("template,what", [
    ({"env": [{"name": "HOME", "value": "/root"}]}, "podTemplate.env: HOME"),
    ({"volumes": [{"name": "data", "emptyDir": {}}]}, "podTemplate.volumes: data"),
    ({"volumeMounts": [{"name": "x", "mountPath": "/data"}]}, "podTemplate.volumeMounts: /data"),
    ({"labels": {"sheepdog.dev/run": "other"}}, "podTemplate.labels: sheepdog.dev/run"),
])
def test_replacing_what_sheepdog_sets_is_refused(template, what):
    (problem,) = pod_template_problems("r", spec_with(template))
    assert problem.startswith("stages.train.") and what in problem and "already set by sheepdog" in problem


def test_entries_need_names():
    with pytest.raises(ValidationError, match="podTemplate.env\\[0\\] needs a non-empty name"):
        spec_with({"env": [{"value": "x"}]})
    with pytest.raises(ValidationError, match="volumeMounts\\[0\\] needs a non-empty mountPath"):
        spec_with({"volumeMounts": [{"name": "x"}]})


def test_the_operator_holds_a_run_whose_pods_would_be_refused_and_creates_no_job():
    from tests.operator.test_observe import FakeKube, make_run_obj, reconciler

    bad = {"volumes": [{"name": "nvme", "hostPath": {"path": "/mnt/nvme"}}]}
    kube = FakeKube(make_run_obj(stages={"train": {"podTemplate": bad}}))
    result = reconciler(kube).reconcile("ns", "r")
    assert result.created == [] and kube.jobs == {}  # not even the synthesize Job
    status = kube.run["status"]
    assert status["reason"] == "InvalidSpec"
    assert "stages.train.podTemplate" in status["message"] and "hostPath volumes are forbidden" in status["message"]
    assert any(w[0] == "event" for w in kube.writes)  # a Warning says so
