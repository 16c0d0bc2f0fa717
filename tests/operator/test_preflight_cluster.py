"""The pre-flight on the real control plane (issue 24.3): a run whose later stages the API
server would refuse (train: a podTemplate volume with no source; evaluate: a negative memory
request) is held as InvalidSpec at its first reconcile with the API server's own messages, before
any Job exists (no GPU used); fixed by an edit, it runs."""

from __future__ import annotations

import json

import pytest

from tests.operator.conftest import events_of, get_run, run_manifest, stage_jobs, wait_phase

pytestmark = pytest.mark.cluster


def test_a_later_stage_the_api_server_refuses_holds_the_run_before_any_job(cluster, namespace, storage,
                                                                           operator_process):
    name = "preflight"
    manifest = run_manifest(name, namespace, iterations=1, evaluation={"enabled": True, "suites": ["ifeval-smoke"]})
    stages = manifest["spec"]["stages"]
    # a configMap volume without the ConfigMap's name: the schema lets it through (volumes are
    # free-form), the API server's Job validation does not
    stages["train"]["podTemplate"] = {"volumes": [{"name": "cfg", "configMap": {}}],
                                      "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}]}
    stages["evaluate"]["resources"] = {"requests": {"memory": "-1Gi"}}
    cluster.apply(manifest)

    def held():
        st = get_run(cluster, namespace, name).get("status") or {}
        return st if st.get("reason") == "InvalidSpec" else None

    st = cluster.wait_for("the run held by the pre-flight", held, timeout=60, interval=0.5)
    message = st["message"]
    assert f"stages.train: the API server refuses Job {name}-i1-train (422)" in message, message
    assert "configMap.name: Required value" in message, message  # the API server's own words
    assert f"stages.evaluate: the API server refuses Job {name}-i1-evaluate (422)" in message, message
    assert "memory" in message and "must be greater than or equal to 0" in message, message
    assert st["phase"] == "Pending" and "preflightGeneration" not in st, st
    assert stage_jobs(cluster, namespace, name) == []  # nothing ran: not even M_0's evaluation
    warnings = [e for e in events_of(cluster, namespace, name) if e["reason"] == "InvalidSpec"]
    assert warnings and warnings[0]["type"] == "Warning"

    # fixed by an edit: the pre-flight passes for that generation and the run goes to its end
    fixed = {"spec": {"stages": {"train": {"podTemplate": {"volumes": [{"name": "cfg", "emptyDir": {}}]}},
                                 "evaluate": {"resources": {"requests": {"memory": "128Mi"}}}}}}
    cluster.kubectl("patch", "sar", name, "-n", namespace, "--type=merge", "-p", json.dumps(fixed))
    done = wait_phase(cluster, namespace, name, ("Succeeded", "Failed"), timeout=180)
    assert done["phase"] == "Succeeded", done
    generation = get_run(cluster, namespace, name)["metadata"]["generation"]
    assert done["preflightGeneration"] == generation == 2
    train = next(j for j in stage_jobs(cluster, namespace, name) if j["metadata"]["name"] == f"{name}-i1-train")
    assert {"name": "cfg", "emptyDir": {}} in train["spec"]["template"]["spec"]["volumes"]
