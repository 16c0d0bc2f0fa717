"""training.maxSamples over the trainData files (sheepdog_jobs.train_selection): total_base
draws from every iteration, one iteration's data keeps its head, and samplesFrom says where
the pairs came from."""

from __future__ import annotations

import pytest

from sheepdog_jobs.train_selection import iteration_of, samples_from, select_training_records


def pairs(iteration: int, n: int) -> list[dict]:
    return [{"id": f"i{iteration}-{k:06d}", "instruction": f"task {iteration}.{k}", "input": "", "output": "ok"}
            for k in range(n)]


def test_total_base_draws_from_every_iteration():
    # Iteration 1 alone kept maxSamples pairs: the head of the concatenation would be all of it.
    pool = pairs(1, 30) + pairs(2, 30)
    chosen = select_training_records(pool, 30, seed=0, iteration=2)
    assert len(chosen) == 30 and len({r["id"] for r in chosen}) == 30
    counts = samples_from(chosen)
    assert set(counts) == {"1", "2"} and all(v > 0 for v in counts.values())
    assert sum(counts.values()) == 30
    assert [r["id"] for r in chosen] == [r["id"] for r in pool if r in chosen]  # pool order kept


def test_the_sample_depends_on_the_seed_and_iteration_only():
    pool = pairs(1, 20) + pairs(2, 20) + pairs(3, 20)
    a = select_training_records(pool, 15, seed=7, iteration=3)
    assert a == select_training_records(list(pool), 15, seed=7, iteration=3)
    assert a != select_training_records(pool, 15, seed=8, iteration=3)


def test_one_iterations_data_keeps_its_head_as_the_authors_scripts():
    pool = pairs(1, 10)
    assert select_training_records(pool, 4, seed=0, iteration=1) == pool[:4]
    assert samples_from(pool[:4]) == {"1": 4}


def test_everything_is_kept_when_it_fits():
    pool = pairs(1, 3) + pairs(2, 2)
    assert select_training_records(pool, 5, seed=0, iteration=2) == pool
    assert samples_from(pool) == {"1": 3, "2": 2}


def test_iteration_of_reads_synthesize_ids():
    assert iteration_of({"id": "i12-000003"}) == "12"
    assert iteration_of({"id": "custom"}) == "?" and iteration_of({}) == "?"
    with pytest.raises(ValueError):
        select_training_records(pairs(1, 2), 0, seed=0, iteration=1)
