"""No secret in status, Events, logs or specs (issue 25 item 6), on the real control plane.

A recognizable fake secret is planted in every Secret a run may use, the way a user gives them:
the hub token (model.hubTokenSecretRef), the judge's API key (evaluation.judge.apiKeySecretRef),
the tracking server's credentials (training.trackingSecretRef, envFrom) and a Secret of the
user's own in a stage's podTemplate (envFrom and an env secretKeyRef). A URL of the spec that
carries it is refused by the API server (CEL) and stored nowhere. Two runs go:

  complete  every stage a kwok pod with its canned summary: every stage Job is created with its
            references (the evaluate Job the judge's key, the train Job the tracking Secret)
  real      curate runs for real on a pod-executor node, its environment filled from those
            Secrets by the executor as a kubelet would; it fails (no synthesize output), so its
            error goes into the status, its Events and the operator's log
  exported  spec.export with its S3 credentials (export.credentialsSecretRef, envFrom): the
            export Job is created, its config a mounted ConfigMap as a stage's is

Then the secret is looked for in everything a reader of the namespace or of the operator could
see: the runs (spec and status), every Event of the namespace, every Job, pod and ConfigMap (the
stage and export configs), the stage pods' logs (`kubectl logs`) and the operator's log. It must
be nowhere.
"""

from __future__ import annotations

import json

import pytest

from tests.cluster.pod_executor import TOLERATION
from tests.operator.conftest import run_manifest, wait_phase

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

PLANTED = "hf_PLANTEDsecret7c1d4e9a2b"  # also a token shape the redaction knows


def secret(name: str, namespace: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "stringData": data}


def with_references(manifest: dict) -> dict:
    spec = manifest["spec"]
    spec["model"]["hubTokenSecretRef"] = {"name": "hub", "key": "token"}
    spec["evaluation"] = {"enabled": True, "suites": ["heldout"], "judge": {
        "url": "http://judge.example:8000/v1", "model": "judge", "apiKeySecretRef": {"name": "judge", "key": "api-key"}}}
    spec["training"] = {**spec.get("training", {}), "reportTo": ["mlflow"],
                        "trackingUri": "http://mlflow.example:5000", "trackingSecretRef": {"name": "mlflow"}}
    for stage in ("synthesize", "curate", "train", "evaluate"):
        own = spec["stages"].setdefault(stage, {})
        own["podTemplate"] = {"envFrom": [{"secretRef": {"name": "mine"}}],
                              "env": [{"name": "MY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "mine", "key": "MY_TOKEN"}}}]}
    return manifest


def everything_readable(cluster, namespace: str, operator) -> dict[str, str]:
    """Where a reader could find a secret, by place."""
    places = {
        "runs": cluster.kubectl("get", "selfalignmentruns", "-n", namespace, "-o", "json").stdout,
        "events": cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "jobs": cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout,
        "pods": cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout,
        "configmaps": cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "json").stdout,
        "operator log": operator.log(),
    }
    for pod in cluster.get_json("pods", "-n", namespace)["items"]:
        res = cluster.kubectl("logs", "-n", namespace, pod["metadata"]["name"], check=False)
        if res.returncode == 0:
            places[f"log of pod {pod['metadata']['name']}"] = res.stdout
    return places


def test_a_planted_secret_is_nowhere_a_reader_can_look(cluster, namespace, storage, executor_node, operator_process):
    label, _volume = executor_node
    for name, data in (("hub", {"token": PLANTED}), ("judge", {"api-key": PLANTED}),
                       ("mlflow", {"MLFLOW_TRACKING_TOKEN": PLANTED}), ("mine", {"MY_TOKEN": PLANTED}),
                       ("s3", {"AWS_SECRET_ACCESS_KEY": PLANTED})):
        cluster.apply(secret(name, namespace, data))

    # a credential in a URL of the spec: refused before anything stores it (the API server's
    # answer quotes the value back, to the one who sent it; nothing keeps it)
    leaky = with_references(run_manifest("leaky", namespace, iterations=1))
    leaky["spec"]["evaluation"]["judge"]["url"] = f"https://judge:{PLANTED}@judge.example/v1"
    res = cluster.kubectl("apply", "-f", "-", input=json.dumps(leaky), check=False)
    assert res.returncode != 0 and "must not carry credentials" in res.stderr, res.stdout + res.stderr
    assert cluster.kubectl("get", "selfalignmentrun", "leaky", "-n", namespace, check=False).returncode != 0

    cluster.apply(with_references(run_manifest("complete", namespace, iterations=1)))
    real = with_references(run_manifest("real", namespace, iterations=1, retries=0))
    real["spec"]["stages"]["curate"].update(nodeSelector=label, tolerations=[TOLERATION])
    cluster.apply(real)
    # the export's summary as kwok gives it (no evaluation: the best iteration is the last, 1)
    exported_summary = {"stage": "export", "ok": True, "iteration": 1, "to": "s3://models/planted", "files": 3}
    cluster.apply(run_manifest("exported", namespace, iterations=1,
                               export={"to": "s3://models/planted", "credentialsSecretRef": {"name": "s3"}},
                               extra_annotations={"export": {"sheepdog.test/termination-message": json.dumps(
                                   exported_summary)}}))
    assert wait_phase(cluster, namespace, "complete", ("Succeeded", "Failed"), timeout=300)["phase"] == "Succeeded"
    failed = wait_phase(cluster, namespace, "real", ("Succeeded", "Failed"), timeout=300)
    exported = wait_phase(cluster, namespace, "exported", ("Succeeded", "Failed"), timeout=300)
    assert exported["phase"] == "Succeeded", exported
    assert failed["phase"] == "Failed" and "synthesize output" in failed["message"], failed

    # the references are there (the test would prove nothing if no Job carried them)
    jobs = {j["metadata"]["name"]: j for j in cluster.get_json("jobs", "-n", namespace)["items"]}
    def refs(job: str) -> tuple[list, list]:
        (c,) = jobs[job]["spec"]["template"]["spec"]["containers"]
        return ([e["valueFrom"]["secretKeyRef"] for e in c.get("env") or () if "secretKeyRef" in e.get("valueFrom", {})],
                [e["secretRef"]["name"] for e in c.get("envFrom") or () if "secretRef" in e])

    keys, froms = refs("complete-i1-evaluate")
    assert {"name": "judge", "key": "api-key"} in keys and {"name": "hub", "key": "token"} in keys and froms == ["mine"]
    keys, froms = refs("complete-i1-train")
    assert {"name": "hub", "key": "token"} in keys and froms == ["mlflow", "mine"]
    _keys, froms = refs("exported-i1-export")
    assert froms == ["s3"]
    # its config is the mounted file, not the command line (a stage's, kube/stage_config_map.py)
    (c,) = jobs["exported-i1-export"]["spec"]["template"]["spec"]["containers"]
    assert c["command"][c["command"].index("--config") + 1] == "/etc/sheepdog/stage/config.json", c["command"]
    assert not any(a.lstrip().startswith("{") for a in c["command"]), c["command"]
    configs = [m for m in cluster.get_json("configmaps", "-n", namespace)["items"]
               if m["metadata"]["name"].startswith("exported-i1-export-config-")]
    assert len(configs) == 1 and '"to":"s3://models/planted"' in configs[0]["data"]["config.json"], configs
    places = everything_readable(cluster, namespace, operator_process)
    curate_logs = [p for p in places if p.startswith("log of pod real-i1-curate")]
    assert curate_logs and "synthesize output" in places[curate_logs[0]], sorted(places)  # a real stage's log

    found = [place for place, text in places.items() if PLANTED in text]
    assert not found, f"the planted secret is readable in: {found}"
