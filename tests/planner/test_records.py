"""records: summaries fill the iteration record; bad figures stay unknown."""

from sheepdog.api.status import IterationRecord, RunStatus
from sheepdog.planner.records import apply_summary, describe_summary, record_for
from sheepdog.stage_config import Layout
from tests.planner.simulate import make_spec

L = Layout(root="/w", run_dir="/w")


def test_record_for_creates_sorted_records_with_relative_lineage():
    status = RunStatus()
    spec = make_spec(model={"base": "models/b"})
    record_for(status, spec, 2, L, "t")
    first = record_for(status, spec, 1, L, "t")
    assert [r.iteration for r in status.iterations] == [1, 2]
    assert (first.generator_model, status.iterations[1].generator_model) == ("models/b", "i1/model")
    assert record_for(status, spec, 1, L, "later") is first


def test_summaries_fill_figures_and_wrong_types_stay_unknown():
    r = IterationRecord(iteration=1)
    apply_summary(r, "synthesize", {"generated": 10, "assessed": "9", "parseFailures": 1.0, "meanQuality": 7,
                                    "meanFollowing": True}, L)
    assert (r.generated, r.assessed, r.parse_failures, r.mean_quality, r.mean_following) == (10, None, 1, 7.0, None)
    apply_summary(r, "curate", {"kept": 4, "keepRate": 0.4}, L)
    apply_summary(r, "train", {"trainLoss": 1.5, "model": "/w/i1/model"}, L)
    apply_summary(r, "evaluate", {"evaluation": {"a": 0.5, "b": "x"}}, L)
    assert (r.kept, r.keep_rate, r.train_loss, r.model, r.evaluation) == (4, 0.4, 1.5, "i1/model", {"a": 0.5})


def test_describe_summary():
    assert describe_summary("curate", {"kept": 3, "keepRate": 0.25}) == "kept 3, keep rate 0.25"
    assert describe_summary("train", None) == "figures unknown (no summary)"
    assert describe_summary("evaluate", {"evaluation": {"m": 0.5}, "skipped": True}) == "m 0.5, skipped (already done)"


def test_describe_summary_of_train_has_its_throughput_mfu_and_peak():
    summary = {"trainLoss": 1.25, "tokensPerSecond": 1234.5, "mfu": 0.412, "peakMemoryGiBPerRank": [30.5, 31.25],
               "peakMemoryGiB": 31.25}
    assert describe_summary("train", summary) == "train loss 1.25, 1234 tokens/s, MFU 41.2%, peak memory 31.2 GiB a rank"
    # on a CPU: no MFU (no peak FLOP/s), the resident peak
    assert describe_summary("train", {"trainLoss": 2.0, "tokensPerSecond": 40.0, "mfu": None,
                                      "peakMemoryGiB": 1.5}) == "train loss 2, 40 tokens/s, peak memory 1.5 GiB a rank"
    # and the iteration record keeps them (the report's iterations), whatever the stage record drops
    from sheepdog.api.status import IterationRecord

    record = IterationRecord(iteration=1)
    apply_summary(record, "train", summary, L)
    assert (record.train_loss, record.train_tokens_per_second, record.train_mfu, record.train_peak_memory_gib) == \
        (1.25, 1234.5, 0.412, 31.25)
