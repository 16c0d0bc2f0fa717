"""The held-out set is disjoint from the seeds a run uses: the shipped set against the shipped
seeds, and a run whose held-out tasks are its seeds fails at its start (synthesize) and in
evaluate, naming the shared tasks; and from the training pairs every iteration so far kept
(evaluate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sheepdog_jobs.evaluation.heldout import HeldoutOverlap, check_disjoint, default_heldout_file, overlaps
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, SeedTask, load_seed_tasks
from sheepdog_jobs.stages import synthesize as syn
from sheepdog_jobs.stages.common import StageError

from .conftest import REPO

QUICKSTART = str(REPO / "examples" / "seeds" / "quickstart.jsonl")


@pytest.mark.parametrize("seeds", [QUICKSTART, str(SELF_INSTRUCT_SEED_TASKS)])
def test_shipped_heldout_set_shares_no_task_with_shipped_seeds(seeds):
    assert overlaps(load_seed_tasks(default_heldout_file()), load_seed_tasks(seeds), 0.7) == []
    check_disjoint(default_heldout_file(), seeds, 0.7)


def test_overlap_by_instruction_or_by_input():
    seeds = [SeedTask("Rewrite the sentence in the passive voice.", "The dog bit the man.", "x", "s1"),
             SeedTask("Name a colour.", "", "red", "s2")]
    tasks = [SeedTask("Rewrite this sentence in the passive voice.", "", "", "h1"),
             SeedTask("Count the words of the text.", "The dog bit the man.", "", "h2"),
             SeedTask("Explain how tides work.", "", "", "h3")]
    found = overlaps(tasks, seeds, 0.7)
    assert len(found) == 2 and found[0].startswith("h1: instruction") and "seed s1" in found[1]


def write(path: Path, tasks: list[tuple[str, str]]) -> str:
    path.write_text("".join(json.dumps({"id": f"t{i}", "instruction": a, "input": b, "output": "ok"}) + "\n"
                            for i, (a, b) in enumerate(tasks)))
    return str(path)


def test_a_run_whose_heldout_tasks_are_its_seeds_fails_at_its_start(tmp_path, make_config):
    heldout = write(tmp_path / "heldout.jsonl", [("Sort the numbers from smallest to largest.", "5, 1, 3")])
    spec = {"evaluation": {"enabled": True, "suites": ["heldout"], "heldoutFile": "heldout.jsonl"}}
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = make_config(tmp_path, "synthesize", spec=spec, model=str(model), seed_file=QUICKSTART)
    with pytest.raises(StageError, match="shares 1 task"):
        syn.Synthesis(cfg).validate()
    with pytest.raises(HeldoutOverlap, match="t0: instruction"):
        check_disjoint(heldout, QUICKSTART, 0.7)
    # the shipped set passes the same check
    ok = make_config(tmp_path, "synthesize", spec={"evaluation": {"enabled": True, "suites": ["heldout"]}},
                     model=str(model), seed_file=QUICKSTART)
    syn.Synthesis(ok).validate()


def test_evaluate_refuses_an_overlapping_heldout_set(tmp_path, make_config):
    from sheepdog_jobs.stages.evaluate import EvaluateError, run

    write(tmp_path / "heldout.jsonl", [("Summarize the paragraph in one sentence.", "")])
    cfg = make_config(tmp_path, "evaluate", spec={"evaluation": {
        "enabled": True, "suites": ["heldout"], "heldoutFile": "heldout.jsonl"}}, seed_file=QUICKSTART)

    class NoEngine:
        def generate(self, *a, **k):
            raise AssertionError("nothing may be generated")

    with pytest.raises(EvaluateError, match="shares 1 task"):
        run(cfg, engine=NoEngine())


def write_kept(workdir: Path, iteration: int, pairs: list[tuple[str, str]]) -> Path:
    path = workdir / f"i{iteration}" / "curate" / "kept.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"k{n}", "instruction": a, "input": b, "output": "o",
                                        "scores": {}}) + "\n" for n, (a, b) in enumerate(pairs)))
    return path


def test_evaluate_refuses_a_heldout_task_an_earlier_iteration_trained_on(tmp_path, make_config):
    from sheepdog_jobs.stages.evaluate import EvaluateError, kept_files, run

    write(tmp_path / "heldout.jsonl", [("Explain how a rainbow forms after a storm.", ""),
                                       ("List three uses of copper.", "")])
    # iteration 1 kept the task (reworded a little), iteration 2 did not; i3 is not yet evaluated
    first = write_kept(tmp_path, 1, [("Explain how a rainbow forms after the storm.", ""), ("Add 2 and 3.", "")])
    second = write_kept(tmp_path, 2, [("Name a planet.", "")])
    write_kept(tmp_path, 3, [("List three uses of copper.", "")])
    cfg = make_config(tmp_path, "evaluate", iteration=2, spec={"evaluation": {
        "enabled": True, "suites": ["heldout"], "heldoutFile": "heldout.jsonl"}}, seed_file=QUICKSTART)
    assert kept_files(cfg) == [str(first), str(second)]

    class NoEngine:
        def generate(self, *a, **k):
            raise AssertionError("nothing may be generated")

    with pytest.raises(EvaluateError, match=r"shares 1 task\(s\) with the training pairs kept so far") as err:
        run(cfg, engine=NoEngine())
    assert "t0: instruction 'Explain how a rainbow forms after a storm.' matches a kept training pair" in str(err.value)
    assert str(first) in str(err.value)


def test_kept_pairs_overlap_by_input_too_and_disjoint_sets_pass(tmp_path):
    from sheepdog_jobs.evaluation.heldout import check_disjoint_from_kept

    heldout = write(tmp_path / "heldout.jsonl", [("Count the vowels.", "An apple a day keeps the doctor away.")])
    same_input = write_kept(tmp_path, 1, [("Translate the text into French.", "An apple a day keeps the doctor away.")])
    with pytest.raises(HeldoutOverlap, match="the same input as kept training pair"):
        check_disjoint_from_kept(heldout, [str(same_input)], 0.7)
    other = write_kept(tmp_path, 2, [("Translate the text into French.", "Good morning.")])
    check_disjoint_from_kept(heldout, [str(other)], 0.7)  # no overlap: no error
    check_disjoint_from_kept(heldout, [], 0.7)  # M_0 (iteration 0): nothing trained yet
