"""Stage synthesize (ISHEEP.md stage facts 1, 2, 4): instructions -> responses -> self-assessment.

One model load serves all three phases (the reference loaded vLLM three times). Each phase
ends with an atomic JSONL file and a `_SUCCESS.<phase>` manifest whose fingerprint chains the
previous phase's output checksum, so a restarted pod resumes at the phase it stopped in and
a changed setting recomputes only the phases it affects (assessment settings do not redo
generation). The engine is not part of any fingerprint: vLLM and transformers run the same
prompts and sampling, and a node that falls back from one to the other should not discard
finished work.

assessments.jsonl holds every pair. With filter.rules on, pairs the rule filter drops are
not judged (the paper filters by rules BEFORE assessment); they carry `ruleReason` and no
scores, and curate drops them for that reason. "assessed" counts the judged pairs, the pairs
that enter the score filter (the base of keepRate, as in the reference log "5,875 pairs
entered the score filter, 3,037 kept").

Units of work, and shards (docs/cost.md, "Sharded generation"). The request stream is
global: request r draws its examples and sampling seed from (randomSeed, iteration, r), never
from a shard. Phase A works in blocks of B requests (one engine call each; B is fixed in
<outDir>/blocks/<fp>/plan.json by the first worker), phases B and C in chunks of C
instructions; every unit is defined by its global index, so its output is the same whichever
worker computes it. Workers claim units by creating `claims/<fp>/<a|b|c>-<n>` with O_EXCL
(content: the shard index) and write `blocks/<fp>/<a|b|c>-<n>.jsonl` atomically. Phase A
keeps the first dataSize instructions that survive the global ROUGE-L dedup over the
contiguous prefix of finished blocks, in (request, position) order, so the kept list is a
pure function of the block files. StageConfig.shard.count = K > 1 (an Indexed Job; the index
from the config or JOB_COMPLETION_INDEX, or K local processes) just runs K workers on the same
<outDir>; K = 1 is the same algorithm with one worker, and every K writes the same bytes.
A worker that restarts under its index redoes the units it had claimed and not finished; a
claim whose file stops being touched (a heartbeat every few seconds) for
SHEEPDOG_CLAIM_STALE_SECONDS is taken over, so any one worker can finish the stage alone.
Each shard's summary counts the kept instructions and judged pairs of the units it claimed
(they add up over the shards, as the operator merges an Indexed Job's summaries); the
`_SUCCESS` manifest holds the totals.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Optional

from sheepdog.stage_config import StageConfig
from sheepdog_jobs import engine_feed, samples, storage
from sheepdog_jobs.engines import Engine, create_engine, resolve_engine
from sheepdog_jobs.judgement_decode import generate_judgements
from sheepdog_jobs.parsing import INSTRUCTION_PARSERS, SCORE_PARSERS
from sheepdog_jobs.prompts import (build_assessment_prompt, build_instruction_request, build_response_prompt,
                                   response_template)
from sheepdog_jobs.rouge import FastDedup
from sheepdog_jobs.rules import clean_output, rule_reason
from sheepdog_jobs.scores import logprob_score
from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks
from sheepdog_jobs.stages.common import (StageError, check_file, check_served, derive_seed,
                                         log, mean, progress, settings_dump, shard_of)

PHASES = ("instructions", "responses", "assessments")
UNIT = {"instructions": "a", "responses": "b", "assessments": "c"}  # unit file prefixes
TASKS_PER_REQUEST = 20  # the Alpaca meta prompt asks for 20 tasks (5 shown + 15 new)
# The authors' scripts stop a request when the model writes "17" (the 17th item's number) and
# drop the last parsed item: at most 10 new items a request with 5 examples (6..16, minus one).
STOP_ITEM = 17
# Requests per block (one engine call) in phase A: big batches keep a GPU busy; on CPU a
# batch is minutes of work and a block beyond dataSize wastes it.
BATCH = {"vllm": 256, "transformers": 8}
CHUNK = {"vllm": 512, "transformers": 16}  # instructions per unit in phases B and C
PLAN = "plan.json"
# Settings added after runs were fingerprinted: left out of a fingerprint while at their default.
ADDED_SYNTHESIS = ("later_response_prompt", "response_stop", "instruction_parser", "dedup_scope", "dedup_window",
                   "seed_scope")
# decode: "score" gives the scores of "full" (judgement_decode), so runs from before it keep
# their fingerprints (and their full-length judgements).
ADDED_ASSESSMENT = ("prompt_tail", "decode", "score_max_tokens")
SAMPLES_DIR = "samples"  # one file per phase, written by the worker that computes its first unit
POLL_ENV, STALE_ENV = "SHEEPDOG_SHARD_POLL_SECONDS", "SHEEPDOG_CLAIM_STALE_SECONDS"


def poll_seconds() -> float:
    return float(os.environ.get(POLL_ENV, "2"))


def stale_seconds() -> float:
    return float(os.environ.get(STALE_ENV, "300"))


def phase_file(phase: str) -> str:
    return f"{phase}.jsonl"


def phase_manifest(phase: str) -> str:
    return f"{storage.MANIFEST}.{phase}"


# ---- units and claims: how workers share a phase through the output directory ----------------
def create_exclusive(path: Path, text: str) -> bool:
    """Create path with text unless it exists (O_CREAT|O_EXCL: atomic, on NFS v3+ as well)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def publish_once(path: Path, text: str) -> str:
    """Write path unless it exists, never half-written (a complete temp file, hard-linked into
    place); returns the content that won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        storage.atomic_write_text(tmp, text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        except OSError:  # no hard links here (SMB): O_EXCL, and readers wait for the content
            create_exclusive(path, text)
        finally:
            tmp.unlink(missing_ok=True)
    for _ in range(50):
        content = path.read_text(encoding="utf-8")
        if content.endswith("\n"):
            return content
        time.sleep(0.1)
    return content


class Heartbeat:
    """Touches the claims this process is working on, so other workers see they are alive."""

    def __init__(self, interval: float):
        self.interval = interval
        self.paths: set[Path] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def add(self, path: Path) -> None:
        with self.lock:
            self.paths.add(path)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)
                self.thread.start()

    def discard(self, path: Path) -> None:
        with self.lock:
            self.paths.discard(path)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                paths = list(self.paths)
            for p in paths:
                try:
                    os.utime(p)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped.set()


class Units:
    """The units n = 0, 1, ... of one phase under one fingerprint: claims and outputs."""

    def __init__(self, out: Path, phase: str, fp: str, shard: int, heartbeat: Heartbeat):
        self.letter, self.shard, self.heartbeat = UNIT[phase], shard, heartbeat
        self.claims = out / "claims" / fp[:16]
        self.outputs = out / "blocks" / fp[:16]
        self.held: set[int] = set()
        self.seen: dict[int, tuple[int, float]] = {}  # n -> (claim mtime, when we first saw it)

    def claim_path(self, n: int) -> Path:
        return self.claims / f"{self.letter}-{n}"

    def output_path(self, n: int) -> Path:
        return self.outputs / f"{self.letter}-{n}.jsonl"

    def done(self, n: int) -> bool:
        return self.output_path(n).exists()

    def read(self, n: int) -> list[dict]:
        return storage.read_jsonl(self.output_path(n))

    def owner(self, n: int) -> Optional[int]:
        try:
            return int(self.claim_path(n).read_text().strip())
        except (OSError, ValueError):
            return None

    def try_claim(self, n: int) -> bool:
        """True when unit n is this worker's to compute now: unclaimed (claimed here, O_EXCL),
        claimed under this shard index by an earlier run of it (a restarted pod), or claimed by
        a worker whose heartbeat stopped (taken over)."""
        if self.done(n) or n in self.held:
            return False
        path = self.claim_path(n)
        if create_exclusive(path, str(self.shard)):
            return self._hold(n)
        if self.owner(n) == self.shard:
            log.info("unit %s-%d: claimed by an earlier run of shard %d, redoing it", self.letter, n, self.shard)
            return self._hold(n)
        if self._stale(n):
            try:  # only one worker wins the rename
                os.rename(path, path.with_name(f"{path.name}.stale-{self.shard}-{uuid.uuid4().hex[:8]}"))
            except FileNotFoundError:
                return False
            if create_exclusive(path, str(self.shard)):
                log.warning("unit %s-%d: its claim was not renewed for %.0f s; taken over by shard %d",
                            self.letter, n, stale_seconds(), self.shard)
                return self._hold(n)
        return False

    def _hold(self, n: int) -> bool:
        self.held.add(n)
        self.heartbeat.add(self.claim_path(n))
        return True

    def _stale(self, n: int) -> bool:
        # Compared with this worker's own clock only: pods' clocks need not agree.
        try:
            mtime = self.claim_path(n).stat().st_mtime_ns
        except OSError:
            return False
        now, prev = time.monotonic(), self.seen.get(n)
        if prev is None or prev[0] != mtime:
            self.seen[n] = (mtime, now)
            return False
        return now - prev[1] > stale_seconds()

    def finish(self, n: int, records: Iterable[dict]) -> None:
        storage.write_jsonl(self.output_path(n), records)
        self.held.discard(n)
        self.heartbeat.discard(self.claim_path(n))

    def release(self, n: int) -> None:
        """Give up a claimed unit without computing it (no longer needed)."""
        self.held.discard(n)
        self.heartbeat.discard(self.claim_path(n))
        self.claim_path(n).unlink(missing_ok=True)

    def run_all(self, count: int, compute: Callable[[int], list[dict]]) -> list[dict]:
        """Every unit 0..count-1 done (computing the unclaimed ones, lowest first, and waiting
        for those others hold); their records in unit order."""
        return self.run_fed(count, lambda n: None, lambda n, _: compute(n), depth=1)

    def run_fed(self, count: int, submit: Callable[[int], object], records: Callable[[int, object], list[dict]],
                depth: int = engine_feed.DEPTH) -> list[dict]:
        """run_all with up to ``depth`` units submitted to the engine at once (engine_feed.py):
        ``submit(n)`` queues unit n's requests, ``records(n, handle)`` collects them."""
        def pick(_in_flight: int) -> Optional[int]:
            return next((n for n in range(count) if self.try_claim(n)), None)

        engine_feed.feed(pick, submit, lambda n, h: self.finish(n, records(n, h)),
                         complete=lambda: all(self.done(n) for n in range(count)),
                         wait=lambda: time.sleep(poll_seconds()), depth=depth)
        return [r for n in range(count) for r in self.read(n)]


# ---- phase A's merge: a pure function of the block files ----------------------------------
def block_requests(block: int, size: int, max_requests: int) -> range:
    return range(block * size, min((block + 1) * size, max_requests))


def block_count(size: int, max_requests: int) -> int:
    return math.ceil(max_requests / size)


def chunk_count(records: int, size: int) -> int:
    return math.ceil(records / size)


class PrefixMerge:
    """The dedup over blocks 0, 1, ... in order: each candidate, in (request r, position j)
    order, is kept when its ROUGE-L against the seeds and every instruction kept before it is
    at most the threshold, until `target` are kept.

    ``window`` (synthesis.dedupScope: window): the pool is the seeds and the instructions kept
    in the current window only; a window closes after the request that brings it to ``window``
    kept instructions. The authors' scripts compare within one generation call (seeds + the
    ~100 instructions it keeps; it stops after the batch of requests that reaches 100)."""

    def __init__(self, seed_instructions: Iterable[str], threshold: float, target: int, id_prefix: str,
                 window: int | None = None):
        self.seeds, self.threshold, self.window = list(seed_instructions), threshold, window
        self.dedup = FastDedup(self.seeds, threshold=threshold)
        self.window_start = 0  # len(kept) when the current window opened
        self.target, self.id_prefix = target, id_prefix
        self.kept: list[dict] = []
        self.dropped: Counter = Counter()
        self.blocks = self.requests = 0

    @property
    def full(self) -> bool:
        return len(self.kept) >= self.target

    def add(self, lines: list[dict]) -> None:
        for line in sorted(lines, key=lambda x: x["r"]):
            self.requests += 1
            self.dropped.update(line.get("dropped") or {})
            for c in sorted(line["candidates"], key=lambda x: x["j"]):
                if self.full:
                    self.dropped["over_target"] += 1
                elif self.dedup.add_if_novel(c["instruction"]):
                    self.kept.append({"id": f"{self.id_prefix}{len(self.kept):06d}", "instruction": c["instruction"],
                                      "input": c["input"], "request": line["r"]})
                else:
                    self.dropped["rouge_similar"] += 1
            if self.window is not None and len(self.kept) - self.window_start >= self.window:
                self.window_start = len(self.kept)  # a new window: the seeds only
                self.dedup = FastDedup(self.seeds, threshold=self.threshold)
        self.blocks += 1


def merge_blocks(seed_instructions: Iterable[str], blocks: Iterable[list[dict]], threshold: float, target: int,
                 id_prefix: str, window: int | None = None) -> PrefixMerge:
    """Merge blocks 0, 1, ... until `target` instructions are kept (later blocks are not read)."""
    merge = PrefixMerge(seed_instructions, threshold, target, id_prefix, window)
    for lines in blocks:
        if merge.full:
            break
        merge.add(lines)
    return merge


def candidates_of(lines: list[dict]) -> int:
    return sum(len(line["candidates"]) for line in lines)


class Synthesis:
    def __init__(self, config: StageConfig):
        self.config = config
        self.spec = config.spec
        self.out = Path(config.out_dir)
        self.engine_name = resolve_engine(self.spec.engine)
        self.engine: Engine | None = None
        self.engine_model: str | None = None  # the model self.engine holds
        self.model_loads = 0
        self.served_adapters: list[str] = []  # training.merge: false: adapters served over their base
        self.closed_tokens = (0, 0)  # (prompt, generated) tokens of engines closed before this one
        # assessment.judge: the model that self-assesses (StageConfig.judgeModel; an older
        # config without it: the generator, the paper's Algorithm 1).
        self.judge_model = config.judge_model or config.generator_model
        self.reused: list[str] = []
        self.heartbeat = Heartbeat(interval=max(0.2, min(10.0, stale_seconds() / 5)))

    # ---- inputs, checked before anything is loaded or written --------------------------------
    def validate(self) -> None:
        # Every shard works in <outDir> itself: the units it computes are the same whichever
        # shard computes them (module docstring).
        self.shard, self.count = shard_of(self.config)
        # seedFile unset (spec.seed.path null): the 175 Self-Instruct tasks shipped with this package
        self.seed_file = self.config.seed_file or str(SELF_INSTRUCT_SEED_TASKS)
        check_file(self.seed_file, "seedFile")
        self.seeds = load_seed_tasks(self.seed_file)
        self.check_heldout()
        k = self.spec.seed.examples_per_request
        if k >= TASKS_PER_REQUEST:
            raise StageError(f"seed.examplesPerRequest={k} must be below {TASKS_PER_REQUEST}")
        check_served(self.config.generator_model, "generatorModel")
        if self.config.data_size < 1:
            raise StageError(f"dataSize must be >= 1, got {self.config.data_size}")
        s, a = self.spec.synthesis, self.spec.assessment
        # No shard index or count here: the result does not depend on them.
        base = {
            "stage": "synthesize", "iteration": self.config.iteration, "dataSize": self.config.data_size,
            "generator": storage.model_identity(self.config.generator_model),
            "chatTemplate": self.spec.model.chat_template,
            "examplesPerRequest": k, "synthesis": settings_dump(s, ADDED_SYNTHESIS),
            "stop": self.stop_strings(), "dropLast": s.drop_last_item,
            # dtype or quantization change the samples; only when set, so that the
            # fingerprints of runs without engineArgs stay as they were
            **({"engineArgs": self.spec.engine_args} if self.spec.engine_args else {}),
        }
        self.fp = {"instructions": storage.fingerprint(base, [self.seed_file])}
        if self.judge_model != self.config.generator_model and a.criteria:
            check_served(self.judge_model, "judgeModel")
        self.settings = {
            "responses": {},
            "assessments": {"assessment": settings_dump(a, ADDED_ASSESSMENT), "rules": self.spec.filter.rules,
                            **({"ruleSet": self.spec.filter.rule_set} if self.spec.filter.rule_set != "sheepdog"
                               else {}),
                            # Only a judge other than the generator is named, so that the
                            # fingerprints of runs judged by M_t stay what they were.
                            **({"judge": storage.model_identity(self.judge_model)}
                               if self.judge_model != self.config.generator_model else {})},
        }

    def check_heldout(self) -> None:
        """Fail before any work when the held-out set the run evaluates on shares tasks with
        its seeds (synthesize is where a run starts; evaluate checks again)."""
        from sheepdog_jobs.evaluation.heldout import HeldoutOverlap, check_disjoint, heldout_file

        path = heldout_file(self.spec, self.config.root)
        if path is None:
            return
        check_file(path, "evaluation.heldoutFile")
        try:
            check_disjoint(path, self.seed_file, self.spec.synthesis.rouge_l_max)
        except HeldoutOverlap as exc:
            raise StageError(str(exc)) from None

    def phase_fp(self, phase: str) -> str:
        i = PHASES.index(phase)
        if i == 0:
            return self.fp[phase]
        prev = PHASES[i - 1]
        return storage.fingerprint({"phase": phase, "prev": self.phase_fp(prev), **self.settings[phase]},
                                   [self.out / phase_file(prev)])

    def plan_path(self) -> Path:
        return self.out / "blocks" / self.phase_fp("instructions")[:16] / PLAN

    def plan(self) -> dict:
        """Block and chunk sizes, fixed by the first worker (from its engine) for all of them:
        the composition of every engine call is then the same for every shard count."""
        if not hasattr(self, "_plan"):
            text = publish_once(self.plan_path(), storage.dumps_line(
                {"block": BATCH[self.engine_name], "chunk": CHUNK[self.engine_name]}) + "\n")
            plan = json.loads(text)
            if not all(isinstance(plan.get(k), int) and plan[k] >= 1 for k in ("block", "chunk")):
                raise StageError(f"{self.plan_path()}: not a valid plan: {text.strip()!r}")
            self._plan = plan
        return self._plan

    def units(self, phase: str) -> Units:
        return Units(self.out, phase, self.phase_fp(phase), self.shard, self.heartbeat)

    # ---- engine: loaded on first use, at most once -------------------------------------------
    def get_engine(self, model: str | None = None) -> Engine:
        """The engine holding ``model`` (default: the generator). A judge other than the
        generator (assessment.judge: base) replaces it: phases run in order, so the generator
        is not needed again, and two large models need not fit at once."""
        model = model or self.config.generator_model
        if self.engine is not None and self.engine_model != model:
            self.closed_tokens = self.tokens()
            self.engine.close()
            self.engine = None
        if self.engine is None:
            log.info("loading %s with engine %s", model, self.engine_name)
            started = time.monotonic()
            self.engine_model = model
            self.model_loads += 1
            self.engine = create_engine(
                self.engine_name, model, self.spec.model.chat_template,
                seed=self.spec.synthesis.random_seed,
                tensor_parallel=self.spec.stages.synthesize.tensor_parallel,
                engine_args=self.spec.engine_args,
                request_seeds=self.spec.synthesis.seed_scope == "request",
            )
            # Imports included: that is what a stage start costs.
            self.engine.load_seconds = time.monotonic() - started
            if self.engine.adapter and self.engine.adapter not in self.served_adapters:
                self.served_adapters.append(self.engine.adapter)
            log.info("model loaded in %.1f s", self.engine.load_seconds)
        return self.engine

    def tokens(self) -> tuple[int, int]:
        """(prompt, generated) tokens this worker's engines have processed so far."""
        e = self.engine
        now = (e.prompt_tokens, e.generated_tokens) if e is not None else (0, 0)
        return self.closed_tokens[0] + now[0], self.closed_tokens[1] + now[1]

    # ---- phase A: instructions ---------------------------------------------------------------
    def max_requests(self) -> int:
        return self.spec.synthesis.max_requests or self.config.data_size

    def stop_strings(self) -> list[str]:
        """The stop string of an instruction request: the number of item STOP_ITEM, unless the
        examples alone reach it (then the model's first own item would already stop it)."""
        k = min(self.spec.seed.examples_per_request, len(self.seeds))
        return [str(STOP_ITEM)] if k + 1 < STOP_ITEM else []

    def feed_depth(self) -> int:
        """Units submitted to the engine at once (engine_feed.py): vLLM batches continuously, so
        the next unit fills what a draining one frees; transformers runs a call at a time."""
        return engine_feed.DEPTH if self.engine_name == "vllm" else 1

    def submit_block(self, block: int):
        """Queue block `block` of the global request stream in the engine (block_lines collects it)."""
        s, it = self.spec.synthesis, self.config.iteration
        k = min(self.spec.seed.examples_per_request, len(self.seeds))
        requests = block_requests(block, self.plan()["block"], self.max_requests())
        prompts, seeds = [], []
        for r in requests:
            rng = random.Random(derive_seed(s.random_seed, it, "examples", r))
            # No Output sections, as the I-SHEEP scripts: responses are generated zero-shot
            # in phase B, and examples' outputs would cost tokens and invite long items.
            prompts.append(build_instruction_request(rng.sample(self.seeds, k), num_tasks=TASKS_PER_REQUEST,
                                                     include_output=False))
            seeds.append(derive_seed(s.random_seed, it, "request", r))
        handle = self.get_engine().submit(prompts, temperature=s.temperature, top_p=s.top_p,
                                          max_tokens=s.max_tokens, seed=seeds, stop=self.stop_strings())
        return requests, prompts, handle

    def block_lines(self, block: int, submitted) -> list[dict]:
        """Per request of a submitted block, its candidates (position j) after the checks that
        look at one candidate only, and what those checks dropped."""
        s = self.spec.synthesis
        k = min(self.spec.seed.examples_per_request, len(self.seeds))
        requests, prompts, handle = submitted
        outs = self.get_engine().collect(handle)
        if block == 0:
            self.write_phase_samples("instructions", self.config.generator_model, prompts, outs)
        parse = INSTRUCTION_PARSERS[s.instruction_parser]
        lines = []
        for r, out in zip(requests, outs):
            batch = parse(out.text, first_index=k + 1, truncated=out.finish_reason == "length",
                          drop_last=s.drop_last_item == "always")
            lines.append({"r": r, "dropped": dict(batch.dropped),
                          "candidates": [{"j": j, "instruction": t.instruction, "input": t.input}
                                         for j, t in enumerate(batch.tasks)]})
        return lines

    def next_block(self, units: Units, merge: PrefixMerge, blocks: int, pending: dict[int, int],
                   in_flight: float = 0.0) -> Optional[int]:
        """The lowest block this worker should compute now, or None (wait). Blocks past the
        point where the finished ones (and ``in_flight``: the candidates expected of this
        worker's submitted blocks) could already hold dataSize are not started."""
        optimistic = len(merge.kept) + in_flight
        for b in range(merge.blocks, blocks):
            if units.done(b):
                if b not in pending:
                    pending[b] = candidates_of(units.read(b))
                optimistic += pending[b]
            elif optimistic >= merge.target:
                return None
            elif units.try_claim(b):
                return b
        return None

    def instructions(self) -> tuple[list[dict], dict]:
        s, it = self.spec.synthesis, self.config.iteration
        size, max_requests = self.plan()["block"], self.max_requests()
        blocks = block_count(size, max_requests)
        units = self.units("instructions")
        merge = PrefixMerge((t.instruction for t in self.seeds), s.rouge_l_max, self.config.data_size, f"i{it}-",
                            s.dedup_window if s.dedup_scope == "window" else None)
        pending: dict[int, int] = {}  # finished blocks past the prefix -> their candidates
        yields: list[int] = []  # candidates of the blocks this worker finished
        bar = progress(total=self.config.data_size, desc="instructions", unit="instr")

        def complete() -> bool:
            while merge.blocks < blocks and not merge.full and units.done(merge.blocks):
                pending.pop(merge.blocks, None)
                before = len(merge.kept)
                merge.add(units.read(merge.blocks))
                bar.update(len(merge.kept) - before)
            return merge.full or merge.blocks >= blocks

        def pick(in_flight: int) -> Optional[int]:
            expected = in_flight * (sum(yields) / len(yields) if yields else 0.0)
            return self.next_block(units, merge, blocks, pending, expected)

        def finish(b: int, submitted) -> None:
            lines = self.block_lines(b, submitted)
            yields.append(candidates_of(lines))
            units.finish(b, lines)

        def cancel(b: int, submitted) -> None:  # dataSize reached with this block in the engine
            self.get_engine().cancel(submitted[2])
            units.release(b)

        # others may be computing the blocks before ours: wait for them
        engine_feed.feed(pick, self.submit_block, finish, complete, wait=lambda: time.sleep(poll_seconds()),
                         cancel=cancel, depth=self.feed_depth())
        bar.close()
        kept = merge.kept
        if not kept:
            raise StageError(f"no instruction survived parsing and filtering after {merge.requests} requests "
                             f"(drops: {dict(merge.dropped)}); raise synthesis.maxRequests or check the model")
        if len(kept) < self.config.data_size:
            log.warning("kept %d of %d instructions after maxRequests=%d", len(kept), self.config.data_size,
                        max_requests)
        return kept, {"requests": merge.requests, "dropped": dict(merge.dropped), "block": size,
                      "blocks": merge.blocks}

    # ---- phase B: zero-shot responses --------------------------------------------------------
    def responses(self, records: list[dict]) -> tuple[list[dict], dict]:
        s, it, size = self.spec.synthesis, self.config.iteration, self.plan()["chunk"]
        bar = progress(total=len(records), desc="responses", unit="resp")

        # The iteration's template: synthesis.laterResponsePrompt from iteration 2 on, if set.
        template = response_template(s, it)

        def submit(c: int):
            chunk = records[c * size:(c + 1) * size]
            prompts = [build_response_prompt(r["instruction"], r["input"], template) for r in chunk]
            return chunk, prompts, self.get_engine().submit(
                prompts, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                seed=[derive_seed(s.random_seed, it, "response", r["id"]) for r in chunk],
                stop=list(s.response_stop))

        def collect(c: int, submitted) -> list[dict]:
            chunk, prompts, handle = submitted
            outs = self.get_engine().collect(handle)
            if c == 0:
                self.write_phase_samples("responses", self.config.generator_model, prompts, outs)
            bar.update(len(chunk))
            return [{**r, "output": o.text, "finishReason": o.finish_reason, "outputTokens": o.num_tokens}
                    for r, o in zip(chunk, outs)]

        out_records = self.units("responses").run_fed(chunk_count(len(records), size), submit, collect,
                                                      depth=self.feed_depth())
        bar.close()
        truncated = sum(r["finishReason"] == "length" for r in out_records)
        return out_records, {"truncatedResponses": truncated}

    # ---- phase C: self-assessment ------------------------------------------------------------
    def assess_chunk(self, chunk: list[dict], first: bool = False) -> list[dict]:
        a, it, f = self.spec.assessment, self.config.iteration, self.spec.filter
        out = []
        for r in chunk:
            if f.rules:
                # The authors' rule set first strips a leading "答案:" from the output; the judge
                # and training see the stripped output, as in the scripts.
                r = {**r, "output": clean_output(f.rule_set, r["output"])}
            reason = rule_reason(f.rule_set, r["instruction"], r["input"], r["output"]) if f.rules else None
            out.append({**r, "ruleReason": reason, "scores": {}})
        todo = [r for r in out if r["ruleReason"] is None]
        if not (a.criteria and todo):
            return out
        jobs = [(r, c) for r in todo for c in a.criteria]
        prompts = [build_assessment_prompt(a.prompt, c, r["instruction"], r["input"], r["output"],
                                           rubric_first=a.rubric_first, tail=a.prompt_tail) for r, c in jobs]
        engine = self.get_engine(self.judge_model)
        if a.scoring == "text":
            # parse strict reads the leading number: decode: score stops there (judgement_decode)
            outs, cost = generate_judgements(
                engine, prompts, temperature=a.temperature, top_p=self.spec.synthesis.top_p,
                max_tokens=a.max_tokens, decode=a.decode if a.parse == "strict" else "full",
                score_max_tokens=a.score_max_tokens,
                seeds=[derive_seed(self.spec.synthesis.random_seed, it, "assess", c, r["id"]) for r, c in jobs])
            log.info("assessments: %d judgements, %d decoded again in full, %d tokens", len(outs),
                     cost["fullDecodes"] if cost["shortDecodes"] else 0, cost["judgementTokens"])
            if first:
                self.write_phase_samples("assessments", self.judge_model, prompts, outs,
                                         phases=[f"assessment:{c}" for _, c in jobs])
            parse = SCORE_PARSERS[a.parse]
            for (r, c), o in zip(jobs, outs):
                r["scores"][c] = parse(o.text)
                r.setdefault("judgements", {})[c] = o.text  # kept raw, parsable or not
        else:
            scored = engine.score_digits(prompts)
            if first:  # the "output" of a logprob judgement: its distribution over the scores
                self.write_phase_samples("assessments", self.judge_model, prompts,
                                         [json.dumps({d: round(v, 4) for d, v in lps.items() if v > -1e30})
                                          for lps in scored],
                                         phases=[f"assessment:{c}" for _, c in jobs])
            for (r, c), lps in zip(jobs, scored):
                expected, argmax, mass = logprob_score(lps)
                r["scores"][c] = None if expected is None else round(expected, 4)
                r.setdefault("scoreDetail", {})[c] = {
                    "argmax": argmax, "mass": round(mass, 6),
                    # -inf (a probability of exactly 0) is not JSON: stored as None.
                    "logprobs": {d: (round(v, 4) if v > -1e30 else None) for d, v in lps.items()},
                }
        return out

    def judged(self, records: list[dict]) -> tuple[int, int]:
        """(judged pairs, judgements without a score) of these records."""
        criteria = list(self.spec.assessment.criteria)
        todo = [r for r in records if r.get("ruleReason") is None]
        failures = sum(r["scores"].get(c) is None for r in todo for c in criteria)
        return len(todo), failures

    def failures_by_rule(self, records: list[dict]) -> dict[str, int]:
        """Text scoring: the judgements each assessment.parse rule could not read, so a run
        shows what the other rule would have dropped ({} for logprobs scoring)."""
        if self.spec.assessment.scoring != "text":
            return {}
        texts = [t for r in records if r.get("ruleReason") is None for t in (r.get("judgements") or {}).values()]
        return {rule: sum(parse(t) is None for t in texts) for rule, parse in SCORE_PARSERS.items()}

    def assessments(self, records: list[dict]) -> tuple[list[dict], dict]:
        size = self.plan()["chunk"]
        bar = progress(total=len(records), desc="assessments", unit="pair")

        def compute(c: int) -> list[dict]:
            chunk = self.assess_chunk(records[c * size:(c + 1) * size], first=c == 0)
            bar.update(len(chunk))
            return chunk

        out = self.units("assessments").run_all(chunk_count(len(records), size), compute)
        bar.close()
        todo = [r for r in out if r["ruleReason"] is None]
        assessed, failures = self.judged(out)
        counts = {
            "assessed": assessed,
            "parseFailures": failures,
            "parseFailuresBy": self.failures_by_rule(out),
            "ruleDropped": dict(Counter(r["ruleReason"] for r in out if r["ruleReason"])),
            "meanQuality": mean(r["scores"].get("quality") for r in todo),
            "meanFollowing": mean(r["scores"].get("following") for r in todo),
        }
        return out, counts

    # ---- prompt samples (sheepdog_jobs.samples) ----------------------------------------------
    def write_phase_samples(self, phase: str, model: str, prompts: list[str], outs: list, *,
                            phases: list[str] | None = None) -> None:
        """The first samples.PER_PHASE prompts of each phase label (one label per prompt, or
        ``phase`` for all) to samples/<phase>.jsonl; called by the worker computing unit 0."""
        labels = phases or [phase] * len(prompts)
        lines = []
        for label in dict.fromkeys(labels):
            idx = [i for i, x in enumerate(labels) if x == label]
            lines += samples.sample_lines(label, self.config.iteration, model, self.engine,
                                          [prompts[i] for i in idx], [outs[i] for i in idx])
        storage.write_jsonl(self.out / SAMPLES_DIR / f"{phase}.jsonl", lines)

    def collect_samples(self) -> None:
        """prompts.sample.jsonl: the phases' samples in phase order (a phase whose first unit
        was computed by an older version has none)."""
        lines = []
        for phase in PHASES:
            path = self.out / SAMPLES_DIR / f"{phase}.jsonl"
            if path.is_file():
                lines += storage.read_jsonl(path)
        samples.write_samples(self.out, lines)

    # ---- driver ------------------------------------------------------------------------------
    def run_phase(self, phase: str, previous: list[dict] | None) -> tuple[list[dict], dict]:
        fp = self.phase_fp(phase)
        manifest = storage.verify_manifest(self.out, fp, phase_manifest(phase))
        if manifest is not None:
            log.info("phase %s: reusing checkpoint", phase)
            self.reused.append(phase)
            return storage.read_jsonl(self.out / phase_file(phase)), manifest["counts"]
        started = time.monotonic()
        before = self.tokens()
        records, counts = getattr(self, phase)(*(() if previous is None else (previous,)))
        after = self.tokens()
        # The tokens this worker's engine processed for the phase (sharded: its own units).
        counts = {**counts, "records": len(records), "seconds": round(time.monotonic() - started, 2),
                  "promptTokens": after[0] - before[0], "generatedTokens": after[1] - before[1]}
        # Every worker writes the same bytes here (a pure function of the unit files).
        storage.write_jsonl(self.out / phase_file(phase), records)
        storage.write_manifest(self.out, [phase_file(phase)], fp, counts=counts, name=phase_manifest(phase))
        log.info("phase %s: %d records in %.1f s", phase, len(records), counts["seconds"])
        return records, counts

    def final_fp(self) -> str | None:
        # Chains every phase (and so every input); None while a phase file is missing.
        try:
            return self.phase_fp("assessments")
        except OSError:
            return None

    def own_share(self, summary: dict) -> dict:
        """Sharded: this shard's summary counts the kept instructions of the blocks it claimed
        and the judged pairs of the chunks it claimed, so the shards' summaries add up to the
        totals (kube/observe.py merges an Indexed Job's summaries by summing). Units whose claim
        cannot be read count for shard 0. Means stay the totals' (a weighted mean of equal
        values is that value)."""
        if self.count == 1:
            return summary
        try:
            plan = self.plan()
            a_units, c_units = self.units("instructions"), self.units("assessments")
            instructions = storage.read_jsonl(self.out / phase_file("instructions"))
            assessments = storage.read_jsonl(self.out / phase_file("assessments"))
        except (OSError, ValueError, StageError) as exc:
            log.warning("cannot attribute work to shards (%s): shard 0 reports the totals", exc)
            mine = self.shard == 0
            return {**summary, **({} if mine else {"generated": 0, "assessed": 0, "parseFailures": 0}),
                    "shard": self.shard, "shards": self.count}

        def ours(units: Units, n: int, owners: dict) -> bool:
            if n not in owners:
                owners[n] = units.owner(n) or 0
            return owners[n] == self.shard

        a_owner: dict[int, int] = {}
        c_owner: dict[int, int] = {}
        generated = sum(ours(a_units, r["request"] // plan["block"], a_owner) for r in instructions)
        mine = [r for i, r in enumerate(assessments) if ours(c_units, i // plan["chunk"], c_owner)]
        assessed, failures = self.judged(mine)
        return {**summary, "generated": generated, "assessed": assessed, "parseFailures": failures,
                "parseFailuresBy": self.failures_by_rule(mine), "shard": self.shard, "shards": self.count}

    def run(self) -> dict:
        self.validate()
        fp = self.final_fp()
        done = storage.verify_manifest(self.out, fp) if fp else None
        if done is not None:
            return self.own_share({**done["summary"], "skipped": True})
        self.out.mkdir(parents=True, exist_ok=True)
        records, counts = None, {}
        try:
            for phase in PHASES:
                records, counts[phase] = self.run_phase(phase, records)
        finally:
            self.heartbeat.stop()
            if self.engine is not None:
                self.engine.close()
        self.collect_samples()
        e, c, s, f = self.engine, counts["assessments"], self.spec.synthesis, self.spec.filter
        parser_dropped = {k: v for k, v in counts["instructions"]["dropped"].items()
                          if k not in ("rouge_similar", "over_target")}
        summary = {
            "generated": counts["instructions"]["records"],
            "assessed": c["assessed"], "parseFailures": c["parseFailures"],
            "parseFailuresBy": c.get("parseFailuresBy", {}),
            "meanQuality": c["meanQuality"], "meanFollowing": c["meanFollowing"],
            "modelLoads": self.model_loads, "engine": self.engine_name,
            "requests": counts["instructions"]["requests"],
            "dropped": {**counts["instructions"]["dropped"],
                        **{f"rule_{k}": v for k, v in c["ruleDropped"].items()}},
            "resumedPhases": self.reused,
            # What decided this iteration's data, with what each dropped (issue: reproductions
            # must show the scripts' parser and rules were in effect).
            "instructionParser": s.instruction_parser, "parserDropped": parser_dropped,
            "dedupScope": s.dedup_scope if s.dedup_scope == "global" else f"window:{s.dedup_window}",
            "ruleSet": f.rule_set if f.rules else "off", "ruleDropped": c["ruleDropped"],
            **({"servedAdapters": self.served_adapters} if self.served_adapters else {}),
            # Per phase, the prompt and generated tokens (a phase reused from its checkpoint:
            # the figures of the attempt that computed it).
            "tokens": {p: {"prompt": counts[p].get("promptTokens"), "generated": counts[p].get("generatedTokens")}
                       for p in PHASES},
        }
        if e is not None and e.generate_seconds:
            summary["tokensPerSecond"] = round(e.tokens_per_second, 1)
            summary["loadSeconds"] = round(e.load_seconds, 1)
        # The manifest holds the totals; several shards may write it, with the same files.
        storage.write_manifest(self.out, [phase_file(p) for p in PHASES], self.final_fp(),
                               counts={p: counts[p]["records"] for p in PHASES}, summary=summary)
        return self.own_share(summary)


def run(config: StageConfig) -> dict:
    return Synthesis(config).run()
