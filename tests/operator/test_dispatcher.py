"""kube/handlers.py: what a replica does with its triggers (a standby drops them, the liveness
probe fails only for a stalled leader) and which listed finished runs a start reconciles."""


def test_a_standby_dispatcher_drops_triggers_and_its_probe_only_fails_for_a_stalled_leader():
    import asyncio
    import concurrent.futures
    import time
    from types import SimpleNamespace

    from sheepdog.kube.handlers import Dispatcher
    from sheepdog.kube.metrics import Metrics
    from sheepdog.kube.reconcile import Result

    reconciled = []
    rec = SimpleNamespace(metrics=Metrics(), reconcile=lambda ns, name: reconciled.append(name) or Result())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        d = Dispatcher(rec, pool)
        leading = [False]
        d.leading = lambda: leading[0]
        asyncio.run(d.trigger("ns", "r"))
        assert reconciled == []
        assert d.stalled(10) is None  # a standby is never stalled
        leading[0] = True
        asyncio.run(d.trigger("ns", "r"))
        assert reconciled == ["r"]
    d.leading_since = time.monotonic() - 31
    assert "no resync completed for 31s" in (d.stalled(10) or "")
    d.last_resync = time.monotonic() - 5
    assert d.stalled(10) is None


def test_a_listed_finished_run_is_reconciled_only_when_it_may_owe_events_or_has_a_ttl():
    from datetime import datetime, timedelta, timezone

    from sheepdog.kube.handlers import may_owe_events, settled

    def stamp(ago: float) -> str:
        return (datetime.now(timezone.utc) - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")

    run = {"metadata": {"generation": 1}, "spec": {},
           "status": {"phase": "Succeeded", "observedGeneration": 1,
                      "pendingEvents": [{"name": "e", "type": "Normal", "reason": "RunSucceeded", "at": stamp(7200)}]}}
    assert settled(run) and not may_owe_events(run, 3600)
    run["status"]["pendingEvents"][0]["at"] = stamp(60)  # a crash right after the last write
    assert may_owe_events(run, 3600)
    assert not settled({**run, "spec": {"ttlSecondsAfterFinished": 60}})
