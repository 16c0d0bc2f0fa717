"""planner/retention_policy.py: which finished stage Jobs a run no longer needs."""

from sheepdog.api.status import IterationRecord, RunStatus, StageRecord
from sheepdog.planner.retention_policy import expired_jobs


def status(*iterations: dict[str, str]) -> RunStatus:
    """Iteration i+1 gets the stages of the i-th dict (stage -> phase), Jobs named as the
    operator names them."""
    return RunStatus(iterations=[
        IterationRecord(iteration=i, stages={s: StageRecord(phase=p, job=f"r-i{i}-{s}") for s, p in stages.items()})
        for i, stages in enumerate(iterations, start=1)
    ])


def jobs_of(st: RunStatus) -> list[tuple[int, str, str]]:
    return [(r.iteration, s, rec.job) for r in st.iterations for s, rec in r.stages.items()]


DONE = {"synthesize": "Succeeded", "curate": "Succeeded", "train": "Succeeded"}


def test_the_jobs_of_iterations_older_than_the_last_two_go():
    st = status(DONE, DONE, {"synthesize": "Succeeded", "curate": "Running"})
    assert expired_jobs(st, jobs_of(st)) == ["r-i1-curate", "r-i1-synthesize", "r-i1-train"]
    assert expired_jobs(st, jobs_of(st), keep_iterations=1) == [
        "r-i1-curate", "r-i1-synthesize", "r-i1-train", "r-i2-curate", "r-i2-synthesize", "r-i2-train"]
    assert expired_jobs(st, jobs_of(st), keep_iterations=None) == []


def test_a_job_whose_outcome_the_status_does_not_hold_stays():
    st = status({"synthesize": "Succeeded", "curate": "Running"}, DONE, DONE)
    # a Job of iteration 1 that the status knows under another name (an older run of that name)
    # and a running one: neither is ours to delete
    jobs = jobs_of(st) + [(1, "train", "r-i1-train")]
    st.iterations[0].stages["synthesize"].job = "other"
    assert expired_jobs(st, jobs) == []


def test_the_export_job_and_iterations_without_records_stay():
    st = status(DONE, DONE, DONE)
    st.iterations[0].stages["export"] = StageRecord(phase="Succeeded", job="r-i1-export")
    jobs = jobs_of(st) + [(7, "synthesize", "r-i7-synthesize")]
    assert expired_jobs(st, jobs) == ["r-i1-curate", "r-i1-synthesize", "r-i1-train"]


def test_the_operator_flag_takes_a_number_or_all():
    import pytest

    from sheepdog.kube.job_cleanup import parse_keep
    from sheepdog.kube.operator import parse_args

    assert parse_keep("all") is None and parse_keep("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError):
            parse_keep(bad)
    assert parse_args([]).job_history == 2
    assert parse_args(["--job-history", "all"]).job_history is None
    with pytest.raises(SystemExit):
        parse_args(["--job-history", "0"])


def test_clean_up_deletes_by_uid_and_drops_the_jobs_from_the_cache():
    from sheepdog.kube.cache import WatchCache
    from sheepdog.kube.job_cleanup import clean_up
    from sheepdog.kube.jobs import labels

    class Api:  # the two calls job_cleanup makes of the API server, recorded
        def __init__(self):
            self.deleted = []

        def delete_job(self, namespace, name, uid=None):
            self.deleted.append((namespace, name, uid))
            return True

    st = status(DONE, DONE, DONE)
    jobs = [{"metadata": {"name": n, "namespace": "ns", "uid": f"u-{n}", "resourceVersion": "1",
                          "labels": labels("r", i, s)}} for i, s, n in jobs_of(st)]
    cache = WatchCache()
    for j in jobs:
        cache.put_job(j)
    api = Api()
    gone = clean_up(api, cache, "ns", st.to_wire(), jobs, 2)
    assert gone == ["r-i1-curate", "r-i1-synthesize", "r-i1-train"]
    assert api.deleted == [("ns", n, f"u-{n}") for n in gone]
    assert sorted(j["metadata"]["name"] for j in cache.jobs("ns", "r")) == sorted(
        n for i, _, n in jobs_of(st) if i > 1)
    cache.put_job(jobs[0])  # a late watch event of a deleted Job does not bring it back
    assert "r-i1-synthesize" not in {j["metadata"]["name"] for j in cache.jobs("ns", "r")}
    assert clean_up(api, cache, "ns", st.to_wire(), jobs, None) == []
