"""The stage command on bad input: one clear line, non-zero exit, an {"ok": false} summary,
nothing else written, and no model loaded (these run in seconds)."""

from __future__ import annotations

import json

import pytest

from sheepdog_jobs import cli

FAST = 60  # seconds: a hang guard for steps that load no model


def write_seeds(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


GOOD_SEED = json.dumps({"instruction": "Name three primary colors.", "input": "", "output": "Red, blue, yellow."})


def assert_clean_failure(proc, summary, workdir, *needles, stage="synthesize"):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert summary is not None and summary["ok"] is False and summary["stage"] == stage
    assert all(n in summary["error"] for n in needles)
    assert "\n" not in summary["error"]
    # The summary is also the last line of stdout.
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary
    # Nothing but the seed file we wrote (and the summary, kept outside) exists.
    assert not (workdir / "i1").exists()
    assert "loading" not in proc.stderr  # no model was touched


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    return d


@pytest.fixture
def model_dir(tmp_path):
    # Looks like a model to the checks, so seed errors are the first thing found.
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return str(d)


def test_missing_seed_file(workdir, make_config, run_cli, model_dir):
    cfg = make_config(workdir, "synthesize", model=model_dir, seed_file=str(workdir / "nope.jsonl"))
    proc, summary = run_cli(cfg, timeout=FAST)
    assert "loading" not in proc.stderr  # refused before any model load
    assert_clean_failure(proc, summary, workdir, "nope.jsonl", "does not exist")


def test_empty_seed_file(workdir, make_config, run_cli, model_dir):
    seeds = write_seeds(workdir / "seeds.jsonl", [])
    proc, summary = run_cli(make_config(workdir, "synthesize", model=model_dir, seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "seeds.jsonl", "no seed tasks")


def test_malformed_seed_line_names_the_line(workdir, make_config, run_cli, model_dir):
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED, '{"instruction": "x", ', GOOD_SEED.replace("three", "four")])
    proc, summary = run_cli(make_config(workdir, "synthesize", model=model_dir, seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "seeds.jsonl", "line 2", "invalid JSON")


def test_seed_line_without_instruction(workdir, make_config, run_cli, model_dir):
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED, json.dumps({"input": "", "output": "x"})])
    proc, summary = run_cli(make_config(workdir, "synthesize", model=model_dir, seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "line 2", "instruction")


def test_missing_model_path(workdir, make_config, run_cli):
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED])
    proc, summary = run_cli(make_config(workdir, "synthesize", model=str(workdir / "no-model"), seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "generatorModel", "no-model", "does not exist")


def test_model_dir_without_config(workdir, make_config, run_cli, tmp_path):
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED])
    empty = tmp_path / "empty-model"
    empty.mkdir()
    proc, summary = run_cli(make_config(workdir, "synthesize", model=str(empty), seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "empty-model", "config.json")


def test_config_not_json(workdir, run_cli):
    proc, summary = run_cli('{"run": "t", ', stage="synthesize")
    assert_clean_failure(proc, summary, workdir, "invalid JSON")
    assert summary["iteration"] is None


def test_config_with_bad_field_names_it(workdir, make_config, run_cli, model_dir):
    data = json.loads(make_config(workdir, "synthesize", model=model_dir).to_json())
    data["spec"]["synthesis"]["dataSize"] = 0
    proc, summary = run_cli(json.dumps(data), stage="synthesize")
    assert_clean_failure(proc, summary, workdir, "spec.synthesis.dataSize", "greater than or equal to 1")


def test_config_unknown_field(workdir, make_config, run_cli, model_dir):
    data = json.loads(make_config(workdir, "synthesize", model=model_dir).to_json())
    data["spec"]["synthesis"]["dataSzie"] = 3
    proc, summary = run_cli(json.dumps(data), stage="synthesize")
    assert_clean_failure(proc, summary, workdir, "dataSzie")


def test_config_file_path_is_accepted_and_stage_must_match(workdir, make_config, run_cli, model_dir, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(make_config(workdir, "curate", model=model_dir).to_json())
    proc, summary = run_cli(str(path), stage="train")
    assert_clean_failure(proc, summary, workdir, "'curate'", "'train'", stage="train")
    assert summary["iteration"] == 1


def test_curate_without_synthesize_output(workdir, make_config, run_cli):
    proc, summary = run_cli(make_config(workdir, "curate"))
    assert_clean_failure(proc, summary, workdir, "synthesize", "_SUCCESS", stage="curate")


def test_curate_refuses_half_written_synthesize_output(workdir, make_config, run_cli):
    from sheepdog_jobs import storage

    src = workdir / "i1" / "synthesize"
    storage.write_jsonl(src / "assessments.jsonl", [{"id": "a", "instruction": "i", "input": "", "output": "o"}] * 4)
    storage.write_manifest(src, ["assessments.jsonl"], "fp")
    with open(src / "assessments.jsonl", "r+b") as fh:
        fh.truncate(30)
    proc, summary = run_cli(make_config(workdir, "curate"))
    assert proc.returncode != 0 and summary["ok"] is False
    assert "_SUCCESS" in summary["error"]
    assert not (workdir / "i1" / "curate").exists()


def test_train_with_missing_data_and_model(workdir, make_config, run_cli, model_dir):
    proc, summary = run_cli(make_config(workdir, "train", model=model_dir))
    assert_clean_failure(proc, summary, workdir, "trainData", "kept.jsonl", stage="train")
    proc, summary = run_cli(make_config(workdir, "train", model=str(workdir / "gone")))
    assert_clean_failure(proc, summary, workdir, "baseModel", "gone", stage="train")


def test_bad_shard_index_is_refused_before_anything(workdir, make_config, run_cli, model_dir):
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED])
    cfg = make_config(workdir, "synthesize", model=model_dir, seed_file=seeds, shard={"index": 2, "count": 2})
    proc, summary = run_cli(cfg)
    assert_clean_failure(proc, summary, workdir, "shard index 2", "0..1")
    cfg = make_config(workdir, "synthesize", model=model_dir, seed_file=seeds, shard={"count": 2})
    proc, summary = run_cli(cfg, JOB_COMPLETION_INDEX="3")
    assert_clean_failure(proc, summary, workdir, "shard index 3")
    proc, summary = run_cli(cfg, JOB_COMPLETION_INDEX="x")
    assert_clean_failure(proc, summary, workdir, "JOB_COMPLETION_INDEX")


def test_unexpected_error_gives_summary_and_traceback(tmp_path, make_config, monkeypatch, capsys):
    import sheepdog_jobs.stages as stages

    def broken(config):
        raise KeyError("surprise")

    monkeypatch.setattr(stages, "stage_runner", lambda name: broken)
    summary_file = tmp_path / "s.json"
    code = cli.main(["curate", "--config", make_config(tmp_path, "curate").to_json(), "--summary-file", str(summary_file)])
    captured = capsys.readouterr()
    assert code != 0
    assert "Traceback" in captured.err and "surprise" in captured.err
    summary = json.loads(summary_file.read_text())
    assert summary["ok"] is False and "KeyError" in summary["error"] and summary["stage"] == "curate"


def test_summary_is_cut_to_fit_a_termination_message():
    big = {"stage": "curate", "ok": False, "error": "x" * 10000, "dropped": {f"r{i}": i for i in range(500)}}
    line = cli.fit_summary(big)
    assert len(line.encode()) <= cli.SUMMARY_LIMIT
    assert json.loads(line)["ok"] is False


def test_prepare_model_returns_at_once_for_a_complete_dir(tmp_path, run_cli):
    import subprocess
    import sys

    from sheepdog_jobs.modelprep import MARKER

    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / MARKER).write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "sheepdog_jobs", "prepare-model", "--out", str(out)],
                          capture_output=True, text=True, timeout=FAST)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"model": str(out), "cached": True, "seconds": 0.0}


def test_adapter_over_an_adapter_as_generator_is_refused(workdir, make_config, run_cli, tmp_path):
    """An unmerged adapter is served as its base + the adapter (engines/adapters.py); one whose
    base is itself an adapter (one_last with merge: false) cannot be, and says so before any load."""
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED])
    first, second = tmp_path / "adapter-1", tmp_path / "adapter-2"
    for d, base in ((first, str(tmp_path / "base")), (second, str(first))):
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 8}))
    proc, summary = run_cli(make_config(workdir, "synthesize", model=str(second), seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "generatorModel", "adapter over another adapter", "merge: true")


def test_unmerged_adapter_with_a_missing_base_is_refused(workdir, make_config, run_cli, tmp_path):
    seeds = write_seeds(workdir / "seeds.jsonl", [GOOD_SEED])
    adapter = tmp_path / "adapter-only"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    proc, summary = run_cli(make_config(workdir, "synthesize", model=str(adapter), seed_file=seeds))
    assert_clean_failure(proc, summary, workdir, "generatorModel", "the base its adapter", "does not exist")


def test_curate_of_a_sharded_synthesize_reads_its_one_set_of_files(workdir, make_config, run_cli):
    """Synthesize's shards write one globally deduplicated assessments.jsonl (every shard count
    gives the same bytes): curate takes it as it is, with no merge and no dedup of its own, and
    ignores shard-<k>/ directories an older version left."""
    from sheepdog_jobs import storage

    def pair(i, instruction, quality):
        return {"id": f"i1-{i:06d}", "instruction": instruction, "input": "", "output": "An answer.",
                "ruleReason": None, "scores": {"quality": quality, "following": quality}}

    src = workdir / "i1" / "synthesize"
    records = [pair(0, "Write a short poem about the sea at night.", 7.0),
               pair(1, "Write a short poem about the sea at night!", 9.0),  # not curate's to dedup
               pair(2, "List three ways to save water at home.", 5.0)]
    storage.write_jsonl(src / "assessments.jsonl", records)
    storage.write_manifest(src, ["assessments.jsonl"], "fp")
    old = src / "shard-0"
    storage.write_jsonl(old / "assessments.jsonl", [pair(9, "Name a colour.", 9.0)])
    storage.write_manifest(old, ["assessments.jsonl"], "fp")
    cfg = make_config(workdir, "curate", spec={"stages": {"synthesize": {"shards": 2}}, "filter": {"keepFraction": 1.0}})
    proc, summary = run_cli(cfg)
    assert proc.returncode == 0, proc.stderr
    assert summary["kept"] == 3 and summary["assessed"] == 3 and summary["dropped"] == {}
    kept = storage.read_jsonl(workdir / "i1" / "curate" / "kept.jsonl")
    assert [r["id"] for r in kept] == ["i1-000000", "i1-000001", "i1-000002"]
    # Incomplete (no _SUCCESS): refused, whatever the shard count.
    (src / "_SUCCESS").unlink()
    cfg = make_config(workdir, "curate", spec={"stages": {"synthesize": {"shards": 2}}, "filter": {"keepFraction": 0.5}})
    proc, summary = run_cli(cfg)
    assert proc.returncode != 0 and "no complete synthesize output" in summary["error"]


def test_errors_no_retry_can_fix_exit_with_their_own_code(workdir, make_config, run_cli, model_dir, tmp_path):
    """A config the stage refuses or bad seeds: EXIT_UNFIXABLE (a Job's podFailurePolicy fails the
    Job at once on it); a missing input another stage may still write: 1 (retried)."""
    from sheepdog_jobs.constants import EXIT_UNFIXABLE

    assert EXIT_UNFIXABLE == 3
    proc, _ = run_cli('{"run": "t", ', stage="synthesize")
    assert proc.returncode == EXIT_UNFIXABLE, proc.stderr
    path = tmp_path / "cfg.json"
    path.write_text(make_config(workdir, "curate", model=model_dir).to_json())
    proc, _ = run_cli(str(path), stage="train")
    assert proc.returncode == EXIT_UNFIXABLE, proc.stderr
    cfg = make_config(workdir, "synthesize", model=model_dir, seed_file=write_seeds(workdir / "s.jsonl", ["{"]))
    proc, summary = run_cli(cfg, timeout=FAST)
    assert proc.returncode == EXIT_UNFIXABLE and "s.jsonl" in summary["error"], proc.stderr
    proc, _ = run_cli(make_config(workdir, "curate"))
    assert proc.returncode == 1, proc.stderr
