"""The run's status stays bounded: a stage record keeps no second copy of the figures its
iteration record holds, and what it keeps of a summary is capped, so 100 iterations fit well
under 256 KiB (etcd takes objects up to 1.5 MiB; every status write sends the whole status)."""

import json

from sheepdog.planner.records import MAX_STAGE_SUMMARY_BYTES, stage_summary
from sheepdog.planner import StageObservation, plan
from tests.planner.simulate import LAYOUT, RUN, make_spec, summary_for


def test_stage_summary_keeps_only_what_the_record_does_not():
    s = summary_for(1, "synthesize") | {"engine": "vllm", "modelLoads": 1}
    kept = stage_summary("synthesize", s)
    assert kept == {"stage": "synthesize", "iteration": 1, "ok": True, "skipped": False, "seconds": 1.0,
                    "engine": "vllm", "modelLoads": 1}
    ev = stage_summary("evaluate", summary_for(1, "evaluate"))
    assert "evaluation" not in ev  # it lives in the iteration record
    assert stage_summary("train", None) is None


def test_stage_summary_is_capped_and_says_what_it_dropped():
    s = {"stage": "train", "iteration": 3, "trainLoss": 1.0,
         "samplesFrom": {str(i): 3000 for i in range(1, 101)}, "note": "x" * 2000}
    kept = stage_summary("train", s)
    assert len(json.dumps(kept, separators=(",", ":"))) <= MAX_STAGE_SUMMARY_BYTES + 64
    assert kept["truncated"] == ["note", "samplesFrom"]
    assert kept["stage"] == "train" and "trainLoss" not in kept


def test_a_summary_of_many_small_keys_keeps_whose_it_is():
    """Many keys: the names of the dropped ones add up too, and once they did, 'stage' and
    'iteration' went last (the real-stage test read summary['stage'] and got a KeyError)."""
    s = {"stage": "synthesize", "iteration": 2, "ok": True} | {f"phase{i}PromptTokens": 123456 for i in range(60)}
    kept = stage_summary("synthesize", s)
    assert kept["stage"] == "synthesize" and kept["iteration"] == 2 and kept["ok"] is True
    assert len(kept["truncated"]) >= 50


def bulky(iteration: int, stage: str):
    """Summaries as large as stages write them, and then some (a train of total_base at
    iteration 100 lists every iteration it read; lm-eval suites report many metrics)."""
    s = summary_for(iteration, stage) | {"engine": "vllm", "modelLoads": 2, "tokensPerSecond": 1234.5}
    if stage == "curate":
        s["dropped"] = {reason: 10 * iteration for reason in ("rules", "score", "rouge", "empty", "length")}
    if stage == "train":
        s["samplesFrom"] = {str(i): 3000 for i in range(1, iteration + 1)}
        s |= {"worldSize": 8, "effectiveBatchSize": 16, "samplesPerSecond": 3.1, "step": 375, "totalSteps": 375}
    if stage == "evaluate":
        s["evaluation"] = {f"ifeval.metric{k}": 0.5 for k in range(8)}
    return "succeeded", s, ""


def test_status_of_100_iterations_stays_under_256_kib():
    # one reconcile that observes every stage of 100 finished iterations (as after a restart)
    spec = make_spec(iterations=100, evaluation={"enabled": True}, stages={"evaluate": {"gpus": 8}})
    stages = ("synthesize", "curate", "train", "evaluate")
    observed = [StageObservation(i, stage, "succeeded", attempts=1, summary=bulky(i, stage)[1],
                                 started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T01:00:00Z",
                                 gpu_seconds=28800.0)
                for i in range(0, 101) for stage in (stages if i else ("evaluate",))]
    status = plan(RUN, spec, None, observed, LAYOUT, "2026-01-02T00:00:00Z", generation=1).status
    assert len(status.iterations) == 101 and all(r.kept == 50 * r.iteration for r in status.iterations[1:])
    assert status.gpu_seconds == 28800.0 * 401
    size = len(json.dumps(status.to_wire()))
    assert size < 256 * 1024, f"status of 100 iterations is {size} bytes"
