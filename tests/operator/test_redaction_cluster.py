"""No planted credential in what everyone who may `get` a run reads: a stage fails (kwok) with
last words that quote a URL with user-info and a Hugging Face token; the run's status (message,
stage records, pendingEvents), its Events and the operator's log hold neither, and say
REDACTED where they were."""

from __future__ import annotations

import json

import pytest

from tests.operator.conftest import events_of, get_run, run_manifest, wait_phase

pytestmark = pytest.mark.cluster

PASSWORD = "pl4nted-Passw0rd"
TOKEN = "hf_" + "PlantedSecretValue0123456789xyz"


def test_a_failing_stages_secrets_reach_neither_status_nor_events_nor_log(
        cluster, namespace, storage, operator_process):
    last_words = json.dumps({"ok": False, "error": f"HTTPError 401 from https://trainer:{PASSWORD}@hub.example/api "
                                                   f"with HF_TOKEN {TOKEN}"})
    run = run_manifest("leaky", namespace, iterations=1, retries=0, extra_annotations={
        "train": {"sheepdog.test/fail": "true", "sheepdog.test/termination-message": last_words}})
    cluster.apply(run)
    status = wait_phase(cluster, namespace, "leaky", ("Failed",))
    # the planted value really was the pod's termination message (what the operator read)
    pods = cluster.get_json("pods", "-n", namespace, "-l", "sheepdog.dev/run=leaky,sheepdog.dev/stage=train")["items"]
    terms = [cs["state"]["terminated"].get("message", "") for p in pods
             for cs in p["status"].get("containerStatuses", []) if "terminated" in cs.get("state", {})]
    assert any(TOKEN in t and PASSWORD in t for t in terms), terms

    status = get_run(cluster, namespace, "leaky")["status"]
    text = json.dumps(status)
    assert "REDACTED" in status["message"] and "hub.example" in status["message"], status["message"]
    train = [rec["stages"]["train"] for rec in status["iterations"] if "train" in (rec.get("stages") or {})]
    assert train and "https://REDACTED@hub.example/api" in train[0]["message"], train
    events = events_of(cluster, namespace, "leaky")
    failed = [e for e in events if e["reason"] in ("StageFailed", "RunFailed")]
    assert failed and any("REDACTED" in e["message"] for e in failed), [e["message"] for e in events]
    log = operator_process.log()
    for where, body in (("status", text), ("Events", json.dumps(events)), ("operator log", log)):
        assert PASSWORD not in body and TOKEN not in body, f"planted secret in the {where}"
