"""One real I-SHEEP iteration (synthesize -> curate -> train) on the tiny model with each
engine, through the stage command; and resuming synthesize after SIGKILL in each phase.

Slow (minutes on 2 CPU cores): marked `model`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sheepdog_jobs import storage

from .conftest import REPO, read_summary, stage_args, stage_env

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(900)]

PHASE_FILES = ("instructions.jsonl", "responses.jsonl", "assessments.jsonl")
# Both engines generate the same number of instructions; different numbers of tokens/s. Small
# (CI budget): 6 requests of 128 tokens still give each phase items to resume over (96 tokens cut
# most items off: measured).
SPEC = {"synthesis": {"dataSize": 3, "maxTokens": 128, "maxRequests": 6}}
TIMEOUT = {"transformers": 900, "vllm": 900}


def iteration(workdir: Path, engine: str, make_config, model: str, seeds: str) -> dict:
    spec = {**SPEC, "engine": engine}
    results = {}
    # No train here: the real train stage has its own module (test_train_deepspeed.py), and the
    # whole chain runs in the end-to-end test and the front door (CI budget).
    for stage in ("synthesize", "curate"):
        cfg = make_config(workdir, stage, spec=spec, model=model, seed_file=seeds)
        summary_path = workdir / "i1" / f"{stage}.summary.json"
        started = time.monotonic()
        proc = subprocess.run(stage_args(cfg, summary_path), capture_output=True, text=True,
                              timeout=TIMEOUT[engine], env=stage_env(), cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-4000:]
        summary = read_summary(summary_path)
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == summary
        results[stage] = {**summary, "wall": time.monotonic() - started}
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, seed_tasks):
    """Cache of full iterations by engine (each test module run does each at most once)."""
    done: dict[str, tuple[Path, dict]] = {}

    def get(engine: str, make_config) -> tuple[Path, dict]:
        if engine not in done:
            workdir = tmp_path_factory.mktemp(f"iter-{engine}")
            done[engine] = (workdir, iteration(workdir, engine, make_config, tiny_model, seed_tasks))
        return done[engine]

    return get


def check_synthesize(out: Path, summary: dict, engine: str) -> list[dict]:
    assert summary["ok"] and not summary["skipped"]
    assert summary["engine"] == engine
    assert summary["modelLoads"] == 1  # one load for all three phases
    assert 1 <= summary["generated"] <= SPEC["synthesis"]["dataSize"]
    assert storage.is_done(out, storage.read_manifest(out)["fingerprint"])
    for name in PHASE_FILES:
        assert len(storage.read_jsonl(out / name)) == summary["generated"]
    records = storage.read_jsonl(out / "assessments.jsonl")
    judged = [r for r in records if r["ruleReason"] is None]
    assert summary["assessed"] == len(judged)
    for r in judged:
        for criterion in ("quality", "following"):
            detail = r["scoreDetail"][criterion]
            assert set(detail["logprobs"]) == {str(k) for k in range(1, 11)}
            assert 0 < detail["mass"] <= 1.0 + 1e-6
            if r["scores"][criterion] is not None:
                assert 1.0 <= r["scores"][criterion] <= 10.0
                assert 1 <= detail["argmax"] <= 10
    quality = [r["scores"]["quality"] for r in judged if r["scores"]["quality"] is not None]
    if quality:
        assert summary["meanQuality"] == pytest.approx(sum(quality) / len(quality), abs=1e-3)
    return records


def check_curate(workdir: Path, results: dict) -> None:
    curate = results["curate"]
    kept = storage.read_jsonl(workdir / "i1" / "curate" / "kept.jsonl")
    dropped = storage.read_jsonl(workdir / "i1" / "curate" / "dropped.jsonl")
    assert curate["kept"] == len(kept) >= 1
    assert len(kept) + len(dropped) == results["synthesize"]["generated"]
    assert all(d["reason"] for d in dropped)
    assert curate["keepRate"] == pytest.approx(len(kept) / curate["assessed"], abs=1e-3)
    assert set(kept[0]) >= {"instruction", "input", "output", "scores"}


# vLLM's iteration is a bulk repetition (make test-all): make test runs synthesize, curate and
# train on vLLM twice over in the quickstart (tests/test_front_door.py).
@pytest.mark.parametrize("engine", ["transformers", pytest.param("vllm", marks=pytest.mark.bulk)])
def test_one_iteration(engine, runs, make_config, tiny_model, seed_tasks):
    workdir, results = runs(engine, make_config)
    check_synthesize(workdir / "i1" / "synthesize", results["synthesize"], engine)
    check_curate(workdir, results)
    print(f"\n[{engine}] iteration: " + ", ".join(
        f"{s} {r['wall']:.0f}s" for s, r in results.items())
        + f"; load {results['synthesize'].get('loadSeconds')}s, {results['synthesize'].get('tokensPerSecond')} tok/s")

    # A finished stage with the same inputs is skipped without loading the model.
    cfg = make_config(workdir, "synthesize", spec={**SPEC, "engine": engine}, model=tiny_model, seed_file=seed_tasks)
    proc = subprocess.run(stage_args(cfg, workdir / "again.json"), capture_output=True, text=True,
                          timeout=120, env=stage_env(), cwd=REPO)
    again = read_summary(workdir / "again.json")
    assert proc.returncode == 0 and again["skipped"] is True
    assert again["generated"] == results["synthesize"]["generated"]
    assert "loading" not in proc.stderr  # the model was not loaded


def start(cfg, summary: Path):
    """(process, its stderr file). A new session, so that SIGKILL to the group also takes
    vLLM's engine process down."""
    err = summary.with_suffix(".err")
    with open(err, "w") as fh:
        proc = subprocess.Popen(stage_args(cfg, summary), stdout=subprocess.DEVNULL, stderr=fh,
                                env=stage_env(), cwd=REPO, start_new_session=True)
    return proc, err


def kill_when(proc, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the stage ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def stamp(out: Path, name: str) -> tuple[int, str]:
    return (out / name).stat().st_mtime_ns, storage.sha256_file(out / name)


def test_resume_after_kill_in_each_phase_transformers(tmp_path, runs, make_config, tiny_model, seed_tasks):
    """Kill in phase A (before any checkpoint), in phase B and in phase C; each rerun resumes
    at the phase it stopped in, and the result equals an uninterrupted run (seeded sampling)."""
    ref_dir, _ = runs("transformers", make_config)
    ref = ref_dir / "i1" / "synthesize"
    cfg = make_config(tmp_path, "synthesize", spec={**SPEC, "engine": "transformers"},
                      model=tiny_model, seed_file=seed_tasks)
    out = Path(cfg.out_dir)
    summary = tmp_path / "s.json"

    # Phase A: killed once the model is loaded and generating, before its checkpoint.
    proc, err = start(cfg, summary)
    kill_when(proc, lambda: "model loaded" in err.read_text(), 300)
    assert not (out / "_SUCCESS.instructions").exists() and not (out / "instructions.jsonl").exists()

    # Phase B: killed right after phase A's checkpoint.
    proc, err = start(cfg, summary)
    kill_when(proc, lambda: (out / "_SUCCESS.instructions").exists(), 600)
    a_stamp = stamp(out, "instructions.jsonl")
    assert not (out / "_SUCCESS.responses").exists()

    # Phase C: killed after phase B's checkpoint; phase A must not have been redone.
    proc, err = start(cfg, summary)
    kill_when(proc, lambda: (out / "_SUCCESS.responses").exists(), 600)
    assert stamp(out, "instructions.jsonl") == a_stamp
    b_stamp = stamp(out, "responses.jsonl")
    assert not (out / storage.MANIFEST).exists()

    # Completes, reusing A and B.
    proc = subprocess.run(stage_args(cfg, summary), capture_output=True, text=True, timeout=600,
                          env=stage_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_summary(summary)
    assert result["resumedPhases"] == ["instructions", "responses"]
    assert result["modelLoads"] == 1
    assert stamp(out, "instructions.jsonl") == a_stamp and stamp(out, "responses.jsonl") == b_stamp
    assert storage.verify_manifest(out, None) is not None
    # Same seeds, same samples: identical to the uninterrupted run.
    for name in PHASE_FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_changed_assessment_setting_redoes_only_phase_c(tmp_path, runs, make_config, tiny_model, seed_tasks):
    ref_dir, _ = runs("transformers", make_config)
    out = tmp_path / "i1" / "synthesize"
    out.mkdir(parents=True)
    for f in os.listdir(ref_dir / "i1" / "synthesize"):
        if (ref_dir / "i1" / "synthesize" / f).is_file():  # not claims/ and blocks/: phase C is redone
            (out / f).write_bytes((ref_dir / "i1" / "synthesize" / f).read_bytes())
    spec = {**SPEC, "engine": "transformers", "assessment": {"scoring": "logprobs", "criteria": ["quality"]}}
    cfg = make_config(tmp_path, "synthesize", spec=spec, model=tiny_model, seed_file=seed_tasks)
    a_stamp = stamp(out, "instructions.jsonl")
    proc = subprocess.run(stage_args(cfg, tmp_path / "s.json"), capture_output=True, text=True, timeout=600,
                          env=stage_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_summary(tmp_path / "s.json")
    assert result["skipped"] is False and result["resumedPhases"] == ["instructions", "responses"]
    assert result["meanFollowing"] is None and result["meanQuality"] is not None
    assert stamp(out, "instructions.jsonl") == a_stamp
    records = storage.read_jsonl(out / "assessments.jsonl")
    assert all(set(r["scores"]) <= {"quality"} for r in records)


# Bulk (make test-all): resuming is the stage's, not the engine's; make test kills and resumes
# each phase with transformers (above).
@pytest.mark.bulk
def test_resume_after_kill_vllm(tmp_path, make_config, tiny_model, seed_tasks):
    """vLLM: killed (with its engine process) after phase A's checkpoint, resumed at phase B."""
    cfg = make_config(tmp_path, "synthesize", spec={**SPEC, "engine": "vllm"}, model=tiny_model, seed_file=seed_tasks)
    out, summary = Path(cfg.out_dir), tmp_path / "s.json"
    proc, err = start(cfg, summary)
    kill_when(proc, lambda: (out / "_SUCCESS.instructions").exists(), 800)
    a_stamp = stamp(out, "instructions.jsonl")
    proc = subprocess.run(stage_args(cfg, summary), capture_output=True, text=True, timeout=800,
                          env=stage_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_summary(summary)
    assert result["resumedPhases"] == ["instructions"] and result["engine"] == "vllm"
    assert stamp(out, "instructions.jsonl") == a_stamp
    assert storage.verify_manifest(out, None) is not None


def test_text_scoring_keeps_raw_judgements_and_counts_failures(tmp_path, runs, make_config, tiny_model, seed_tasks):
    """scoring: text (the paper's): every judgement is kept verbatim, and each one without a
    score in 1..10 is counted in parseFailures instead of vanishing. The default rule is the
    authors' (assessment.parse: strict); the summary counts both rules' failures."""
    from sheepdog_jobs.parsing import extract_score, extract_score_strict

    ref_dir, _ = runs("transformers", make_config)
    out = tmp_path / "i1" / "synthesize"
    out.mkdir(parents=True)
    for name in ("instructions.jsonl", "_SUCCESS.instructions", "responses.jsonl", "_SUCCESS.responses"):
        (out / name).write_bytes((ref_dir / "i1" / "synthesize" / name).read_bytes())
    spec = {**SPEC, "engine": "transformers", "assessment": {"scoring": "text", "maxTokens": 12}}
    cfg = make_config(tmp_path, "synthesize", spec=spec, model=tiny_model, seed_file=seed_tasks)
    proc = subprocess.run(stage_args(cfg, tmp_path / "s.json"), capture_output=True, text=True, timeout=600,
                          env=stage_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = read_summary(tmp_path / "s.json")
    judged = [r for r in storage.read_jsonl(out / "assessments.jsonl") if r["ruleReason"] is None]
    assert result["assessed"] == len(judged) >= 1
    failures = first_number_failures = 0
    for r in judged:
        assert set(r["judgements"]) == {"quality", "following"}
        for criterion, text in r["judgements"].items():
            assert r["scores"][criterion] == extract_score_strict(text)
            failures += r["scores"][criterion] is None
            first_number_failures += extract_score(text) is None
    assert result["parseFailures"] == failures
    assert result["parseFailuresBy"] == {"strict": failures, "firstNumber": first_number_failures}


ENGINE_PROBE = r'''
import json, sys
from sheepdog_jobs.engines import create_engine
from sheepdog_jobs.prompts import build_assessment_prompt, build_response_prompt

if __name__ == "__main__":
    engine = create_engine(sys.argv[1], sys.argv[2], "none", seed=0)
    judge = [build_assessment_prompt("combined", c, "Name three primary colors.", "", "Red, blue and yellow.")
             for c in ("quality", "following")]
    asks = [build_response_prompt("Write a haiku about autumn.", ""),
            build_response_prompt("Translate to French.", "Good morning")]
    sampled = engine.generate(asks * 2, temperature=1.0, top_p=0.95, max_tokens=12, seed=[7, 8, 9, 10])
    alone = engine.generate(asks[:1], temperature=1.0, top_p=0.95, max_tokens=12, seed=[7])
    print(json.dumps({
        "ids": [engine.format.encode(p) for p in judge + asks],
        "plan": list(engine.format.digit_plan(judge[0]).ten),
        "digits": engine.score_digits(judge),
        "ppl": engine.perplexity(["The cat sat on the mat.", "Colorless green ideas sleep furiously."]),
        "sampled": [c.text for c in sampled], "alone": alone[0].text,
        "tokens": [c.num_tokens for c in sampled], "reasons": [c.finish_reason for c in sampled],
    }))
    engine.close()
'''


def test_engines_feed_the_same_tokens_and_agree_on_scores(tmp_path, tiny_model):
    """Same prompts either way: identical token ids; digit log-probs and perplexities agree up
    to vLLM's bf16 arithmetic; per-request seeds make a transformers sample independent of its
    batch neighbours."""
    import math

    script = tmp_path / "probe.py"
    script.write_text(ENGINE_PROBE)
    got = {}
    for engine in ("transformers", "vllm"):
        proc = subprocess.run([sys.executable, str(script), engine, tiny_model], capture_output=True,
                              text=True, timeout=600, env=stage_env(), cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got[engine] = json.loads(proc.stdout.strip().splitlines()[-1])
    hf, vl = got["transformers"], got["vllm"]
    assert hf["ids"] == vl["ids"]
    assert hf["plan"][0] == "split"  # SmolLM2 writes "10" as "1" + "0": the second step is taken
    for a, b in zip(hf["digits"], vl["digits"]):
        assert set(a) == set(b) == {str(k) for k in range(1, 11)}
        assert sum(math.exp(v) for v in a.values()) <= 1.0 + 1e-6
        for k in a:
            assert abs(a[k] - b[k]) < 0.25, (k, a[k], b[k])
    for a, b in zip(hf["ppl"], vl["ppl"]):
        assert abs(a - b) / a < 0.1
    assert hf["alone"] == hf["sampled"][0]
    for result in (hf, vl):
        assert all(0 < n <= 12 for n in result["tokens"])
        # "length" only at the budget; anything shorter ended on end-of-sequence.
        assert all(n == 12 if r == "length" else r == "stop" for r, n in zip(result["reasons"], result["tokens"]))


SHARD_SPEC = {"engine": "transformers", "synthesis": {"dataSize": 6, "maxTokens": 160, "maxRequests": 12}}


def sharded_config(workdir: Path, make_config, model: str, seeds: str, shards: int):
    """A synthesize config with blocks of 2 requests and chunks of 2 instructions (plan.json
    written first, as the first worker would), so that even 6 instructions make several
    units to share."""
    from sheepdog_jobs.stages.synthesize import Synthesis

    spec = {**SHARD_SPEC, "stages": {"synthesize": {"shards": shards}}}
    cfg = make_config(workdir, "synthesize", spec=spec, model=model, seed_file=seeds,
                      **({"shard": {"count": shards}} if shards > 1 else {}))
    s = Synthesis(cfg)
    s.validate()
    storage.atomic_write_text(s.plan_path(), '{"block":2,"chunk":2}\n')
    return cfg


def run_shards(cfg, workdir: Path, indices) -> list[dict]:
    """The shards `indices` as processes started at once (JOB_COMPLETION_INDEX, as in pods)."""
    procs = []
    for index in indices:
        err = open(workdir / f"s{index}.err", "w")
        procs.append((index, err, subprocess.Popen(
            stage_args(cfg, workdir / f"s{index}.json"), stdout=subprocess.DEVNULL, stderr=err,
            env=stage_env(JOB_COMPLETION_INDEX=str(index)), cwd=REPO)))
    summaries = []
    for index, err, proc in procs:
        assert proc.wait(timeout=900) == 0, (workdir / f"s{index}.err").read_text()[-3000:]
        err.close()
        summaries.append(read_summary(workdir / f"s{index}.json"))
    return summaries


# Bulk (make test-all): make test proves shard independence with a fake engine
# (tests/jobs/test_synthesize_shards.py) and the sharded Job shape on the control plane.
@pytest.mark.bulk
def test_sharded_synthesize_equals_unsharded(tmp_path, make_config, tiny_model, seed_tasks):
    """shards: 1 and shards: 2 (two processes at once on one output directory) write
    byte-identical instructions, responses and assessments; the shards' summaries add up to
    the unsharded one; curate reads the one set of files."""
    one_dir, two_dir = tmp_path / "k1", tmp_path / "k2"
    one_dir.mkdir()
    two_dir.mkdir()
    [one] = run_shards(sharded_config(one_dir, make_config, tiny_model, seed_tasks, 1), one_dir, [0])
    cfg = sharded_config(two_dir, make_config, tiny_model, seed_tasks, 2)
    two = run_shards(cfg, two_dir, [0, 1])
    ref, out = one_dir / "i1" / "synthesize", Path(cfg.out_dir)
    assert one["generated"] == len(storage.read_jsonl(ref / "instructions.jsonl")) >= 1
    for name in PHASE_FILES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert [s["shard"] for s in two] == [0, 1] and all(s["shards"] == 2 for s in two)
    for key in ("generated", "assessed", "parseFailures"):
        assert sum(s[key] for s in two) == one[key], key
    # both worked (with block 2 and 6 instructions there are several blocks and chunks)
    owners = {p.read_text() for p in (out / "claims").rglob("*-*") if "." not in p.name}
    assert owners == {"0", "1"}
    assert not any(out.glob("shard-*"))

    curate = make_config(two_dir, "curate", spec={**SHARD_SPEC, "stages": {"synthesize": {"shards": 2}}},
                         model=tiny_model, seed_file=seed_tasks)
    proc = subprocess.run(stage_args(curate, two_dir / "c.json"), capture_output=True, text=True,
                          timeout=120, env=stage_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kept = storage.read_jsonl(two_dir / "i1" / "curate" / "kept.jsonl")
    dropped = storage.read_jsonl(two_dir / "i1" / "curate" / "dropped.jsonl")
    assert sorted(r["id"] for r in kept + dropped) == [r["id"] for r in storage.read_jsonl(ref / "instructions.jsonl")]

    # shards: 2 where shard 1 never starts: shard 0 finishes alone, with the same bytes.
    alone_dir = tmp_path / "alone"
    alone_dir.mkdir()
    cfg = sharded_config(alone_dir, make_config, tiny_model, seed_tasks, 2)
    [alone] = run_shards(cfg, alone_dir, [0])
    for name in PHASE_FILES:
        assert (Path(cfg.out_dir) / name).read_bytes() == (ref / name).read_bytes(), name
    assert alone["generated"] == one["generated"] and alone["assessed"] == one["assessed"]
