"""Sharded synthesize without a model: unit planning, the prefix merge, claims, and whole
stages with a deterministic fake engine run by 1, 2 or 3 workers at once (threads on one
output directory) -> byte-identical phase files. The tiny-model version is in
test_synthesize_model.py (test_sharded_*)."""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from pathlib import Path

import pytest

from sheepdog_jobs import storage
from sheepdog_jobs.engines.base import Completion, Engine
from sheepdog_jobs.stages import synthesize as syn
from sheepdog_jobs.stages.common import StageError

from .conftest import REPO

SEEDS = str(REPO / "examples" / "seeds" / "quickstart.jsonl")
PHASE_FILES = ("instructions.jsonl", "responses.jsonl", "assessments.jsonl")


# ---- planning ----------------------------------------------------------------------------------
def test_blocks_cover_the_request_stream_up_to_the_cap():
    assert syn.block_count(8, 20) == 3
    assert [list(syn.block_requests(b, 8, 20)) for b in range(3)] == [
        list(range(0, 8)), list(range(8, 16)), list(range(16, 20))]
    assert syn.block_count(8, 8) == 1 and syn.block_count(8, 1) == 1
    assert syn.chunk_count(33, 16) == 3 and syn.chunk_count(32, 16) == 2 and syn.chunk_count(1, 16) == 1


# ---- the prefix merge --------------------------------------------------------------------------
def line(r, *instructions, dropped=None):
    return {"r": r, "dropped": dropped or {},
            "candidates": [{"j": j, "instruction": text, "input": ""} for j, text in enumerate(instructions)]}


BLOCKS = [
    [line(0, "Write a poem about the sea at night.", "List three uses of baking soda in a kitchen."),
     line(1, "Write a poem about the sea at night!", dropped={"too_short": 2})],  # near-duplicate of r=0
    [line(2, "Explain how a bicycle gear works to a child.", "Name the capital city of Australia and why."),
     line(3, "Suggest names for a bakery that sells sourdough.")],
    [line(4, "Translate the sentence into French for a tourist.")],
]


def kept_of(merge):
    return [(k["request"], k["instruction"]) for k in merge.kept]


def test_merge_keeps_the_first_novel_in_request_then_position_order():
    merge = syn.merge_blocks(["Summarize the article in one sentence."], BLOCKS, 0.7, 4, "i1-")
    assert kept_of(merge) == [
        (0, "Write a poem about the sea at night."), (0, "List three uses of baking soda in a kitchen."),
        (2, "Explain how a bicycle gear works to a child."), (2, "Name the capital city of Australia and why.")]
    assert [k["id"] for k in merge.kept] == ["i1-000000", "i1-000001", "i1-000002", "i1-000003"]
    # block 2 is never read: the prefix 0..1 already holds dataSize
    assert merge.blocks == 2 and merge.requests == 4
    assert merge.dropped == {"rouge_similar": 1, "too_short": 2, "over_target": 1}


def test_merge_is_independent_of_the_order_lines_were_written_in():
    shuffled = [list(reversed([{**ln, "candidates": list(reversed(ln["candidates"]))} for ln in b])) for b in BLOCKS]
    a = syn.merge_blocks([], BLOCKS, 0.7, 10, "i1-")
    b = syn.merge_blocks([], shuffled, 0.7, 10, "i1-")
    assert a.kept == b.kept and a.dropped == b.dropped and len(a.kept) == 6


def test_merge_dedups_against_the_seeds_and_stops_short_when_blocks_run_out():
    merge = syn.merge_blocks(["Write a poem about the sea at night?"], BLOCKS, 0.7, 100, "i1-")
    assert "Write a poem about the sea at night." not in [k["instruction"] for k in merge.kept]
    assert merge.dropped["rouge_similar"] == 2 and merge.blocks == 3 and len(merge.kept) == 5
    assert not merge.full


# ---- claims ------------------------------------------------------------------------------------
def units(tmp_path, shard, phase="instructions"):
    return syn.Units(tmp_path, phase, "f" * 64, shard, syn.Heartbeat(0.05))


def test_a_unit_is_claimed_once_with_o_excl(tmp_path):
    u0, u1 = units(tmp_path, 0), units(tmp_path, 1)
    assert u0.try_claim(0) and not u1.try_claim(0)
    assert u0.claim_path(0).read_text() == "0" and u0.owner(0) == 0
    assert u0.claim_path(0) == tmp_path / "claims" / ("f" * 16) / "a-0"
    assert not u0.try_claim(0)  # already held here
    assert u1.try_claim(1) and u1.owner(1) == 1
    u0.finish(0, [{"x": 1}])
    assert (tmp_path / "blocks" / ("f" * 16) / "a-0.jsonl").is_file() and u1.read(0) == [{"x": 1}]
    assert not u1.try_claim(0) and not units(tmp_path, 0).try_claim(0)  # done: nobody computes it again


def test_a_restarted_shard_redoes_its_own_unfinished_claims_only(tmp_path):
    first = units(tmp_path, 1)
    assert first.try_claim(3)
    # the process dies; the same index starts again (the Job controller reuses the index)
    again = units(tmp_path, 1)
    assert again.try_claim(3)
    assert not units(tmp_path, 2).try_claim(3)  # another live shard leaves it alone


def test_a_claim_whose_heartbeat_stopped_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv(syn.STALE_ENV, "0.4")
    dead, alive = units(tmp_path, 1), units(tmp_path, 2)
    assert dead.try_claim(0)
    dead.heartbeat.discard(dead.claim_path(0))  # died: nothing touches its claim any more
    assert alive.try_claim(1)  # alive keeps its heartbeat (every 0.05 s)
    waiter = units(tmp_path, 0)
    assert not waiter.try_claim(0) and not waiter.try_claim(1)
    deadline = time.monotonic() + 5
    while not waiter.try_claim(0):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert waiter.owner(0) == 0
    time.sleep(0.6)
    assert not waiter.try_claim(1)  # its heartbeat kept it
    alive.heartbeat.stop()


def test_run_all_computes_the_free_units_and_waits_for_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv(syn.POLL_ENV, "0.02")
    other, mine = units(tmp_path, 1, "responses"), units(tmp_path, 0, "responses")
    assert other.try_claim(1)
    computed = []

    def finish_later():
        time.sleep(0.3)
        other.finish(1, [{"n": 1}])

    t = threading.Thread(target=finish_later)
    t.start()
    out = mine.run_all(3, lambda n: computed.append(n) or [{"n": n}])
    t.join()
    assert computed == [0, 2] and out == [{"n": 0}, {"n": 1}, {"n": 2}]


# ---- whole stages with a fake engine -----------------------------------------------------------
WORDS = ("river garden letter market winter planet engine orchard violin harbor lantern meadow "
         "castle bridge forest candle").split()
CANON = ["Describe a quiet morning in a small fishing village.",
         "Explain why the sky looks blue during the day."]


class FakeEngine(Engine):
    """Deterministic in (prompt, seed) only, like the real engines' per-request seeds."""

    name = "transformers"

    def __init__(self):
        super().__init__()
        self.loads = 1
        self.calls = []

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        self.calls.append(len(prompts))
        time.sleep(0.01)  # lets other workers interleave
        outs = []
        for p, s in zip(prompts, seed):
            rng = random.Random(s)
            if "Instruction:" not in p[-40:]:  # a response prompt
                outs.append(Completion(f"answer {rng.randrange(1000)}", "stop", 3))
                continue
            items = []
            for _ in range(3):
                text = rng.choice(CANON) if rng.random() < 0.3 else \
                    "Write about the " + " ".join(rng.sample(WORDS, 6)) + "."
                items.append(text)
            n = 4
            body = "".join(f"{' ' if i == 0 else f'{n + i}. Instruction: '}{t}\n{n + i}. Input:\n<noinput>\n"
                           f"{n + i}. Output:\nok\n###\n" for i, t in enumerate(items))
            outs.append(Completion(body, "stop", 50))
        # counted as the real engines count (a word a token here)
        self.prompt_tokens += sum(len(p.split()) for p in prompts)
        self.generated_tokens += sum(o.num_tokens for o in outs)
        return outs

    def score_digits(self, prompts):
        self.prompt_tokens += sum(len(p.split()) for p in prompts)
        out = []
        for p in prompts:
            h = hashlib.sha256(p.encode()).digest()
            w = [1 + b for b in h[:10]]
            out.append({str(d + 1): math.log(w[d] / sum(w)) for d in range(10)})
        return out

    def _digit_logprobs(self, jobs):
        raise NotImplementedError

    def perplexity(self, texts):
        raise NotImplementedError

    def embed(self, texts):
        raise NotImplementedError


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv(syn.POLL_ENV, "0.01")
    monkeypatch.setitem(syn.BATCH, "transformers", 2)  # small blocks and chunks: many units
    monkeypatch.setitem(syn.CHUNK, "transformers", 3)
    engines = []

    def create(name, model, template, **kw):
        engines.append(FakeEngine())
        return engines[-1]

    monkeypatch.setattr(syn, "create_engine", create)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return {"model": str(model), "engines": engines}


def stage(make_config, workdir, fake, shard=None, data_size=14):
    spec = {"engine": "transformers", "seed": {"examplesPerRequest": 2},
            "synthesis": {"dataSize": data_size, "maxRequests": 40}, "assessment": {"criteria": ["quality"]}}
    return make_config(workdir, "synthesize", spec=spec, model=fake["model"], seed_file=SEEDS,
                       **({"shard": shard} if shard else {}))


def run_workers(configs):
    results, errors = {}, []

    def work(i, cfg):
        try:
            results[i] = syn.run(cfg)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(configs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return [results[i] for i in range(len(configs))]


def files(out: Path) -> dict:
    return {name: (out / name).read_bytes() for name in PHASE_FILES}


def test_one_two_or_three_workers_write_the_same_bytes(tmp_path, make_config, fake):
    [one] = run_workers([stage(make_config, tmp_path / "k1", fake)])
    ref = files(tmp_path / "k1" / "i1" / "synthesize")
    kept = storage.read_jsonl(tmp_path / "k1" / "i1" / "synthesize" / "instructions.jsonl")
    assert one["generated"] == len(kept) == 14 and "shard" not in one
    assert one["dropped"]["rouge_similar"] >= 1  # the canonical repeats were deduplicated
    assert [k["id"] for k in kept] == [f"i1-{n:06d}" for n in range(14)]
    assert [k["request"] for k in kept] == sorted(k["request"] for k in kept)
    assert one["requests"] % 2 == 0  # whole blocks of B = 2
    for k in (2, 3):
        work = tmp_path / f"k{k}"
        summaries = run_workers([stage(make_config, work, fake, {"index": i, "count": k}) for i in range(k)])
        assert files(work / "i1" / "synthesize") == ref, k
        # each shard reports its part; the parts add up to the totals (as the operator sums them)
        assert [s["shard"] for s in summaries] == list(range(k)) and {s["shards"] for s in summaries} == {k}
        assert sum(s["generated"] for s in summaries) == one["generated"]
        assert sum(s["assessed"] for s in summaries) == one["assessed"]
        assert sum(s["parseFailures"] for s in summaries) == one["parseFailures"]
        assert {s["meanQuality"] for s in summaries} == {one["meanQuality"]}
        manifest = storage.read_manifest(work / "i1" / "synthesize")
        assert manifest["summary"]["generated"] == 14
    # every engine call in phase A had one block's requests (B = 2): the same batches for every K
    assert all(c in (2, 3) for e in fake["engines"] for c in e.calls)


def test_one_shard_of_three_finishes_alone(tmp_path, make_config, fake):
    run_workers([stage(make_config, tmp_path / "k1", fake)])
    [alone] = run_workers([stage(make_config, tmp_path / "k3", fake, {"index": 1, "count": 3})])
    assert files(tmp_path / "k3" / "i1" / "synthesize") == files(tmp_path / "k1" / "i1" / "synthesize")
    assert alone["generated"] == 14 and alone["shard"] == 1
    # a shard that starts after the end reuses everything, loads nothing, and reports no work
    n = len(fake["engines"])
    [late] = run_workers([stage(make_config, tmp_path / "k3", fake, {"index": 2, "count": 3})])
    assert late["skipped"] is True and late["generated"] == 0 and late["assessed"] == 0
    assert len(fake["engines"]) == n


def test_a_dead_shards_claim_is_taken_over(tmp_path, make_config, fake, monkeypatch):
    monkeypatch.setenv(syn.STALE_ENV, "0.3")
    run_workers([stage(make_config, tmp_path / "k1", fake)])
    cfg = stage(make_config, tmp_path / "k2", fake, {"index": 0, "count": 2})
    s = syn.Synthesis(cfg)
    s.validate()
    fp = s.phase_fp("instructions")[:16]
    claim = Path(cfg.out_dir) / "claims" / fp / "a-0"
    claim.parent.mkdir(parents=True)
    claim.write_text("1")  # shard 1 claimed block 0 and died
    [result] = run_workers([cfg])
    assert files(tmp_path / "k2" / "i1" / "synthesize") == files(tmp_path / "k1" / "i1" / "synthesize")
    assert claim.read_text() == "0" and result["generated"] == 14


def test_a_changed_setting_does_not_reuse_other_blocks(tmp_path, make_config, fake):
    work = tmp_path / "w"
    run_workers([stage(make_config, work, fake, data_size=6)])
    run_workers([stage(make_config, work, fake, data_size=8)])
    run_workers([stage(make_config, tmp_path / "fresh", fake, data_size=8)])
    assert files(work / "i1" / "synthesize") == files(tmp_path / "fresh" / "i1" / "synthesize")
    assert len(list((work / "i1" / "synthesize" / "claims").iterdir())) == 6  # 3 phases x 2 settings


def test_bad_plan_is_refused(tmp_path, make_config, fake):
    cfg = stage(make_config, tmp_path, fake)
    s = syn.Synthesis(cfg)
    s.validate()
    s.plan_path().parent.mkdir(parents=True)
    s.plan_path().write_text('{"block": 0, "chunk": 3}\n')
    with pytest.raises(StageError, match="not a valid plan"):
        s.plan()


# ---- keeping the engine fed (engine_feed.py) ---------------------------------------------------
class QueueingFake(FakeEngine):
    """submit() queues a unit, collect() answers it, as vLLM's continuous batching does; the
    events show whether the next unit was queued before the current one was collected."""

    def __init__(self):
        super().__init__()
        self.events = []
        self.cancelled = 0

    def submit(self, prompts, **sampling):
        self.events.append("submit")
        return (list(prompts), sampling)

    def collect(self, handle):
        self.events.append("collect")
        return super().collect(handle)

    def cancel(self, handle):
        self.cancelled += 1


@pytest.mark.parametrize("workers", [1, 2])
def test_a_fed_engine_writes_the_same_bytes(tmp_path, make_config, fake, monkeypatch, workers):
    run_workers([stage(make_config, tmp_path / "ref", fake)])  # one unit at a time (depth 1)
    ref = files(tmp_path / "ref" / "i1" / "synthesize")
    fed = []

    def create(name, model, template, **kw):
        fed.append(QueueingFake())
        return fed[-1]

    monkeypatch.setattr(syn, "create_engine", create)
    monkeypatch.setattr(syn.Synthesis, "feed_depth", lambda self: 2)
    work = tmp_path / "fed"
    shards = [{"index": i, "count": workers} for i in range(workers)] if workers > 1 else [None]
    summaries = run_workers([stage(make_config, work, fake, s) for s in shards])
    assert files(work / "i1" / "synthesize") == ref
    assert sum(s["generated"] for s in summaries) == 14
    # the next unit went into the engine before the one before it was collected
    events = [e for engine in fed for e in engine.events]
    assert any(a == b == "submit" for a, b in zip(events, events[1:])), events
    assert events.count("submit") == events.count("collect") + sum(e.cancelled for e in fed)
    # a block queued when the kept instructions reached dataSize is cancelled, its claim released
    claims = list((work / "i1" / "synthesize" / "claims").rglob("a-*"))
    blocks = list((work / "i1" / "synthesize" / "blocks").rglob("a-*.jsonl"))
    assert len(claims) == len(blocks), (claims, blocks)


def test_tokens_per_phase_are_in_the_summary_and_the_phase_manifests(tmp_path, make_config, fake):
    [summary] = run_workers([stage(make_config, tmp_path / "k1", fake)])
    out = tmp_path / "k1" / "i1" / "synthesize"
    for phase in syn.PHASES:
        counts = storage.read_manifest(out, syn.phase_manifest(phase))["counts"]
        assert counts["promptTokens"] == summary["tokens"][phase]["prompt"]
        assert counts["generatedTokens"] == summary["tokens"][phase]["generated"]
    # the fake engine reports 50 tokens an instruction request, 3 a response; judging generates none
    assert summary["tokens"]["instructions"]["generated"] == 50 * summary["requests"]
    assert summary["tokens"]["responses"]["generated"] == 3 * summary["generated"]
    assert summary["tokens"]["assessments"]["generated"] == 0
    assert all(summary["tokens"][p]["prompt"] > 0 for p in syn.PHASES)
