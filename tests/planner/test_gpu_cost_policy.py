"""gpu_cost_policy: GPU-seconds of a stage, summed per iteration and per run by the planner."""

from sheepdog.planner import StageObservation, plan
from sheepdog.planner.gpu_cost_policy import gpu_seconds, seconds_between
from tests.planner.simulate import LAYOUT, RUN, make_spec


def test_seconds_between_rfc3339_times():
    assert seconds_between("2026-01-01T00:00:00Z", "2026-01-01T01:00:30Z") == 3630
    assert seconds_between("2026-01-01T00:00:10Z", "2026-01-01T00:00:00Z") == 0  # never negative
    assert seconds_between(None, "2026-01-01T00:00:00Z") is None
    assert seconds_between("yesterday", "2026-01-01T00:00:00Z") is None


def test_gpu_seconds_is_gpus_times_wall_time():
    assert gpu_seconds(8, "2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z") == 4800
    assert gpu_seconds(0, None, None) == 0  # a CPU stage costs no GPU time, known or not
    assert gpu_seconds(2, "2026-01-01T00:00:00Z", None) is None


def obs(iteration, stage, state, gpu_s=None):
    return StageObservation(iteration, stage, state, attempts=1, summary={"ok": True} if state == "succeeded" else None,
                            started_at="2026-01-01T00:00:00Z",
                            finished_at=None if state == "running" else "2026-01-01T00:01:00Z",
                            gpu_seconds=gpu_s)


def test_planner_records_stage_figures_and_sums_them_per_iteration_and_run():
    spec = make_spec(iterations=2)
    observed = [obs(1, "synthesize", "succeeded", 480.0), obs(1, "curate", "succeeded", 0.0),
                obs(1, "train", "succeeded", 960.0), obs(2, "synthesize", "failed", 120.5)]
    status = plan(RUN, spec, None, observed, LAYOUT, "2026-01-01T00:05:00Z").status
    i1, i2 = status.iterations
    assert {s: r.gpu_seconds for s, r in i1.stages.items()} == {"synthesize": 480, "curate": 0, "train": 960}
    assert i1.gpu_seconds == 1440 and i2.gpu_seconds == 120.5  # a failed stage's GPUs were held too
    assert status.gpu_seconds == 1560.5
    wire = status.to_wire()
    assert wire["gpuSeconds"] == 1560.5 and wire["iterations"][0]["stages"]["train"]["gpuSeconds"] == 960


def test_unknown_cost_stays_unknown_and_a_later_observation_keeps_the_figure():
    spec = make_spec(iterations=1)
    first = plan(RUN, spec, None, [obs(1, "synthesize", "running")], LAYOUT, "2026-01-01T00:00:30Z").status
    assert first.gpu_seconds is None and first.iterations[0].gpu_seconds is None
    done = plan(RUN, spec, first, [obs(1, "synthesize", "succeeded", 60.0)], LAYOUT, "2026-01-01T00:01:30Z").status
    # the finished Job is observed again without its pods (gpu_seconds None): the figure stays
    again = plan(RUN, spec, done, [obs(1, "synthesize", "succeeded")], LAYOUT, "2026-01-01T00:02:00Z").status
    assert done.gpu_seconds == again.gpu_seconds == 60
