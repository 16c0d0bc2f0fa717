"""Credentials reach a stage only by reference (issue 25 item 6): the tracking server's through
training.trackingSecretRef (envFrom, the train stage only), and never inside a URL of the spec
(the models refuse user-info; the CRD's CEL rule does too: tests/api/invalid/*-credentials.yaml,
applied to a real API server by tests/operator/test_crd_apply.py)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sheepdog.api.spec import RunSpec
from sheepdog.kube import jobs, stage_config_map
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.stage_config import kube_layout

UID = "5f1c0ffe-0000-4000-8000-00000000abcd"


def job(spec: RunSpec, stage: str) -> dict:
    return jobs.build_stage_job("r", "ns", UID, spec, stage_config("r", spec, 1, stage, kube_layout("r", spec)))


def test_tracking_credentials_reach_only_the_train_stage_by_reference():
    spec = RunSpec.model_validate({"model": {"base": "m"}, "training": {
        "reportTo": ["mlflow"], "trackingUri": "https://mlflow.example:5000", "trackingSecretRef": {"name": "mlflow-creds"}}})
    (train,) = job(spec, "train")["spec"]["template"]["spec"]["containers"]
    assert train["envFrom"] == [{"secretRef": {"name": "mlflow-creds"}}]
    for stage in ("synthesize", "curate", "evaluate"):
        (c,) = job(spec, stage)["spec"]["template"]["spec"]["containers"]
        assert "envFrom" not in c, stage


@pytest.mark.parametrize("field, value", [
    ("training.trackingUri", "https://user:pa55word@mlflow.example:5000"),
    ("training.trackingUri", "postgresql://mlflow:pa55word@db/mlflow"),
    ("evaluation.judge.url", "http://token@judge:8000/v1"),
])
def test_a_url_with_credentials_is_refused_with_the_fields_name(field, value):
    section, key = field.split(".", 1)
    doc = {"model": {"base": "m"}}
    if section == "training":
        doc["training"] = {key: value}
    else:
        doc["evaluation"] = {"enabled": True, "suites": ["heldout"], "judge": {"url": value, "model": "j"}}
    with pytest.raises(ValidationError) as err:
        RunSpec.model_validate(doc)
    ((loc, msg),) = [(".".join(map(str, e["loc"])), e["msg"]) for e in err.value.errors()]
    assert loc == field and "must not carry credentials" in msg


@pytest.mark.parametrize("url", ["http://judge:8000/v1", "https://h.example/v1?q=a@b", "file:///data/mlruns",
                                 "databricks", "http://[::1]:5000/path@x"])
def test_urls_without_user_info_pass(url):
    spec = RunSpec.model_validate({"model": {"base": "m"}, "training": {"trackingUri": url}})
    assert spec.training.tracking_uri == url
    # and the stage's config file holds the URL as given, with no secret around it
    objs = jobs.build_stage_objects("r", "ns", UID, spec, stage_config("r", spec, 1, "train", kube_layout("r", spec)))
    config = json.loads(stage_config_map.config_text(objs))
    assert config["spec"]["training"]["trackingUri"] == url
