"""sheepdog.guardrails: the admin guardrails a run's spec is checked against (pure)."""

from __future__ import annotations

import pytest

from sheepdog.guardrails import Guardrails, GuardrailsError, guardrail_problems, secret_references

RAILS = {
    "allowedImagePrefixes": ["registry.example.com/ml/"],
    "allowedServiceAccounts": ["trainer"],
    "allowedVolumeTypes": ["secret", "configMap", "emptyDir", "csi"],
    "allowedSecretNames": ["hf-token", "nccl-conf"],
    "allowHostPath": False,
    "namespaces": {"team-rdma": {"allowedImagePrefixes": ["rdma.example.com/"], "allowHostPath": True}},
}


def spec_with(**stage_train) -> dict:
    return {"model": {"base": "m"}, "stages": {"train": stage_train}}


def test_defaults_allow_everything_but_host_path():
    spec = spec_with(image="anything:1", podTemplate={
        "serviceAccountName": "whoever", "envFrom": [{"secretRef": {"name": "any"}}],
        "volumes": [{"name": "x", "nfs": {"server": "s", "path": "/"}}]})
    assert guardrail_problems(spec, "ns", None) == []
    host = spec_with(podTemplate={"volumes": [{"name": "nvme", "hostPath": {"path": "/mnt"}}]})
    assert guardrail_problems(host, "ns", None) == [
        "stages.train.podTemplate.volumes[nvme]: hostPath volumes are not allowed (guardrails.allowHostPath: false)"]


def test_an_allowed_run_has_no_problem():
    spec = spec_with(image="registry.example.com/ml/worker:1", podTemplate={
        "serviceAccountName": "trainer",
        "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "t"}}}, {"name": "B", "value": "1"}],
        "volumes": [{"name": "conf", "secret": {"secretName": "nccl-conf"}}, {"name": "scratch", "emptyDir": {}}]})
    spec["model"]["hubTokenSecretRef"] = {"name": "hf-token", "key": "token"}
    assert guardrail_problems(spec, "team-a", RAILS) == []


def test_each_rule_names_the_field_and_the_allowed_values():
    spec = {"model": {"base": "m", "hubTokenSecretRef": {"name": "prod-db", "key": "k"}},
            "evaluation": {"judge": {"url": "http://j", "model": "j", "apiKeySecretRef": {"name": "openai", "key": "k"}}},
            "export": {"to": "s3://b/p", "credentialsSecretRef": {"name": "aws-admin"}},
            "stages": {
                "synthesize": {"image": "docker.io/evil/miner:latest"},
                # a prefix is a string prefix: the admin's trailing slash is what keeps ml-evil out
                "curate": {"image": "registry.example.com/ml-evil/x:1"},
                "train": {"podTemplate": {
                    "serviceAccountName": "cluster-admin-sa",
                    "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "other-team", "key": "k"}}}],
                    "envFrom": [{"secretRef": {"name": "prod-env"}}, {"configMapRef": {"name": "cm"}}],
                    "volumes": [{"name": "nvme", "hostPath": {"path": "/mnt"}},
                                {"name": "share", "nfs": {"server": "s", "path": "/"}},
                                {"name": "tok", "projected": {"sources": [{"secret": {"name": "proj"}}]}}]}}}}
    problems = guardrail_problems(spec, "team-a", RAILS)
    assert problems == [
        "stages.synthesize.image: 'docker.io/evil/miner:latest' is not under an allowed image prefix "
        "(guardrails.allowedImagePrefixes: registry.example.com/ml/)",
        "stages.curate.image: 'registry.example.com/ml-evil/x:1' is not under an allowed image prefix "
        "(guardrails.allowedImagePrefixes: registry.example.com/ml/)",
        "stages.train.podTemplate.serviceAccountName: 'cluster-admin-sa' is not an allowed ServiceAccount "
        "(guardrails.allowedServiceAccounts: trainer)",
        "stages.train.podTemplate.volumes[nvme]: hostPath volumes are not allowed (guardrails.allowHostPath: false)",
        "stages.train.podTemplate.volumes[share]: volume type nfs is not allowed "
        "(guardrails.allowedVolumeTypes: secret, configMap, emptyDir, csi)",
        "stages.train.podTemplate.volumes[tok]: volume type projected is not allowed "
        "(guardrails.allowedVolumeTypes: secret, configMap, emptyDir, csi)",
        "model.hubTokenSecretRef: Secret 'prod-db' is not allowed (guardrails.allowedSecretNames: hf-token, nccl-conf)",
        "evaluation.judge.apiKeySecretRef: Secret 'openai' is not allowed "
        "(guardrails.allowedSecretNames: hf-token, nccl-conf)",
        "export.credentialsSecretRef: Secret 'aws-admin' is not allowed "
        "(guardrails.allowedSecretNames: hf-token, nccl-conf)",
        "stages.train.podTemplate.env[0]: Secret 'other-team' is not allowed "
        "(guardrails.allowedSecretNames: hf-token, nccl-conf)",
        "stages.train.podTemplate.envFrom[0]: Secret 'prod-env' is not allowed "
        "(guardrails.allowedSecretNames: hf-token, nccl-conf)",
        "stages.train.podTemplate.volumes[tok]: Secret 'proj' is not allowed "
        "(guardrails.allowedSecretNames: hf-token, nccl-conf)",
    ]


def test_a_namespace_entry_replaces_only_the_keys_it_names():
    spec = spec_with(image="rdma.example.com/worker:1", podTemplate={
        "serviceAccountName": "rogue", "volumes": [{"name": "nvme", "hostPath": {"path": "/mnt"}}]})
    assert guardrail_problems(spec, "team-rdma", RAILS) == [
        "stages.train.podTemplate.serviceAccountName: 'rogue' is not an allowed ServiceAccount "
        "(guardrails.allowedServiceAccounts: trainer)"]
    # the same run anywhere else: the global values
    assert len(guardrail_problems(spec, "team-a", RAILS)) == 3
    # an empty list in an entry lifts that limit for the namespace
    open_ns = {**RAILS, "namespaces": {"lab": {"allowedServiceAccounts": []}}}
    assert not [p for p in guardrail_problems(spec, "lab", open_ns) if "serviceAccountName" in p]


def test_unset_service_account_and_image_are_always_allowed():
    """The namespace's default ServiceAccount and the operator's worker image are the admin's."""
    assert guardrail_problems(spec_with(podTemplate={"env": [{"name": "X", "value": "1"}]}), "ns", RAILS) == []


def test_secret_references_cover_every_place():
    spec = {"model": {"hubTokenSecretRef": {"name": "a", "key": "k"}},
            "stages": {s: {"podTemplate": {"envFrom": [{"secretRef": {"name": s}}]}}
                       for s in ("synthesize", "curate", "train", "evaluate")}}
    assert [n for _, n in secret_references(spec)] == ["a", "synthesize", "curate", "train", "evaluate"]


def test_coerce_reads_the_charts_json_and_refuses_malformed_values():
    import json

    g = Guardrails.coerce(json.dumps(RAILS))
    assert g.allowed_image_prefixes == ("registry.example.com/ml/",)
    assert g.for_namespace("team-rdma").allow_host_path is True
    assert g.for_namespace("team-rdma").allowed_secret_names == ("hf-token", "nccl-conf")  # inherited
    assert g.for_namespace("other") is g
    assert Guardrails.coerce("") == Guardrails() == Guardrails.coerce(None)
    for bad, msg in [("{", "not valid JSON"), ("[]", "must be a JSON object"),
                     ({"allowedImages": []}, "unknown keys ['allowedImages']"),
                     ({"allowHostPath": "no"}, "guardrails.allowHostPath: must be true or false"),
                     ({"allowedSecretNames": "hf-token"}, "must be a list of non-empty strings"),
                     ({"namespaces": {"x": {"allowPrivileged": True}}}, "guardrails.namespaces.x")]:
        with pytest.raises(GuardrailsError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            Guardrails.coerce(bad)


def test_the_operator_holds_a_run_the_guardrails_forbid_and_creates_no_job():
    """Reconciler with the chart's guardrails: InvalidSpec with the reason, no Job; the same
    run in the namespace whose entry allows its registry gets its first Job."""
    import json

    from sheepdog.kube.operator import guardrails
    from tests.operator.test_observe import FakeKube, make_run_obj, reconciler

    kube = FakeKube(make_run_obj(stages={"train": {"image": "docker.io/evil/miner:latest"}}))
    result = reconciler(kube, guardrails=guardrails({"SHEEPDOG_GUARDRAILS": json.dumps(RAILS)})).reconcile("ns", "r")
    assert result.created == [] and kube.jobs == {}
    status = kube.run["status"]
    assert status["reason"] == "InvalidSpec"
    assert "stages.train.image: 'docker.io/evil/miner:latest' is not under an allowed image prefix" in status["message"]
    allowed = {**RAILS, "namespaces": {"ns": {"allowedImagePrefixes": ["docker.io/evil/"]}}}
    kube = FakeKube(make_run_obj(stages={"train": {"image": "docker.io/evil/miner:latest"}}))
    assert reconciler(kube, guardrails=guardrails({"SHEEPDOG_GUARDRAILS": json.dumps(allowed)})).reconcile(
        "ns", "r").created == ["r-i1-synthesize"]


def test_the_operator_refuses_to_start_with_malformed_guardrails():
    from sheepdog.kube.operator import guardrails

    with pytest.raises(SystemExit, match="SHEEPDOG_GUARDRAILS: guardrails.allowHostPath: must be true or false"):
        guardrails({"SHEEPDOG_GUARDRAILS": '{"allowHostPath": "yes"}'})


def test_a_finished_run_is_not_rewritten_when_the_guardrails_tighten():
    from sheepdog.guardrails import run_guardrail_problems

    run = {"metadata": {"name": "r", "namespace": "team-a"},
           "spec": spec_with(image="docker.io/evil/miner:1"), "status": {"phase": "Running"}}
    assert run_guardrail_problems(run, RAILS) == guardrail_problems(run["spec"], "team-a", RAILS) != []
    assert run_guardrail_problems({**run, "metadata": {"namespace": "team-rdma"}}, RAILS) == [
        "stages.train.image: 'docker.io/evil/miner:1' is not under an allowed image prefix "
        "(guardrails.allowedImagePrefixes: rdma.example.com/)"]
    for phase in ("Succeeded", "Failed"):
        assert run_guardrail_problems({**run, "status": {"phase": phase}}, RAILS) == []
