"""The CRD on a real API server (tests/cluster): it is accepted and Established, it rejects every
manifest of tests/api/invalid/ with the expected message, it accepts (and defaults exactly as
pydantic does) every manifest of tests/api/valid/ and examples/, it keeps what the operator
writes to status, and the Jobs the builders make pass validation and PodSecurity "restricted".
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
import yaml

from sheepdog.api.crd import CRD_FILE, CRD_NAME
from sheepdog.api.spec import STAGES, RunSpec, SelfAlignmentRun
from tests.api.test_invalid_corpus import CASES, EXAMPLES, VALID, Case

pytestmark = pytest.mark.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crd(cluster) -> dict[str, Any]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=sheepdog-tests",
                    "-f", str(ROOT / CRD_FILE))
    cluster.wait_established(CRD_NAME)
    obj = cluster.get_json("crd", CRD_NAME)
    conds = {c["type"]: c for c in obj["status"].get("conditions", [])}
    assert conds["NamesAccepted"]["status"] == "True", conds
    assert "NonStructuralSchema" not in conds, conds["NonStructuralSchema"]
    # kubectl discovers the new kind; wait until a dry-run create of a valid run goes through
    minimal = (ROOT / "tests/api/valid/minimal.yaml").read_text()
    cluster.wait_for(
        "the SelfAlignmentRun kind to be served",
        lambda: cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", input=minimal,
                                check=False).returncode == 0,
        timeout=60,
    )
    return obj


def dry_run(cluster, namespace: str, text: str):
    return cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
                           input=text, check=False)


def test_crd_is_established_with_its_names(cluster, crd) -> None:
    assert crd["status"]["acceptedNames"]["shortNames"] == ["sar"]
    assert "sheepdog" in crd["status"]["acceptedNames"]["categories"]


@pytest.mark.parametrize("case", CASES, ids=[c.path.stem for c in CASES])
def test_invalid_manifest_is_rejected_by_the_api_server(cluster, crd, module_namespace, case: Case) -> None:
    res = dry_run(cluster, module_namespace, case.path.read_text())
    if case.server_accepts:
        assert res.returncode == 0, (
            f"{case.path.name} is marked '# server: accepts' but the API server refused it: drop "
            f"the marker (and make its # expect fit the server):\n{res.stderr}")
        return
    assert res.returncode != 0, f"{case.path.name} was accepted by the API server:\n{res.stdout[:2000]}"
    for fragment in case.server_fragments:
        assert fragment in res.stderr, f"{case.path.name}: {fragment!r} not in:\n{res.stderr}"


@pytest.mark.parametrize("path", VALID + EXAMPLES, ids=[p.stem for p in VALID + EXAMPLES])
def test_valid_manifest_is_accepted_and_defaulted_like_pydantic(cluster, crd, module_namespace, path) -> None:
    res = dry_run(cluster, module_namespace, path.read_text())
    assert res.returncode == 0, f"{path.name}:\n{res.stderr}"
    stored = json.loads(res.stdout)
    expected = SelfAlignmentRun.model_validate(yaml.safe_load(path.read_text())).spec.to_wire()
    assert stored["spec"] == expected
    # and what the operator reads back loads as the same spec
    assert RunSpec.model_validate(stored["spec"]).to_wire() == expected


def test_status_keeps_what_the_operator_writes(cluster, crd, namespace) -> None:
    run = (ROOT / "tests/api/valid/minimal.yaml").read_text()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=run)
    status = {
        "phase": "Running", "reason": "StageRunning", "message": "iteration 1: train running",
        "iteration": 1, "stage": "train", "lastKept": 5231, "observedGeneration": 1,
        "conditions": [{"type": "Progressing", "status": "True", "reason": "StageRunning",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "iterations": [{
            "iteration": 1, "kept": 5231, "keepRate": 0.556, "evaluation": {"ifeval-smoke.promptStrict": 0.357},
            "aFieldOfANewerOperator": {"nested": [1, 2]},
            "stages": {"curate": {"phase": "Succeeded", "attempts": 1,
                                  "summary": {"kept": 5231, "dropped": {"rouge": 12}, "future": {"x": True}}}},
        }],
        "kopf": {"progress": {"handler": {"retries": 0}}},
    }
    cluster.kubectl("patch", "selfalignmentrun", "minimal", "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", json.dumps({"status": status}))
    got = cluster.get_json("sar", "minimal", "-n", namespace)["status"]
    assert got == status
    table = cluster.kubectl("get", "sar", "-n", namespace).stdout  # the short name
    header, row = table.splitlines()[:2]
    # REASON is a default column (a stuck stage shows there); MESSAGE only with -o wide
    assert header.split() == ["NAME", "PHASE", "ITERATION", "STAGE", "KEPT", "REASON", "AGE"]
    assert row.split()[:6] == ["minimal", "Running", "1", "train", "5231", "StageRunning"]
    by_category = cluster.kubectl("get", "sheepdog", "-n", namespace, "-o", "name").stdout
    assert "minimal" in by_category


def test_status_rejects_an_unknown_phase(cluster, crd, namespace) -> None:
    run = (ROOT / "tests/api/valid/minimal.yaml").read_text()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=run)
    res = cluster.kubectl("patch", "sar", "minimal", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"phase": "Exploded"}}), check=False)
    assert res.returncode != 0 and "status.phase" in res.stderr


IMMUTABLE_EDITS = [
    ({"storage": {"claimName": "other"}}, "spec.storage.claimName"),
    ({"storage": {"subPath": "runs/elsewhere"}}, "spec.storage.subPath"),
    ({"model": {"base": "models/other"}}, "spec.model.base"),
    ({"seed": {"path": "seeds/mine.jsonl"}}, "spec.seed.path"),  # unset -> set is a change too
    ({"training": {"strategy": "one_last"}}, "spec.training.strategy"),
]


def test_fields_of_a_started_run_are_immutable_and_other_edits_pass(cluster, crd, namespace) -> None:
    run = (ROOT / "tests/api/valid/minimal.yaml").read_text()
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=run)

    def patch(spec: dict[str, Any]):
        return cluster.kubectl("patch", "sar", "minimal", "-n", namespace, "--type=merge",
                               "-p", json.dumps({"spec": spec}), check=False)

    # not started yet: a wrong base is fixed by an edit
    assert patch({"model": {"base": "models/Qwen1.5-72B-fixed"}}).returncode == 0
    started = {"status": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z"}}
    cluster.kubectl("patch", "sar", "minimal", "-n", namespace, "--subresource=status", "--type=merge",
                    "-p", json.dumps(started))
    for spec, field in IMMUTABLE_EDITS:
        res = patch(spec)
        assert res.returncode != 0, f"{field} changed on a started run"
        assert f"{field} cannot change once the run has started" in res.stderr, res.stderr
    # edits that do not corrupt the run still go through, and so does the operator's status write
    assert patch({"iterations": 5, "synthesis": {"dataSize": 20}, "suspend": True}).returncode == 0
    res = cluster.kubectl("patch", "sar", "minimal", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"iteration": 2}}), check=False)
    assert res.returncode == 0, res.stderr
    spec = cluster.get_json("sar", "minimal", "-n", namespace)["spec"]
    assert spec["model"]["base"] == "models/Qwen1.5-72B-fixed" and spec["iterations"] == 5
    assert "path" not in spec["seed"] and spec["storage"]["claimName"] == "sheepdog-data"


# --- the Jobs the builders make, on the real API server -------------------------------------------


def _built_objects() -> list[tuple[str, dict[str, Any]]]:
    from sheepdog.kube.render import render_run

    variants = {
        "default": {},
        "everything": {
            "model": {"base": "org/m", "hubTokenSecretRef": {"name": "hf", "key": "token"}},
            "evaluation": {"enabled": True},
            "scheduling": {"queueName": "q"},
            "stages": {"synthesize": {"shards": 3},
                       "train": {"nodes": 2, "activeDeadlineSeconds": 60, "nodeSelector": {"a": "b"},
                                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                                 "resources": {"requests": {"cpu": 2, "memory": "1Gi"}}}},
        },
        "podTemplate": {"stages": {"train": {"podTemplate": {
            "env": [{"name": "NCCL_DEBUG", "value": "INFO"}], "envFrom": [{"configMapRef": {"name": "nccl"}}],
            "annotations": {"k8s.v1.cni.cncf.io/networks": "rdma"}, "labels": {"team": "a"},
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}},
            "volumes": [{"name": "keys", "secret": {"secretName": "keys"}}],
            "volumeMounts": [{"name": "keys", "mountPath": "/etc/keys", "readOnly": True}]}}}},
    }
    out = []
    for label, extra in variants.items():
        spec = {"model": {"base": "models/b"}, **extra}
        run = SelfAlignmentRun.model_validate({"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
                                               "metadata": {"name": "built"}, "spec": spec})
        for obj in render_run(run, "PLACEHOLDER"):
            out.append((f"{label}-{obj['kind']}-{obj['metadata']['name']}", obj))
    return out


BUILT = _built_objects()


@pytest.fixture(scope="module")
def restricted_namespace(cluster, module_namespace) -> str:
    """The module's namespace (server-side dry runs only), enforcing Pod Security "restricted"
    (which judges pods only: the runs dry-run there are unaffected)."""
    cluster.kubectl("label", "namespace", module_namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")
    return module_namespace


def test_podsecurity_admission_is_on(cluster, restricted_namespace) -> None:
    """So that the check below cannot pass because nothing enforces it."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    res = cluster.kubectl("create", "--dry-run=server", "-n", restricted_namespace, "-f", "-",
                          input=json.dumps(pod), check=False)
    assert res.returncode != 0 and "restricted" in res.stderr, res.stderr


@pytest.mark.parametrize("label,obj", BUILT, ids=[b[0] for b in BUILT])
def test_built_objects_pass_api_validation_and_restricted(cluster, restricted_namespace, label, obj) -> None:
    obj = json.loads(json.dumps(obj).replace('"PLACEHOLDER"', json.dumps(restricted_namespace)))
    res = cluster.kubectl("create", "--dry-run=server", "-n", restricted_namespace, "-o", "json", "-f", "-",
                          input=json.dumps(obj), check=False)
    assert res.returncode == 0, res.stderr
    assert "would violate PodSecurity" not in res.stderr, res.stderr
    if obj["kind"] != "Job":
        return
    # PodSecurity enforces on pods, not on Jobs: admit the pod the Job controller would create
    template = obj["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": obj["metadata"]["name"] + "-0", "labels": template["metadata"]["labels"]},
           "spec": template["spec"]}
    res = cluster.kubectl("create", "--dry-run=server", "-n", restricted_namespace, "-f", "-",
                          input=json.dumps(pod), check=False)
    assert res.returncode == 0, res.stderr


def test_every_stage_is_built() -> None:
    stages = {o["metadata"]["labels"]["sheepdog.dev/stage"] for _, o in BUILT if o["kind"] == "Job"}
    assert stages == set(STAGES)
