"""The Helm chart without a cluster: lint, CRD copy, rendering with several value sets, the
security and RBAC properties of what renders, and values the schema must reject.

The same value sets are applied to the real control plane in test_chart_cluster.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.chart.helm import CHART, ROOT, find, helm, one, render, template

# name -> values: every set renders, passes the checks here, and is applied with
# `kubectl apply --dry-run=server` in test_chart_cluster.py.
VALUE_SETS: dict[str, dict] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "monitoring": {
        "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "alertLabels": {"team": "ml-platform"},
            # train: its own threshold; curate: null removes the chart's default -> threshold.
            "alerts": {"stageStuck": {"threshold": "3h", "stages": {"train": "2d", "curate": None}}},
        },
    },
    "dashboards": {"dashboards": {"enabled": True, "additionalLabels": {"team": "ml"}}},
    "custom-images": {
        "image": {"repository": "registry.example.com/ml/sheepdog-operator", "tag": "1.2.3", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "worker": {
            "image": {"repository": "registry.example.com/ml/sheepdog-worker",
                      "digest": "sha256:" + "a" * 64},
            "gpuNodeSelector": {"cloud.example.com/accelerator": "h100"},
            "queueName": "gpu-queue",
        },
        "storage": {"create": True, "storageClassName": "cephfs", "size": "2Ti"},
    },
    "guardrails": {"guardrails": {
        "allowedImagePrefixes": ["registry.example.com/ml/"],
        "allowedServiceAccounts": ["trainer"],
        "allowedVolumeTypes": ["secret", "configMap", "emptyDir", "csi"],
        "allowedSecretNames": ["hf-token"],
        "namespaces": {"team-rdma": {"allowedImagePrefixes": ["rdma.example.com/"], "allowHostPath": True}},
    }},
}

# What the operator may do: (apiGroup, resource) -> verbs. Anything else in a rendered rule
# fails test_rbac_rules_are_exactly_these. Keep docs/install.md's table in step.
NAMESPACED_RULES = {
    # patch: only the finalizer of spec.storage.deleteDataOnDelete (kube/data_cleanup.py)
    ("sheepdog.dev", "selfalignmentruns"): {"get", "list", "watch", "create", "patch", "delete"},
    ("sheepdog.dev", "selfalignmentruns/status"): {"patch"},
    ("sheepdog.dev", "selfalignmentsweeps"): {"get", "list", "watch"},
    ("sheepdog.dev", "selfalignmentsweeps/status"): {"patch"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "pods"): {"list", "watch"},
    ("", "pods/log"): {"get"},
    ("", "services"): {"create"},
    ("", "configmaps"): {"create"},  # each stage execution's config file (stage_config_map.py)
    ("networking.k8s.io", "networkpolicies"): {"create"},  # each run's (networkPolicy.enabled)
    ("", "events"): {"create", "list", "watch"},
    ("kueue.x-k8s.io", "workloads"): {"list", "patch"},
}
# Leader election's Lease, in the release's namespace only (a Role of its own).
LEADER_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "update"}}
CLUSTER_READ_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
}


def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule, rule
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                out.setdefault((group, res), set()).update(rule["verbs"])
    return out


# The ClusterRoles of secure metrics (templates/metrics-rbac.yaml), tested on their own.
METRICS_ROLES = ("-metrics-auth", "-metrics-reader")


def operator_cluster_roles(docs: list[dict]) -> list[dict]:
    """The ClusterRoles of the operator's API work: those without the user-role aggregation
    labels, other than the metrics roles."""
    return [r for r in find(docs, "ClusterRole")
            if not any(k.startswith(AGGREGATE) for k in r["metadata"].get("labels") or {})
            and not r["metadata"]["name"].endswith(METRICS_ROLES)]


def operator_cluster_role_bindings(docs: list[dict]) -> list[dict]:
    return [b for b in find(docs, "ClusterRoleBinding") if not b["roleRef"]["name"].endswith(METRICS_ROLES)]


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
RUN_READ = {"get", "list", "watch"}
# The users' roles (templates/user-roles.yaml): name suffix -> (rules, aggregation labels).
USER_ROLES = {
    "edit": ({("sheepdog.dev", "selfalignmentruns"): RUN_READ | {"create", "update", "patch", "delete",
                                                                  "deletecollection"},
              ("sheepdog.dev", "selfalignmentruns/status"): RUN_READ,
              ("sheepdog.dev", "selfalignmentsweeps"): RUN_READ | {"create", "update", "patch", "delete",
                                                                    "deletecollection"},
              ("sheepdog.dev", "selfalignmentsweeps/status"): RUN_READ},
             {AGGREGATE + "edit", AGGREGATE + "admin"}),
    "view": ({("sheepdog.dev", "selfalignmentruns"): RUN_READ,
              ("sheepdog.dev", "selfalignmentruns/status"): RUN_READ,
              ("sheepdog.dev", "selfalignmentsweeps"): RUN_READ,
              ("sheepdog.dev", "selfalignmentsweeps/status"): RUN_READ},
             {AGGREGATE + "view"}),
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}


# ---- lint and files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_strict(name, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VALUE_SETS[name]))
    res = helm("lint", "--strict", str(CHART), "--values", str(values), "--namespace", "sheepdog-system")
    assert "1 chart(s) linted, 0 chart(s) failed" in res.stdout, res.stdout


def test_chart_crds_are_a_copy_of_crds_dir():
    """charts/sheepdog/crds/ must hold exactly the generated crds/ files, byte for byte
    (refresh with: cp crds/*.yaml charts/sheepdog/crds/)."""
    src = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    dst = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert src, "crds/ is empty"
    assert sorted(dst) == sorted(src), "charts/sheepdog/crds/ and crds/ hold different files"
    stale = [name for name in src if src[name] != dst[name]]
    assert not stale, f"charts/sheepdog/crds/ differs from crds/ in {stale}: cp crds/*.yaml charts/sheepdog/crds/"


def test_chart_version_and_app_version_agree_with_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    import sheepdog

    assert chart["appVersion"] == sheepdog.__version__
    assert chart["apiVersion"] == "v2"


def test_values_yaml_is_valid_against_its_own_schema():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert [e.message for e in validator.iter_errors(values)] == []
    for name, v in VALUE_SETS.items():
        merged = _merge(values, v)
        assert [e.message for e in validator.iter_errors(merged)] == [], name


def _merge(a: dict, b: dict) -> dict:
    """Helm's coalescing: b over a, maps merged, null removes a key."""
    out = dict(a)
    for k, v in b.items():
        if v is None:
            out.pop(k, None)
            continue
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---- the operator Deployment ---------------------------------------------------------------


def test_deployment_is_two_replicas_with_leader_election_probe_and_resources(rendered):
    dep = one(rendered["defaults"], "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 2 and spec["strategy"] == {"type": "RollingUpdate"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert "--leader-election" in c["args"] and f"--leader-election-id={dep['metadata']['name']}" in c["args"]
    pdb = one(rendered["defaults"], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= \
        spec["template"]["metadata"]["labels"].items()
    # without leader election: one replica at most, never two at once (Recreate), no PDB
    alone = render({"operator": {"leaderElection": False, "replicas": 1}})
    assert one(alone, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not find(alone, "PodDisruptionBudget")
    (c1,) = one(alone, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert not [a for a in c1["args"] if a.startswith("--leader-election")]
    probe = c["livenessProbe"]
    assert probe["httpGet"] == {"path": "/healthz", "port": "liveness"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "liveness": 8081}
    assert "--metrics-port=8080" in c["args"] and "--liveness-port=8081" in c["args"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == one(rendered["defaults"], "ServiceAccount")["metadata"]["name"]
    assert not any(a.startswith("--namespace") for a in c["args"]), "cluster-wide mode passes no --namespace"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pod_security_context_is_restricted(rendered, name):
    pod = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == psc["runAsUser"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        # readOnlyRootFilesystem: /tmp is the one writable place
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_namespaced_mode_passes_each_namespace(rendered):
    (c,) = one(rendered["namespaced"], "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [a for a in c["args"] if a.startswith("--namespace")] == ["--namespace=team-a", "--namespace=team-b"]


def test_images_default_to_app_version_and_take_overrides(rendered):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (c,) = one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"ghcr.io/sheepdog-dev/sheepdog-operator:{chart['appVersion']}"
    assert f"--worker-image=ghcr.io/sheepdog-dev/sheepdog-worker:{chart['appVersion']}" in c["args"]
    dep = one(rendered["custom-images"], "Deployment")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.example.com/ml/sheepdog-operator:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    assert f"--worker-image=registry.example.com/ml/sheepdog-worker@sha256:{'a' * 64}" in c["args"]
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]


def test_optional_pvc(rendered):
    assert not find(rendered["defaults"], "PersistentVolumeClaim")
    pvc = one(rendered["custom-images"], "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "sheepdog-data"
    assert pvc["spec"]["storageClassName"] == "cephfs"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Ti"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


# ---- RBAC ------------------------------------------------------------------------------------


def test_cluster_wide_rbac(rendered):
    docs = rendered["defaults"]
    (leader,) = find(docs, "Role")
    assert leader["metadata"]["namespace"] == "sheepdog-system" and rules_of(leader) == LEADER_RULES
    (leader_binding,) = find(docs, "RoleBinding")
    assert leader_binding["roleRef"]["name"] == leader["metadata"]["name"]
    assert not find(render({"operator": {"leaderElection": False, "replicas": 1}}), "Role")
    (role,) = operator_cluster_roles(docs)
    assert rules_of(role) == {**NAMESPACED_RULES, **CLUSTER_READ_RULES}
    (binding,) = operator_cluster_role_bindings(docs)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "sheepdog-system"}
    ]


def test_namespaced_rbac(rendered):
    docs = rendered["namespaced"]
    roles = [r for r in find(docs, "Role") if not r["metadata"]["name"].endswith("-leader")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for r in roles:
        assert rules_of(r) == NAMESPACED_RULES
    bindings = [b for b in find(docs, "RoleBinding") if not b["metadata"]["name"].endswith("-leader")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for b in bindings:
        assert b["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": roles[0]["metadata"]["name"]}
    # Cluster-scoped: only the CRD read Kopf's discovery needs, never the namespaced rules.
    (cr,) = operator_cluster_roles(docs)
    assert rules_of(cr) == CLUSTER_READ_RULES
    (crb,) = operator_cluster_role_bindings(docs)
    assert crb["roleRef"]["name"] == cr["metadata"]["name"]


@pytest.mark.parametrize("name", ["defaults", "namespaced"])
def test_user_roles_aggregate_into_edit_and_view(rendered, name):
    """<fullname>-edit and -view: only SelfAlignmentRuns, view read-only, labelled so the
    API server folds them into the built-in roles; no binding (the cluster's own bindings to
    edit/view/admin carry them)."""
    docs = rendered[name]
    users = {r["metadata"]["name"]: r for r in find(docs, "ClusterRole")}
    for suffix, (rules, labels) in USER_ROLES.items():
        role = users.pop(f"sd-sheepdog-{suffix}")
        assert rules_of(role) == rules, suffix
        assert {k for k, v in role["metadata"]["labels"].items() if k.startswith(AGGREGATE) and v == "true"} == labels
    assert all(not k.startswith(AGGREGATE) for r in users.values() for k in r["metadata"]["labels"]), \
        "the operator's own roles must not aggregate into users' roles"
    bound = {b["roleRef"]["name"] for b in find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding")}
    assert not bound & {"sd-sheepdog-edit", "sd-sheepdog-view"}
    off = render({"rbac": {"create": True, "userRoles": False}})
    assert [r["metadata"]["name"] for r in operator_cluster_roles(off)] == ["sd-sheepdog"]
    assert not [r for r in find(off, "ClusterRole") if any(k.startswith(AGGREGATE) for k in r["metadata"]["labels"])]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rbac_never_grants_secrets_or_wildcards(rendered, name):
    for role in find(rendered[name], "ClusterRole") + find(rendered[name], "Role"):
        for rule in role["rules"]:
            # a rule names resources (with their groups) or non-resource URLs (metrics-reader)
            assert ("resources" in rule) != ("nonResourceURLs" in rule), rule
            assert "secrets" not in rule.get("resources", []), f"{role['metadata']['name']} grants secrets"
            assert "*" not in (rule.get("resources", []) + rule["verbs"] + rule.get("apiGroups", [])
                               + rule.get("nonResourceURLs", [])), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_rbac_can_be_left_to_the_user():
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "my-operator"}})
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount")]
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "my-operator"


# ---- metrics, monitoring, dashboards -------------------------------------------------------


def test_metrics_service_selects_the_operator_pod(rendered):
    docs = rendered["defaults"]
    svc = one(docs, "Service")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_monitoring_is_off_by_default(rendered):
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert not find(rendered["defaults"], kind)
    assert not [d for d in rendered["defaults"] if d["kind"] == "ConfigMap"]


def test_service_monitor(rendered):
    docs = rendered["monitoring"]
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["sheepdog-system"]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics"
    assert ep["honorLabels"] is True, "the runs' namespace label must survive the scrape"


def test_prometheus_rule(rendered):
    rule = one(rendered["monitoring"], "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = {a["alert"] for a in alerts}
    assert names == {"SheepdogRunFailed", "SheepdogStageStuck", "SheepdogRunStuck", "SheepdogRepeatedJobFailures",
                     "SheepdogOperatorDown", "SheepdogReconcileErrors"}
    for a in alerts:
        assert a["labels"]["team"] == "ml-platform" and a["labels"]["severity"]
        assert a["annotations"]["summary"] and a["annotations"]["description"]
    stuck = {a["expr"].split('stage="')[1].split('"')[0]: a for a in alerts if a["alert"] == "SheepdogStageStuck"}
    assert set(stuck) == {"synthesize", "curate", "train", "evaluate"}
    assert ") > 172800\n" in stuck["train"]["expr"]  # stages.train: 2d
    assert ") > 10800\n" in stuck["curate"]["expr"]  # no stage default left: threshold 3h
    assert ") > 21600\n" in stuck["evaluate"]["expr"]  # the chart's default for evaluate: 6h
    # a stuck run: the default threshold for every reason but NotAdmitted, which has its own
    run_stuck = {a["labels"].get("reason", ""): a["expr"] for a in alerts if a["alert"] == "SheepdogRunStuck"}
    assert set(run_stuck) == {"", "NotAdmitted"}
    assert ") > 900\n" in run_stuck[""] and 'reason!~"NotAdmitted"' in run_stuck[""]
    assert ") > 21600\n" in run_stuck["NotAdmitted"]
    assert all('unless on (namespace, run) (sheepdog_run_phase{phase="Suspended"} == 1)' in e for e in run_stuck.values())
    down = next(a for a in alerts if a["alert"] == "SheepdogOperatorDown")
    svc = one(rendered["monitoring"], "Service")
    assert f'job="{svc["metadata"]["name"]}"' in down["expr"], "OperatorDown must select the ServiceMonitor's job"


def test_dashboard_configmaps(rendered):
    docs = rendered["dashboards"]
    cms = [d for d in docs if d["kind"] == "ConfigMap"]
    files = sorted(p.name for p in (CHART / "dashboards").glob("*.json"))
    assert files and len(cms) == len(files)
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["labels"]["team"] == "ml"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "sheepdog"
        (key,) = cm["data"]
        assert key in files
        assert json.loads(cm["data"][key]) == json.loads((CHART / "dashboards" / key).read_text())


# ---- guardrails -----------------------------------------------------------------------------


def _guardrail_env(docs: list[dict]) -> str:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(e["value"] for e in c["env"] if e["name"] == "SHEEPDOG_GUARDRAILS")


def test_guardrails_reach_the_operator_and_the_admission_policy(rendered):
    """The operator reads the chart's guardrails (SHEEPDOG_GUARDRAILS) as the values say, and
    the policies carry the same lists; a namespace's entry gets a policy of its own, bound to
    it alone, and the global one is bound everywhere else."""
    from sheepdog.kube.operator import guardrails

    docs = rendered["guardrails"]
    g = guardrails({"SHEEPDOG_GUARDRAILS": _guardrail_env(docs)})
    assert g.allowed_image_prefixes == ("registry.example.com/ml/",) and g.allowed_secret_names == ("hf-token",)
    rdma = g.for_namespace("team-rdma")
    assert rdma.allowed_image_prefixes == ("rdma.example.com/",) and rdma.allow_host_path is True
    assert rdma.allowed_service_accounts == ("trainer",)
    policies = {p["metadata"]["name"]: p for p in find(docs, "ValidatingAdmissionPolicy")}
    bindings = {b["metadata"]["name"]: b for b in find(docs, "ValidatingAdmissionPolicyBinding")}
    assert set(policies) == set(bindings) == {"sd-sheepdog-guardrails", "sd-sheepdog-guardrails-team-rdma"}
    for name, b in bindings.items():
        assert b["spec"]["policyName"] == name and b["spec"]["validationActions"] == ["Deny"]
    assert bindings["sd-sheepdog-guardrails"]["spec"]["matchResources"]["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["team-rdma"]}]}
    assert bindings["sd-sheepdog-guardrails-team-rdma"]["spec"]["matchResources"]["namespaceSelector"] == {
        "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-rdma"]}]}
    for p in policies.values():
        assert p["apiVersion"] == "admissionregistration.k8s.io/v1" and p["spec"]["failurePolicy"] == "Fail"
        (rule,) = p["spec"]["matchConstraints"]["resourceRules"]
        assert rule["resources"] == ["selfalignmentruns"] and rule["operations"] == ["CREATE", "UPDATE"]
    text = {n: "\n".join(v["expression"] + " " + v.get("message", v.get("messageExpression", ""))
                          for v in p["spec"]["validations"]) for n, p in policies.items()}
    assert "registry.example.com/ml/" in text["sd-sheepdog-guardrails"]
    assert "rdma.example.com/" in text["sd-sheepdog-guardrails-team-rdma"]
    assert "registry.example.com/ml/" not in text["sd-sheepdog-guardrails-team-rdma"]
    assert "hostPath volumes are not allowed" in text["sd-sheepdog-guardrails"]
    assert "hostPath volumes are not allowed" not in text["sd-sheepdog-guardrails-team-rdma"]
    assert 'in ["trainer"]' in text["sd-sheepdog-guardrails-team-rdma"], "unnamed keys are the global ones"


def test_default_guardrails_refuse_only_host_path(rendered):
    from sheepdog.guardrails import Guardrails
    from sheepdog.kube.operator import guardrails

    docs = rendered["defaults"]
    assert guardrails({"SHEEPDOG_GUARDRAILS": _guardrail_env(docs)}) == Guardrails()
    (policy,) = find(docs, "ValidatingAdmissionPolicy")
    messages = [v["message"] for v in policy["spec"]["validations"]]
    assert messages == [f"stages.{s}.podTemplate.volumes: hostPath volumes are not allowed (guardrails.allowHostPath: false)"
                        for s in ("synthesize", "curate", "train", "evaluate")]
    assert "matchResources" not in one(docs, "ValidatingAdmissionPolicyBinding")["spec"]
    off = render({"guardrails": {"admissionPolicy": False}})
    assert not find(off, "ValidatingAdmissionPolicy") and not find(off, "ValidatingAdmissionPolicyBinding")
    # nothing to refuse: no policy (one without validations is not valid)
    assert not find(render({"guardrails": {"allowHostPath": True}}), "ValidatingAdmissionPolicy")


# ---- the schema rejects wrong values --------------------------------------------------------

BAD_VALUES = [
    (["operator.leaderElection=false", "operator.replicas=2"], "/operator/replicas"),
    (["operator.replicas=one"], "/operator/replicas"),
    (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["watchNamespaces[0]=team-*"], "/watchNamespaces/0"),
    (["watchNamespaces[0]=Team_A"], "/watchNamespaces/0"),
    (["watchNamespaces=team-a"], "/watchNamespaces"),
    (["operator.metricsPort=70000"], "/operator/metricsPort"),
    (["storage.accessModes[0]=ReadWriteAll"], "/storage/accessModes/0"),
    (["storage.size=lots"], "/storage/size"),
    (["serviceMonitor.enabled=yes please"], "/serviceMonitor/enabled"),
    (["serviceMonitor.interval=30 seconds"], "/serviceMonitor/interval"),
    (["prometheusRule.alerts.runFailed.severity=urgent"], "/prometheusRule/alerts/runFailed/severity"),
    (["prometheusRule.alerts.stageStuck.threshold=1h30m"], "/prometheusRule/alerts/stageStuck/threshold"),
    (["prometheusRule.alerts.stageStuck.stages.training=3h"], "training"),
    (["prometheusRule.alerts.jobFailures.count=0"], "/prometheusRule/alerts/jobFailures/count"),
    (["worker.image.digest=latest"], "/worker/image/digest"),
    (["worker.image.repository="], "/worker/image/repository"),
    (["image=null"], "image"),
    (["replicas=1"], "replicas"),  # a typo of operator.replicas: unknown keys are refused
    (["worker.gpuTolerations[0].operator=Maybe"], "/worker/gpuTolerations/0/operator"),
    (["dashboards.enabled=1"], "/dashboards/enabled"),
    (["guardrails.allowHostPath=maybe"], "/guardrails/allowHostPath"),
    (["guardrails.allowPrivileged=true"], "allowPrivileged"),  # not a guardrail: refused, not ignored
    (["guardrails.allowedImagePrefixes[0]="], "/guardrails/allowedImagePrefixes/0"),
    (["guardrails.namespaces.Team_A.allowHostPath=true"], "Team_A"),
    (["guardrails.namespaces.team-a.allowedImages[0]=x/"], "allowedImages"),
]


@pytest.mark.parametrize("sets,where", BAD_VALUES, ids=[s[0][0] for s in BAD_VALUES])
def test_schema_rejects_wrong_values(sets, where):
    res = template(sets=sets, check=False)
    assert res.returncode != 0, f"--set {sets} rendered:\n{res.stdout[:500]}"
    assert "don't meet the specifications of the schema" in res.stderr, res.stderr
    assert where in res.stderr, res.stderr


def test_service_monitor_needs_the_metrics_service():
    res = template(sets=["serviceMonitor.enabled=true", "metrics.service.enabled=false"], check=False)
    assert res.returncode != 0 and "needs metrics.service.enabled" in res.stderr


def test_worker_defaults_reach_the_stage_jobs(rendered):
    """SHEEPDOG_WORKER_DEFAULTS (the chart's worker: values) is the mapping the Job builder's
    ImageDefaults reads, and a GPU stage Job built with it carries them."""
    from sheepdog.api.spec import SelfAlignmentRun
    from sheepdog.kube.jobs import ImageDefaults
    from sheepdog.kube.render import render_run

    (c,) = one(rendered["custom-images"], "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    defaults = ImageDefaults.coerce(json.loads(env["SHEEPDOG_WORKER_DEFAULTS"]))
    assert defaults.image == f"registry.example.com/ml/sheepdog-worker@sha256:{'a' * 64}"
    # Helm merges maps: the chart's default label stays unless set to null
    assert defaults.gpu_node_selector == {"nvidia.com/gpu.present": "true", "cloud.example.com/accelerator": "h100"}
    assert defaults.gpu_tolerations == ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    assert defaults.queue_name == "gpu-queue"
    run = SelfAlignmentRun.model_validate({"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun",
                                           "metadata": {"name": "r"}, "spec": {"model": {"base": "m"}}})
    jobs = {o["metadata"]["labels"]["sheepdog.dev/stage"]: o for o in render_run(run, "ns", image_defaults=defaults)
            if o["kind"] == "Job"}
    pod = jobs["train"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == defaults.gpu_node_selector
    assert pod["containers"][0]["image"] == defaults.image
    assert jobs["train"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "nodeSelector" not in jobs["curate"]["spec"]["template"]["spec"], "curate needs no GPU"
    default_env = {e["name"]: e.get("value") for e in
                   one(rendered["defaults"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "queueName" not in json.loads(default_env["SHEEPDOG_WORKER_DEFAULTS"])
    # the chart's GPU defaults: a Guaranteed train pod of the default 8 GPUs, a sized /dev/shm
    res = pod["containers"][0]["resources"]
    assert res["requests"] == res["limits"] == {"cpu": "64", "memory": "768Gi", "nvidia.com/gpu": "8"}
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "64Gi"}
    chart = ImageDefaults.coerce(json.loads(default_env["SHEEPDOG_WORKER_DEFAULTS"]))
    assert chart.gpu_resource == "nvidia.com/gpu" and chart.resources_per_gpu["synthesize"] == {"cpu": "8", "memory": "64Gi"}
