"""What the operator asks the API server for, read from the real API server's audit log: in a
shared cluster it must never list or watch other workloads' pods, Jobs or Events, and its LISTs
come in pages (issue 24: the first pod LIST used to be every pod of the cluster in one response).

The operator runs as a ServiceAccount (the audit log records only those); Kopf's watches carry the
user agent kopf/<version>, the operator's own requests (the resync) sheepdog-operator/<version>.
"""

from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from sheepdog.kube.client import FAILED_CREATE_EVENTS, LIST_PAGE_SIZE, USER_AGENT

pytestmark = pytest.mark.cluster

AGENTS = ("kopf/", f"{USER_AGENT}/")

# What each watched kind must be filtered by, as the request's query says it.
REQUIRED = {
    "pods": ("labelSelector", "sheepdog.dev/run"),
    "jobs": ("labelSelector", "sheepdog.dev/run"),
    "events": ("fieldSelector", FAILED_CREATE_EVENTS),
}
# The one other Events read: those of one stage pod that stays ContainerCreating (pod_events.py).
POD_EVENTS = "involvedObject.kind=Pod,involvedObject.name="


def operator_reads(audit_log, user: str) -> list[dict]:
    """The operator's list and watch requests, one per request (a watch logs several stages
    under one auditID)."""
    seen, out = set(), []
    for line in audit_log.read_text(errors="replace").splitlines():
        if user not in line:
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line the API server is writing now
        if ev.get("auditID") in seen or ev.get("verb") not in ("list", "watch"):
            continue
        if (ev.get("user") or {}).get("username") != user:
            continue
        assert str(ev.get("userAgent", "")).startswith(AGENTS), ev.get("userAgent")
        ref = ev.get("objectRef") or {}
        seen.add(ev.get("auditID"))
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(ev["requestURI"]).query))
        out.append({"verb": ev["verb"], "resource": ref.get("resource"), "agent": ev["userAgent"],
                    "query": query, "uri": ev["requestURI"]})
    return out


def test_every_list_and_watch_is_filtered_server_side_and_paged(cluster, audited_operator):
    op = audited_operator()

    def complete() -> list[dict] | None:
        reads = operator_reads(cluster.control_plane.audit_log, op.user)
        kinds = {(r["resource"], r["verb"], r["agent"].startswith("kopf/")) for r in reads}
        wanted = {(kind, verb, True) for kind in REQUIRED for verb in ("list", "watch")}
        # the resync: runs and Jobs, and the pods and Events whose deletion a watch may miss
        wanted |= {(kind, "list", False) for kind in ("selfalignmentruns", "jobs", "pods", "events")}
        return reads if wanted <= kinds else None

    reads = cluster.wait_for("the operator's LISTs, watches and first resync in the audit log",
                             complete, timeout=60, interval=2)
    for r in reads:
        if r["resource"] == "events" and r["query"].get("fieldSelector", "").startswith(POD_EVENTS):
            continue  # one of our pods' Events, by name
        if r["resource"] in REQUIRED:
            key, value = REQUIRED[r["resource"]]
            assert r["query"].get(key) == value, f"{r['verb']} {r['resource']} not filtered by {key}: {r['uri']}"
        if r["verb"] == "list":
            assert r["query"].get("limit") == str(LIST_PAGE_SIZE), f"unpaged LIST: {r['uri']}"
