"""The chart's guardrails ValidatingAdmissionPolicies on the real API server: a SelfAlignmentRun
with a disallowed image, ServiceAccount, Secret or volume is refused at `kubectl apply` with the
policy's message, an allowed one is created, a namespace's exception applies there only; and
the operator's own check (sheepdog.guardrails, which holds runs the policy never saw) gives the
same verdict on every case, in the same words for the image.
"""

from __future__ import annotations

import copy

import pytest

from sheepdog.guardrails import guardrail_problems
from tests.chart.e2e import apply_chart_crds, create_namespace, delete_namespace, unique
from tests.chart.helm import find, render, to_yaml
from tests.operator.conftest import run_manifest

pytestmark = pytest.mark.cluster

GOOD_IMAGE = "registry.example.com/ml/worker:1"


def rails(rdma_ns: str) -> dict:
    return {
        "allowedImagePrefixes": ["registry.example.com/ml/"],
        "allowedServiceAccounts": ["trainer"],
        "allowedVolumeTypes": ["secret", "configMap", "emptyDir"],
        "allowedSecretNames": ["hf-token"],
        "allowHostPath": False,
        "namespaces": {rdma_ns: {"allowedImagePrefixes": ["rdma.example.com/"], "allowHostPath": True}},
    }


@pytest.fixture(scope="module")
def policy(cluster):
    apply_chart_crds(cluster)
    ns, rdma = create_namespace(cluster, unique("tenant")), create_namespace(cluster, unique("rdma"))
    name = unique("sd")
    values = rails(rdma)
    docs = render({"fullnameOverride": name, "guardrails": values})
    objs = find(docs, "ValidatingAdmissionPolicy") + find(docs, "ValidatingAdmissionPolicyBinding")
    assert sorted(o["metadata"]["name"] for o in objs) == sorted([f"{name}-guardrails", f"{name}-guardrails-{rdma}"] * 2)
    cluster.apply(to_yaml(objs))
    try:
        # the API server loads a new policy and binding a moment later: wait for the first refusal
        probe = run("probe", ns, image="docker.io/evil/miner:1")
        cluster.wait_for("the guardrails policy in effect", lambda: apply(cluster, probe, dry_run=True).returncode != 0,
                         timeout=60)
        yield {"ns": ns, "rdma": rdma, "name": name, "values": values}
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
                        f"{name}-guardrails", f"{name}-guardrails-{rdma}", "--ignore-not-found", check=False)
        delete_namespace(cluster, ns)
        delete_namespace(cluster, rdma)


def run(name: str, namespace: str, image: str | None = None, pod_template: dict | None = None, **spec) -> dict:
    m = run_manifest(name, namespace, iterations=1, **spec)
    if image:
        m["spec"]["stages"]["train"]["image"] = image
    if pod_template:
        m["spec"]["stages"]["train"]["podTemplate"] = pod_template
    return m


def apply(cluster, manifest: dict, dry_run: bool = False):
    return cluster.kubectl("apply", *(["--dry-run=server"] if dry_run else []), "-f", "-",
                           input=to_yaml([manifest]), check=False)


def test_the_policies_type_check_against_the_crd(cluster, policy):
    """The API server's type checker found nothing wrong with any expression (a field name
    the CRD does not have would be a warning here, and the rule would never refuse)."""
    for suffix in ("", f"-{policy['rdma']}"):
        name = f"{policy['name']}-guardrails{suffix}"
        def checked():
            vap = cluster.get_json("validatingadmissionpolicy", name)
            status = vap.get("status") or {}
            return status if status.get("observedGeneration") == vap["metadata"]["generation"] else None

        status = cluster.wait_for(f"{name} type-checked", checked)
        assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


BAD = [
    # (case, run kwargs, the policy's message, in the refusal)
    ("image", {"image": "docker.io/evil/miner:1"},
     "stages.train.image: 'docker.io/evil/miner:1' is not under an allowed image prefix "
     "(guardrails.allowedImagePrefixes: registry.example.com/ml/)"),
    ("service-account", {"pod_template": {"serviceAccountName": "cluster-admin-sa"}},
     "stages.train.podTemplate.serviceAccountName: 'cluster-admin-sa' is not an allowed ServiceAccount "
     "(guardrails.allowedServiceAccounts: trainer)"),
    ("secret-env", {"pod_template": {"envFrom": [{"secretRef": {"name": "other-teams-keys"}}]}},
     "stages.train.podTemplate: a Secret that is not allowed is referenced in env, envFrom or volumes "
     "(guardrails.allowedSecretNames: hf-token)"),
    ("secret-volume", {"pod_template": {"volumes": [{"name": "k", "secret": {"secretName": "prod-db"}}],
                                        "volumeMounts": [{"name": "k", "mountPath": "/k"}]}},
     "stages.train.podTemplate: a Secret that is not allowed is referenced"),
    ("hub-token", {"model": {"base": "models/tiny", "hubTokenSecretRef": {"name": "prod-db", "key": "k"}}},
     "model.hubTokenSecretRef: Secret 'prod-db' is not allowed (guardrails.allowedSecretNames: hf-token)"),
    ("host-path", {"pod_template": {"volumes": [{"name": "nvme", "hostPath": {"path": "/mnt"}}],
                                    "volumeMounts": [{"name": "nvme", "mountPath": "/nvme"}]}},
     "stages.train.podTemplate.volumes: hostPath volumes are not allowed (guardrails.allowHostPath: false)"),
    ("volume-type", {"pod_template": {"volumes": [{"name": "share", "nfs": {"server": "nfs", "path": "/"}}],
                                      "volumeMounts": [{"name": "share", "mountPath": "/share"}]}},
     "stages.train.podTemplate.volumes: a volume type is not allowed "
     "(guardrails.allowedVolumeTypes: secret, configMap, emptyDir)"),
]


@pytest.mark.parametrize("case,kwargs,message", BAD, ids=[b[0] for b in BAD])
def test_a_disallowed_run_is_refused_at_apply(cluster, policy, case, kwargs, message):
    manifest = run(f"bad-{case}", policy["ns"], **copy.deepcopy(kwargs))
    res = apply(cluster, manifest)
    assert res.returncode != 0, res.stdout
    assert "ValidatingAdmissionPolicy" in res.stderr and message in res.stderr, res.stderr
    assert cluster.kubectl("get", "selfalignmentrun", f"bad-{case}", "-n", policy["ns"], check=False).returncode != 0
    # the operator would hold it too (a run created before the policy, or with it off)
    problems = guardrail_problems(manifest["spec"], policy["ns"], policy["values"])
    assert problems, case
    if case == "image":
        assert problems == [message]


def test_an_allowed_run_is_created(cluster, policy):
    manifest = run("good", policy["ns"], image=GOOD_IMAGE, model={
        "base": "models/tiny", "hubTokenSecretRef": {"name": "hf-token", "key": "token"}}, pod_template={
        "serviceAccountName": "trainer",
        "env": [{"name": "HF", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}}}],
        "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "tok", "secret": {"secretName": "hf-token"}}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "tok", "mountPath": "/tok"}]})
    res = apply(cluster, manifest)
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.get_json("selfalignmentrun", "good", "-n", policy["ns"])["spec"]["stages"]["train"]["image"] == GOOD_IMAGE
    assert guardrail_problems(manifest["spec"], policy["ns"], policy["values"]) == []
    # a run without any of these fields: the worker image, the default ServiceAccount
    plain = run("plain", policy["ns"])
    assert apply(cluster, plain).returncode == 0
    # and an update of the created run is checked as well
    manifest["spec"]["stages"]["train"]["image"] = "docker.io/evil/miner:1"
    res = apply(cluster, manifest)
    assert res.returncode != 0 and "is not under an allowed image prefix" in res.stderr, res.stdout + res.stderr


def test_a_namespace_exception_applies_there_only(cluster, policy):
    rdma, ns = policy["rdma"], policy["ns"]
    image = "rdma.example.com/worker:1"
    host = {"volumes": [{"name": "nvme", "hostPath": {"path": "/mnt"}}],
            "volumeMounts": [{"name": "nvme", "mountPath": "/nvme"}]}
    there = run("rdma", rdma, image=image, pod_template=host)
    res = apply(cluster, there, dry_run=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert guardrail_problems(there["spec"], rdma, policy["values"]) == []
    # its other keys are the global ones: an unlisted ServiceAccount is still refused there
    sa = run("rdma-sa", rdma, image=image, pod_template={"serviceAccountName": "root-ish"})
    res = apply(cluster, sa, dry_run=True)
    assert res.returncode != 0 and "is not an allowed ServiceAccount" in res.stderr, res.stderr
    # the registry the exception allows is not allowed elsewhere, nor is the global one there
    res = apply(cluster, run("rdma", ns, image=image), dry_run=True)
    assert res.returncode != 0 and "is not under an allowed image prefix" in res.stderr, res.stderr
    res = apply(cluster, run("ml", rdma, image=GOOD_IMAGE), dry_run=True)
    assert res.returncode != 0 and "guardrails.allowedImagePrefixes: rdma.example.com/" in res.stderr, res.stderr
