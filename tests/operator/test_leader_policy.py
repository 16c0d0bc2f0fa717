"""kube/leader_policy.py: who may take the Lease (client-go's rules, on the candidate's clock)."""

from sheepdog.kube.leader_policy import Seen, claimed, may_take, observe, released

HELD = {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-12-07T10:00:00.000000Z",
        "acquireTime": "2026-12-07T09:00:00.000000Z", "leaseTransitions": 3}


def test_a_free_or_own_lease_may_be_taken_at_once():
    assert may_take(None, None, "b", 0.0)
    assert may_take({**HELD, "holderIdentity": ""}, None, "b", 0.0)
    assert may_take(HELD, None, "a", 0.0)


def test_another_holders_lease_only_once_it_went_unrenewed_for_its_duration_on_our_clock():
    seen = observe(None, HELD, now=100.0)
    assert seen == Seen("a", HELD["renewTime"], 100.0)
    assert not may_take(HELD, seen, "b", 114.0)
    assert may_take(HELD, seen, "b", 115.5)
    # a renewal seen meanwhile starts the count again, whatever time it says
    renewed = {**HELD, "renewTime": "2020-01-01T00:00:00.000000Z"}
    seen2 = observe(seen, renewed, now=110.0)
    assert seen2.at == 110.0 and not may_take(renewed, seen2, "b", 120.0)
    assert observe(seen2, renewed, now=130.0) is seen2  # the same record keeps its first sighting
    assert not may_take(HELD, None, "b", 10_000.0)  # never seen: the count has not started


def test_claiming_counts_transitions_and_keeps_acquire_time_on_renewal():
    taken = claimed(HELD, "b", "2026-12-07T10:00:20.000000Z", 15)
    assert taken["holderIdentity"] == "b" and taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == taken["renewTime"] == "2026-12-07T10:00:20.000000Z"
    renewed = claimed(taken, "b", "2026-12-07T10:00:25.000000Z", 15)
    assert renewed["acquireTime"] == "2026-12-07T10:00:20.000000Z" and renewed["leaseTransitions"] == 4
    assert claimed(None, "a", "t", 15)["leaseTransitions"] == 0


def test_only_the_holder_releases():
    assert released(HELD, "b", "t") is None
    free = released(HELD, "a", "t")
    assert free["holderIdentity"] == "" and free["leaseDurationSeconds"] == 1
    assert may_take(free, None, "b", 0.0)
