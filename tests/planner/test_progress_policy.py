"""The progress line's one parser (sheepdog.progress) and what a stage record keeps of the
readings (progress_policy, through the planner): a new step replaces it, the same step changes
nothing, no reading keeps it, success removes it, failure keeps it."""

from __future__ import annotations

from sheepdog.planner import plan
from sheepdog.planner.actions import StageObservation
from sheepdog.progress import PREFIX, parse_progress_log, progress_line, progress_record
from tests.planner.simulate import LAYOUT, RUN, make_spec

RECORD = {"step": 12, "totalSteps": 375, "epoch": 0.06, "etaSeconds": 3725.5}


def test_a_progress_line_reads_back_as_its_record():
    line = progress_line(RECORD)
    assert line.startswith(PREFIX) and not line.startswith("{")  # never taken for the summary
    assert parse_progress_log(line) == RECORD
    assert progress_record({"step": 0, "totalSteps": 1}) == {"step": 0, "totalSteps": 1, "epoch": None,
                                                             "etaSeconds": None}


def test_the_latest_whole_line_of_a_log_tail_wins():
    tail = "\n".join([
        "ep\": 0.01}",  # the tail's first line, cut
        progress_line({**RECORD, "step": 10}),
        "train: step 12/375 epoch 0.06 loss 1.2345 lr 2.000e-05 eta 1:02:05",
        "[default0]:" + progress_line(RECORD),  # a launcher's prefix on the worker's line
        "UserWarning: something",
        PREFIX + '{"step": 13, "totalSte',  # being written when the tail was read
    ])
    assert parse_progress_log(tail) == RECORD
    assert parse_progress_log("train: step 12/375 ...\n{\"stage\": \"train\"}") is None
    assert parse_progress_log("") is None and parse_progress_log(None) is None


def test_records_that_are_not_progress_are_refused():
    for bad in ({"step": 5, "totalSteps": 4}, {"step": -1, "totalSteps": 4}, {"step": 1, "totalSteps": 0},
                {"step": 1.5, "totalSteps": 4}, {"step": True, "totalSteps": 4}, {"totalSteps": 4}, [1, 2], None):
        assert progress_record(bad) is None, bad
    # an unknown or nonsensical epoch / ETA is unknown, not a reason to drop the step
    got = progress_record({"step": 1, "totalSteps": 4, "epoch": "x", "etaSeconds": -3})
    assert got == {"step": 1, "totalSteps": 4, "epoch": None, "etaSeconds": None}


def reading(step, at):
    return {**RECORD, "step": step, "observedAt": at}


def train_running(spec):
    """A plan whose frontier is iteration 1's train, running (the earlier stages succeeded)."""
    status, observed = None, []
    for i, stage in enumerate(("synthesize", "curate")):
        observed.append(StageObservation(1, stage, "succeeded", summary={"ok": True}, finished_at=f"2026-01-01T00:0{i}:00Z"))
    p = plan(RUN, spec, status, observed, LAYOUT, "2026-01-01T00:03:00Z", 1)
    assert [a.stage for a in p.actions] == ["train"]
    return p.status, observed


def test_a_running_train_records_each_new_step_once():
    spec = make_spec(evaluation={"enabled": False})
    status, done = train_running(spec)

    def step(status, progress, state="running", at="2026-01-01T00:10:00Z", **kw):
        o = StageObservation(1, "train", state, progress=progress, started_at="2026-01-01T00:03:00Z", **kw)
        p = plan(RUN, spec, status, [*done, o], LAYOUT, at, 1)
        return p.status, p.status.record(1).stages["train"]

    s1, rec = step(status, reading(12, "2026-01-01T00:10:00Z"))
    assert rec.progress.to_wire() == {"step": 12, "totalSteps": 375, "epoch": 0.06, "etaSeconds": 3725.5,
                                      "observedAt": "2026-01-01T00:10:00Z"}
    # the same step read again later: nothing changes (no status write for an idle read)
    s2, rec = step(s1, reading(12, "2026-01-01T00:11:00Z"))
    assert s2.to_wire() == s1.to_wire()
    # not read this time (or the read failed): the last progress stays
    s3, rec = step(s2, None)
    assert rec.progress.step == 12
    s4, rec = step(s3, reading(40, "2026-01-01T00:12:00Z"))
    assert (rec.progress.step, rec.progress.observed_at) == (40, "2026-01-01T00:12:00Z")
    # it fails: how far it got stays
    failed, rec = step(s4, None, state="failed", message="OOMKilled", attempts=3, finished_at="2026-01-01T00:13:00Z")
    assert rec.phase == "Failed" and rec.progress.step == 40
    # it succeeds instead: the summary reports the end, the progress goes
    ok, rec = step(s4, None, state="succeeded", summary={"ok": True, "trainLoss": 0.5},
                   finished_at="2026-01-01T00:13:00Z")
    assert rec.phase == "Succeeded" and rec.progress is None
    assert "progress" not in ok.to_wire()["iterations"][0]["stages"]["train"]
