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


def test_train_stage_draws_total_base_data_of_two_iterations(tmp_path, make_config, monkeypatch):
    """The train stage's one call: two complete curate outputs (iteration 1 alone holds
    maxSamples pairs) go through select_training_records; the records handed to training and
    the summary's samplesFrom come from both iterations. Training itself is stubbed: the real
    stage is covered by the model tests."""
    from sheepdog_jobs import storage
    from sheepdog_jobs.stages import train

    files = []
    for it in (1, 2):
        out = tmp_path / f"i{it}" / "curate"
        out.mkdir(parents=True)
        storage.write_jsonl(out / "kept.jsonl", pairs(it, 8))
        storage.write_manifest(out, ["kept.jsonl"], f"fp{it}")
        files.append(str(out / "kept.jsonl"))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    cfg = make_config(tmp_path, "train", iteration=2, model=str(base), train_data=files,
                      spec={"training": {"strategy": "total_base", "maxSamples": 8}})
    seen = {}

    def fake_train(config, records, fp, out, model_out):
        seen["records"] = records
        return {"samplesFrom": samples_from(records)}

    monkeypatch.setattr(train, "_train", fake_train)
    summary = train.run(cfg)
    assert len(seen["records"]) == 8
    assert set(summary["samplesFrom"]) == {"1", "2"} and sum(summary["samplesFrom"].values()) == 8
