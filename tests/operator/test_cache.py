"""The watch cache (sheepdog.kube.cache): events in, what a reconcile reads out."""

from sheepdog.kube.cache import WatchCache, newer_or_same, pods_behind, slim


def obj(name, rv=None, ns="ns", uid=None, labels=None, **rest):
    meta = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}", "labels": labels or {}}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    return {"metadata": meta, **rest}


def job(name, run="r", rv=None, **rest):
    return obj(name, rv, labels={"sheepdog.dev/run": run}, **rest)


def pod(name, job_name, phase="Running", rv=None, ns="ns"):
    return obj(name, rv, ns=ns, labels={"sheepdog.dev/run": "r", "batch.kubernetes.io/job-name": job_name},
               spec={"containers": [{"name": "stage"}]}, status={"phase": phase})


def names(objs):
    return [o["metadata"]["name"] for o in objs]


def test_jobs_are_read_by_run_and_pods_by_job():
    c = WatchCache()
    for j in (job("r-i1-a"), job("r-i1-b"), job("s-i1-a", run="s"), job("r-i1-a", ns="other")):
        c.put_job(j)
    assert names(c.jobs("ns", "r")) == ["r-i1-a", "r-i1-b"]
    assert names(c.jobs("ns", "s")) == ["s-i1-a"] and c.jobs("ns", "nobody") == []
    c.put_pod(pod("a-1", "r-i1-a"))
    c.put_pod(pod("a-2", "r-i1-a"))
    c.put_pod(pod("b-1", "r-i1-b"))
    c.put_pod(pod("x-1", "r-i1-a", ns="other"))
    assert names(c.pods("ns", ["r-i1-a"])) == ["a-1", "a-2"]
    assert names(c.pods("ns", ["r-i1-b", "r-i1-a"])) == ["a-1", "a-2", "b-1"]
    assert c.sizes() == {"runs": 0, "jobs": 4, "pods": 4, "events": 0}
    assert c.run_of_job("ns", "s-i1-a") == "s" and c.run_of_job("ns", "nope") is None


def test_an_update_replaces_and_a_deletion_drops():
    c = WatchCache()
    c.put_job(job("r-i1-a", rv=5, status={}))
    c.put_job(job("r-i1-a", rv=6, status={"active": 1}))
    assert c.jobs("ns", "r")[0]["status"] == {"active": 1}
    c.drop_job("ns", "r-i1-a", "uid-r-i1-a")
    assert c.jobs("ns", "r") == []
    c.put_pod(pod("a-1", "r-i1-a"))
    c.drop_pod("ns", "a-1")
    assert c.pods("ns", ["r-i1-a"]) == []


def test_a_label_change_moves_the_job_between_runs():
    c = WatchCache()
    c.put_job(job("j", run="r", rv=1))
    c.put_job(job("j", run="s", rv=2))
    assert c.jobs("ns", "r") == [] and names(c.jobs("ns", "s")) == ["j"]


def test_newer_wins_so_a_late_watch_event_does_not_undo_our_own_write():
    c = WatchCache()
    c.put_run(obj("r", rv=10, status={"phase": "Running"}))  # our status write's answer
    assert not c.put_run(obj("r", rv=9, status={}))  # the watch event of an older version
    assert c.run("ns", "r")["status"] == {"phase": "Running"}
    assert c.put_run(obj("r", rv=10, status={"phase": "Running"}))  # our write's own event
    assert c.put_run(obj("r", rv=11, status={"phase": "Succeeded"}))
    assert c.run("ns", "r")["status"] == {"phase": "Succeeded"}
    # without integer versions (or without any) the latest put wins
    assert newer_or_same(obj("r", rv="abc"), obj("r", rv=3)) and newer_or_same(obj("r"), obj("r", rv=3))


def test_a_deleted_object_is_not_revived_by_a_late_answer_and_a_new_one_of_that_name_is_kept():
    c = WatchCache()
    created = job("r-i1-a", rv=3, uid="u1")
    c.drop_job("ns", "r-i1-a", "u1")  # its ADDED and DELETED came before our POST's answer
    assert not c.put_job(created) and c.jobs("ns", "r") == []
    c.put_job(job("r-i1-a", rv=7, uid="u2"))  # created again
    c.drop_job("ns", "r-i1-a", "u1")  # a late DELETED of the first one: not this one
    assert [j["metadata"]["uid"] for j in c.jobs("ns", "r")] == ["u2"]


def test_invalidate_forgets_the_run_without_a_tombstone():
    c = WatchCache()
    c.put_run(obj("r", rv=4))
    c.invalidate_run("ns", "r")
    assert c.run("ns", "r") is None
    assert c.put_run(obj("r", rv=5))  # a GET's answer may come back in


def test_relist_drops_what_the_listing_lacks_unless_it_is_newer_than_the_listing():
    c = WatchCache()
    c.put_job(job("gone", rv=5))  # deleted while the watch was away
    c.put_job(job("kept", rv=6))
    c.put_job(job("fresh", rv=12))  # created after the LIST's snapshot
    c.put_job(job("elsewhere", rv=5, ns="other"))  # another namespace than the one listed
    dropped = c.relist("jobs", "ns", [job("kept", rv=8, status={"active": 1}), job("new", rv=9)], "10")
    assert dropped == 1
    assert names(c.jobs("ns", "r")) == ["fresh", "kept", "new"]
    assert c.jobs("ns", "r")[1]["status"] == {"active": 1}
    assert names(c.jobs("other", "r")) == ["elsewhere"]
    # a listing older than what the cache has changes nothing it has
    assert c.relist("jobs", "ns", [job("kept", rv=7)], "7") == 0 and c.jobs("ns", "r")[1]["status"] == {"active": 1}
    # all namespaces, and no resourceVersion: nothing is dropped
    assert c.relist("jobs", None, [], None) == 0 and c.sizes()["jobs"] == 4
    assert c.relist("jobs", None, [], "20") == 4 and c.sizes()["jobs"] == 0
    c.put_run(obj("r", rv=3))
    assert c.relist("runs", "ns", [], "4") == 1 and c.run("ns", "r") is None


def test_stored_objects_are_private_copies_without_managed_fields_and_pods_without_spec():
    body = job("j", rv=1, spec={"template": {}}, status={"active": 1})
    body["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    c = WatchCache()
    c.put_job(body)
    body["status"]["active"] = 0  # the caller's dict changes later: not the cache's
    cached = c.jobs("ns", "r")[0]
    assert cached["status"] == {"active": 1} and "managedFields" not in cached["metadata"] and "spec" in cached
    c.put_pod(pod("p", "j"))
    assert "spec" not in c.pods("ns", ["j"])[0]
    assert slim({"metadata": {"name": "x"}, "a": ({"b": 1},)}) == {"metadata": {"name": "x"}, "a": [{"b": 1}]}


def test_a_cached_pod_keeps_of_its_spec_only_the_node_it_ran_on():
    # a finished stage's record names that node (kube/provenance.py reads the cached pods)
    bound = pod("p", "j")
    bound["spec"]["nodeName"] = "real-node-0"
    c = WatchCache()
    c.put_pod(bound)
    assert c.pods("ns", ["j"])[0]["spec"] == {"nodeName": "real-node-0"}


def test_objects_without_a_namespace_or_name_are_ignored():
    c = WatchCache()
    assert not c.put_job({"metadata": {"name": "j"}}) and not c.put_pod({"metadata": {"namespace": "ns"}})
    assert c.sizes() == {"runs": 0, "jobs": 0, "pods": 0, "events": 0}


def test_failed_create_events_are_read_by_job_and_go_when_deleted():
    c = WatchCache()
    ev = {"metadata": {"name": "r-i1-a.1", "namespace": "ns", "uid": "e1"}, "reason": "FailedCreate",
          "involvedObject": {"kind": "Job", "name": "r-i1-a"}, "message": "exceeded quota"}
    c.put_event(ev)
    assert [e["message"] for e in c.job_events("ns", "r-i1-a")] == ["exceeded quota"]
    assert c.job_events("ns", "r-i1-b") == [] and c.job_events("other", "r-i1-a") == []
    c.drop_event("ns", "r-i1-a.1", "e1")
    assert c.job_events("ns", "r-i1-a") == []


def test_pods_behind_when_the_job_controller_counted_more_than_the_cache_shows():
    complete = {"status": {"succeeded": 2, "conditions": [{"type": "Complete", "status": "True"}]}}
    failed = {"status": {"failed": 3, "conditions": [{"type": "Failed", "status": "True"}]}}
    running = {"status": {"active": 1}}
    ok, bad = {"status": {"phase": "Succeeded"}}, {"status": {"phase": "Failed"}}
    assert pods_behind(complete, [ok]) and not pods_behind(complete, [ok, ok, bad])
    assert pods_behind({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, [])  # at least one
    assert pods_behind(failed, [bad, bad]) and not pods_behind(failed, [bad, bad, bad])
    assert not pods_behind(running, [])


def test_a_cached_job_keeps_no_pod_template_but_its_containers_resources():
    from sheepdog.kube.cache import WatchCache

    big = "x" * 100_000  # the stage config in the command
    job = {"metadata": {"name": "r-i1-a", "namespace": "ns", "uid": "u", "resourceVersion": "3",
                        "labels": {"sheepdog.dev/run": "r"}, "managedFields": [{"f": 1}]},
           "spec": {"suspend": False, "parallelism": 2, "backoffLimit": 2, "template": {
               "metadata": {"annotations": {"a": big}},
               "spec": {"containers": [{"name": "stage", "command": ["python", big], "env": [{"name": "E", "value": big}],
                                        "resources": {"limits": {"nvidia.com/gpu": "8"}}}],
                        "volumes": [{"name": "data"}]}}},
           "status": {"active": 1}}
    c = WatchCache()
    c.put_job(job)
    [cached] = c.jobs("ns", "r")
    assert cached["spec"] == {"suspend": False, "parallelism": 2, "backoffLimit": 2, "template": {
        "spec": {"containers": [{"name": "stage", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}}
    assert cached["status"] == {"active": 1} and "managedFields" not in cached["metadata"]
    assert len(repr(cached)) < 1000
    from sheepdog.kube.gpu_cost import pod_gpus

    assert pod_gpus(cached) == 8
