"""kube/sweeps.py's reconcile against an in-memory API (no cluster): it creates exactly the
children the plan asks for, a 409 (the child exists) is no duplicate and no Event, the status
is written only when it changed, and the sweep's gauges follow the status."""

from __future__ import annotations

import copy

from prometheus_client import CollectorRegistry

from sheepdog.kube.client import Conflict, Kube, NotFound
from sheepdog.kube.sweep_metrics import SweepMetrics
from sheepdog.kube.sweeps import SweepReconciler

SWEEP = {
    "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentSweep",
    "metadata": {"name": "thr", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "1"},
    "spec": {"template": {"model": {"base": "models/tiny"}, "iterations": 1},
             "axes": [{"field": "filter.threshold", "name": "c", "values": [-1, 5]}]},
}


class FakeApi:
    def __init__(self, sweep):
        self.sweep = copy.deepcopy(sweep)
        self.runs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[dict] = []
        self.raced: set[str] = set()  # names another process creates between our LIST and POST

    _list_pages = Kube._list_pages  # the real client's paging over this request()

    def request(self, method, path, body=None, query=None, content_type=None):
        self.calls.append((method, path))
        if method == "GET" and path.endswith("/selfalignmentsweeps/thr"):
            return copy.deepcopy(self.sweep)
        if method == "GET" and path.endswith("/selfalignmentruns"):
            return {"items": [copy.deepcopy(r) for r in self.runs.values()]}
        if method == "POST" and path.endswith("/selfalignmentruns"):
            name = body["metadata"]["name"]
            if name in self.raced:
                self.runs[name] = copy.deepcopy(body)
            if name in self.runs:
                raise Conflict("exists")
            self.runs[name] = copy.deepcopy(body)
            return body
        if method == "PATCH" and path.endswith("/status"):
            self.sweep["status"] = {**(self.sweep.get("status") or {}), **body["status"]}
            self.sweep["status"] = {k: v for k, v in self.sweep["status"].items() if v is not None}
            return self.sweep
        if method == "POST" and path.endswith("/events"):
            self.events.append(body)
            return body
        raise NotFound(path)


def test_reconcile_creates_children_once_and_writes_status_when_changed():
    api = FakeApi(SWEEP)
    metrics = SweepMetrics(CollectorRegistry())
    r = SweepReconciler(api, metrics)
    result = r.reconcile("ns", "thr")
    assert sorted(result.created) == ["thr-c-5", "thr-c-m1"] and result.status_written
    assert sorted(api.runs) == ["thr-c-5", "thr-c-m1"]
    assert all(run["metadata"]["namespace"] == "ns" for run in api.runs.values())
    assert [e["reason"] for e in api.events] == ["RunCreated", "RunCreated"]
    assert api.sweep["status"]["phase"] == "Running"
    # again, nothing new: no create, no status write, no Event
    api.calls.clear()
    again = r.reconcile("ns", "thr")
    assert again.created == [] and not again.status_written and not again.events
    assert not [c for c in api.calls if c[0] in ("POST", "PATCH")]
    assert metrics.runs.labels("ns", "thr", "Pending")._value.get() == 2


def test_a_child_created_by_someone_else_meanwhile_is_not_duplicated_nor_announced():
    api = FakeApi(SWEEP)
    api.raced = {"thr-c-5"}
    result = SweepReconciler(api, SweepMetrics(CollectorRegistry())).reconcile("ns", "thr")
    assert result.created == ["thr-c-m1"]
    assert [e["message"] for e in api.events] == ["created run thr-c-m1 for cell c-m1"]


def test_a_deleted_sweep_does_nothing():
    api = FakeApi(SWEEP)
    api.sweep["metadata"]["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    result = SweepReconciler(api, SweepMetrics(CollectorRegistry())).reconcile("ns", "thr")
    assert result.phase == "Deleted" and api.runs == {}
