"""The pre-flight (kube/preflight.py) over the fake API: every stage Job of the run dry-run once
per generation, built once (the Job created is the one dry-run), a refusal of any stage holds
the run as InvalidSpec with the API server's message before any Job exists, a transient answer
holds nothing and is asked again. On the real API server: test_preflight_cluster.py."""

from __future__ import annotations

from sheepdog.kube import jobs as kjobs
from sheepdog.kube.preflight import due, prepare
from tests.operator.test_observe import FakeKube, api_error, make_run_obj, reconciler

REFUSAL = ('Job.batch "r-i1-train" is invalid: spec.template.spec.containers[0].resources.requests[memory]: '
           'Invalid value: "-1Gi": must be greater than or equal to 0')


def names(objs):
    return [o["metadata"]["name"] for o in objs]


def test_every_stage_job_is_dry_run_once_per_generation_and_the_first_is_created_as_built(monkeypatch):
    built = []
    real = kjobs.build_stage_objects
    monkeypatch.setattr(kjobs, "build_stage_objects", lambda *a, **k: built.append(a[4].stage) or real(*a, **k))
    kube = FakeKube(make_run_obj())
    rec = reconciler(kube)
    r = rec.reconcile("ns", "r")
    assert names(kube.dry_runs) == ["r-i1-synthesize", "r-i1-curate", "r-i1-train"]  # evaluation is off
    assert r.created == ["r-i1-synthesize"]
    # built once: the Job created is the Job the API server dry-ran, not a second build
    assert built == ["synthesize", "curate", "train"]
    created = {k: v for k, v in kube.jobs["r-i1-synthesize"].items() if k != "status"}
    assert created == kube.dry_runs[0]
    assert kube.run["status"]["preflightGeneration"] == 1
    # the next reconciles of the same generation ask nothing
    kube.finish("r-i1-synthesize")
    rec.reconcile("ns", "r")
    assert len(kube.dry_runs) == 3 and built == ["synthesize", "curate", "train", "curate"]
    # an edit is a new generation: asked again
    kube.run["metadata"]["generation"] = 2
    rec.reconcile("ns", "r")
    assert len(kube.dry_runs) == 6 and kube.run["status"]["preflightGeneration"] == 2


def test_a_later_stage_the_api_server_refuses_holds_the_run_before_any_job():
    kube = FakeKube(make_run_obj())
    kube.dry_run_error["train"] = api_error(422, REFUSAL)
    rec = reconciler(kube)
    r = rec.reconcile("ns", "r")
    assert r.created == [] and kube.jobs == {}  # no GPU used: not even synthesize started
    st = kube.run["status"]
    assert (st["phase"], st["reason"]) == ("Pending", "InvalidSpec"), st
    assert "stages.train: the API server refuses Job r-i1-train (422)" in st["message"]
    assert 'Invalid value: "-1Gi"' in st["message"] and "preflightGeneration" not in st
    assert ("event", "InvalidSpec") in kube.writes
    # held: every reconcile asks again (a policy may change without an edit)
    rec.reconcile("ns", "r")
    assert kube.jobs == {} and len(kube.dry_runs) == 6
    # fixed: the run starts
    del kube.dry_run_error["train"]
    kube.run["metadata"]["generation"] = 2
    r = rec.reconcile("ns", "r")
    assert r.created == ["r-i1-synthesize"] and kube.run["status"]["reason"] != "InvalidSpec"
    assert kube.run["status"]["preflightGeneration"] == 2


def test_a_transient_answer_holds_nothing_and_is_asked_again():
    kube = FakeKube(make_run_obj())
    kube.dry_run_error["curate"] = api_error(503, "the server is currently unable to handle the request")
    rec = reconciler(kube)
    r = rec.reconcile("ns", "r")
    assert r.created == ["r-i1-synthesize"] and "preflightGeneration" not in kube.run["status"]
    del kube.dry_run_error["curate"]
    rec.reconcile("ns", "r")
    assert len(kube.dry_runs) == 6 and kube.run["status"]["preflightGeneration"] == 1


def test_a_quota_on_jobs_is_not_a_refusal_of_the_spec():
    kube = FakeKube(make_run_obj())
    kube.dry_run_error["train"] = api_error(403, 'jobs.batch "r-i1-train" is forbidden: exceeded quota: jobs, '
                                                 "requested: count/jobs.batch=1, used: count/jobs.batch=5")
    r = reconciler(kube).reconcile("ns", "r")
    assert r.created == ["r-i1-synthesize"] and kube.run["status"]["reason"] != "InvalidSpec"


def test_prepare_builds_the_stages_the_run_will_run_and_due_follows_the_generation():
    from sheepdog.api.spec import RunSpec

    run = {"metadata": {"name": "r", "namespace": "ns", "uid": "u"}}
    spec = RunSpec.model_validate({"model": {"base": "m"}, "evaluation": {"enabled": True},
                                   "stages": {"train": {"nodes": 2}}})
    out = prepare(run, spec, None)
    assert out.passed and out.problems == []
    assert sorted(out.built) == ["r-i1-curate", "r-i1-evaluate", "r-i1-synthesize", "r-i1-train"]
    assert [o["kind"] for o in out.built["r-i1-train"]] == ["Service", "ConfigMap", "Job"]  # multi-node: as created
    assert due({}, 1) and not due({"preflightGeneration": 1}, 1) and due({"preflightGeneration": 1}, 2)
    assert due({"preflightGeneration": 1, "reason": "InvalidSpec"}, 1)
