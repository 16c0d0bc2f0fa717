"""The content-addressed stage cache: which stage output is the same as another's, and what a
cache lookup decides (docs/stage-cache.md).

A stage's *key* is a hash of everything that determines its output:

- its inputs, by their own keys: the model it loads (the base model's identity for M_0, else
  the key of the train stage that wrote it), the data it reads (the keys of the upstream
  stages that wrote it), the seed tasks' fingerprint;
- exactly the spec settings that stage reads (synthesize: synthesis, assessment, the rule
  filter, ...; curate: the filter and threshold, ...; train: training; evaluate: evaluation),
  never another stage's (curate's threshold is not in synthesize's key);
- the iteration number (the stage programs seed their sampling with it).

So two runs that differ only in curate's threshold share synthesize's key and differ from
curate on; a changed synthesize setting changes every downstream key. The run's name, its
storage place and scheduling settings (deadlines, tolerations, retries) are not in any key.

Everything here is pure: the executors compute the inputs' identities (a seed file's content
hash locally, its path on a cluster, where the operator does not mount the volume) and read the
index (a directory locally, labelled ConfigMaps on a cluster); the planner asks `lookup`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.api.status import IterationRecord, RunStatus, StageRecord
from sheepdog.planner.actions import Event
from sheepdog.planner.lineage_policy import data_size
from sheepdog.planner.reasons import Reason
from sheepdog.planner.records import apply_summary, copy_figures, describe_summary, figures_of, stage_summary
from sheepdog.stage_config import Layout

CACHED_STAGES = ("synthesize", "curate", "train", "evaluate")
KEY_VERSION = 1  # bump when what a stage reads changes: old entries then simply miss

# The stage-resource fields that can change a stage's output (the engine's image, how many GPUs
# split the work, the shards' partition, a pod's env); scheduling fields (deadlines, tolerations,
# node selectors, retries, requests) cannot, so they do not split the cache.
_OUTPUT_RESOURCES = ("image", "gpus", "tensor_parallel", "shards", "nodes")


@dataclass(frozen=True)
class CacheInputs:
    """Identities of what a run reads from outside the cache: the base model (its reference:
    a path on the storage or a hub id) and the seed tasks (a content hash where the executor
    can read the file, else its path; "builtin" for the built-in Self-Instruct set)."""

    base_model: str
    seed: str


def _digest(parts: Mapping[str, Any]) -> str:
    text = json.dumps({"v": KEY_VERSION, **parts}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _dump(model: Any, *only: str) -> Any:
    data = model.model_dump(mode="json")
    return {k: data.get(k) for k in only} if only else data


def _resources(spec: RunSpec, stage: str) -> dict[str, Any]:
    res = spec.stages.of(stage)
    data = res.model_dump(mode="json")
    picked = {k: data[k] for k in _OUTPUT_RESOURCES if k in data}
    template = res.pod_template
    if template is not None and (template.env or template.env_from):  # env can change what a stage does
        picked["env"] = [template.env, template.env_from]
    return picked


def _common(spec: RunSpec) -> dict[str, Any]:
    """What every model-loading stage reads: the chat template and the engine."""
    return {"chatTemplate": spec.model.chat_template, "engine": spec.engine, "engineArgs": spec.engine_args}


class _Keys:
    """Keys of one run's stages, each computed once (a train key is an input of the next
    iteration's every key)."""

    def __init__(self, spec: RunSpec, inputs: CacheInputs):
        self.spec, self.inputs = spec, inputs
        self.memo: dict[tuple[int, str], str] = {}

    def model(self, iteration: int) -> str:
        """The model of `iteration`: M_0 is the base, M_t the output of train t."""
        if iteration == 0:
            return _digest({"base": self.inputs.base_model})
        return self.stage(iteration, "train")

    def generator(self, iteration: int) -> str:
        return self.model(0) if self.spec.training.strategy == "direct" else self.model(iteration - 1)

    def stage(self, iteration: int, stage: str) -> str:
        if stage not in CACHED_STAGES:
            raise ValueError(f"stage {stage!r} is not cached (cached: {', '.join(CACHED_STAGES)})")
        if iteration < 0 or (iteration == 0 and stage != "evaluate"):
            raise ValueError(f"iteration {iteration} has no {stage} stage")
        found = self.memo.get((iteration, stage))
        if found is None:
            found = self.memo[(iteration, stage)] = _digest(
                {"stage": stage, "iteration": iteration, **getattr(self, "_" + stage)(iteration)})
        return found

    def _synthesize(self, t: int) -> dict[str, Any]:
        s = self.spec
        generator = self.generator(t)
        judge = self.model(0) if s.assessment.judge == "base" else generator
        return {
            "generator": generator, "judge": judge, "seed": self.inputs.seed, "dataSize": data_size(s),
            "examplesPerRequest": s.seed.examples_per_request, "synthesis": _dump(s.synthesis),
            "assessment": _dump(s.assessment),
            # synthesize applies the rule filter before it assesses (curate re-applies it)
            "rules": _dump(s.filter, "rules", "rule_set"),
            "resources": _resources(s, "synthesize"), **_common(s),
        }

    def _curate(self, t: int) -> dict[str, Any]:
        s = self.spec
        model_filter = s.filter.method != "score"  # ppl/density ask the generator
        return {
            "synthesize": self.stage(t, "synthesize"), "filter": _dump(s.filter),
            "criteria": list(s.assessment.criteria), "dataSize": data_size(s),
            "randomSeed": s.synthesis.random_seed,
            **({"generator": self.generator(t), "maxSamples": s.training.max_samples, **_common(s),
                "resources": _resources(s, "curate")} if model_filter else {}),
        }

    def _train(self, t: int) -> dict[str, Any]:
        s = self.spec
        strategy = s.training.strategy
        base = self.model(t - 1) if strategy == "one_last" else self.model(0)
        data = range(1, t + 1) if strategy == "total_base" else (t,)
        training = _dump(s.training)
        # where it logs is not what it trains; the strategy acts through the inputs above
        for not_read in ("report_to", "tracking_uri", "strategy"):
            training.pop(not_read, None)
        return {
            "base": base, "data": [self.stage(k, "curate") for k in data], "training": training,
            "randomSeed": s.synthesis.random_seed, "chatTemplate": s.model.chat_template,
            "resources": _resources(s, "train"),
        }

    def _evaluate(self, t: int) -> dict[str, Any]:
        s = self.spec
        evaluation = _dump(s.evaluation)
        evaluation.pop("enabled", None)
        return {
            "model": self.model(t),
            # evaluate checks the held-out set against every pair kept so far
            "kept": [self.stage(k, "curate") for k in range(1, t + 1)],
            "evaluation": evaluation, "synthesis": _dump(s.synthesis), "assessment": _dump(s.assessment),
            "resources": _resources(s, "evaluate"), **_common(s),
        }


def stage_key(spec: RunSpec, iteration: int, stage: str, inputs: CacheInputs) -> str:
    """The key of one stage execution (sha256 hex). Raises ValueError for a stage that is not
    cached (export) or an iteration that has no such stage."""
    return _Keys(spec, inputs).stage(iteration, stage)


def cacheable(stage: str) -> bool:
    return stage in CACHED_STAGES


# --- the index, as the planner sees it --------------------------------------------------------

EntryState = Literal["running", "succeeded"]


@dataclass(frozen=True)
class CacheEntry:
    """One index entry: a stage output that exists (succeeded) or is being produced (running).

    producer: who made it, for people ("<namespace>/<run>/iteration-1/synthesize" on a cluster,
    the stage's directory locally); owner: the producing run's identity, to tell a run's own
    entries from others'; run_dir: the producer's run directory (absolute in the executor's
    view), where its stage directory and model are; summary: the stage's summary."""

    key: str
    state: EntryState
    producer: str
    owner: str
    run_dir: str
    iteration: int
    stage: str
    summary: Optional[dict[str, Any]] = None


@dataclass(frozen=True)
class StageCache:
    """What the planner is given: the run's identity in the index, the inputs' identities, the
    entries the executor found (by key) and the run's directory (absolute, as entries name
    theirs)."""

    owner: str
    inputs: CacheInputs
    entries: Mapping[str, CacheEntry] = field(default_factory=dict)
    run_dir: str = ""


Verdict = Literal["produce", "reuse", "wait"]


@dataclass(frozen=True)
class Lookup:
    key: str
    verdict: Verdict
    entry: Optional[CacheEntry] = None


def lookup(cache: StageCache, spec: RunSpec, iteration: int, stage: str) -> Optional[Lookup]:
    """None: the stage is not cached. Otherwise produce (no entry, or the run's own: creating a
    stage is idempotent, so a run never waits for or reuses itself), reuse (another run's
    finished output) or wait (another run is producing it now).

    An entry of another run in this run's own directory (a deleted run's, rerun under the same
    name) is not reused either: whether a run may take over another's directory is the stage
    programs' call (their run marker, storage.adoptExistingData), and a stage that does
    finds its finished output there and skips the work."""
    if not cacheable(stage) or (iteration == 0 and stage != "evaluate"):
        return None
    key = stage_key(spec, iteration, stage, cache.inputs)
    entry = cache.entries.get(key)
    if entry is None or entry.owner == cache.owner or _same_dir(entry.run_dir, cache.run_dir):
        return Lookup(key, "produce")
    return Lookup(key, "reuse" if entry.state == "succeeded" else "wait", entry)


def _same_dir(a: str, b: str) -> bool:
    return bool(a) and a.rstrip("/") == b.rstrip("/")


def reused_paths(stage: str, iteration: int, producer_run_dir: str, consumer_run_dir: str) -> dict[str, str]:
    """consumer path -> producer path for a reused stage: its stage directory, and for train
    the model of the iteration too (it lives beside the stage directory). The consumer's later
    stages read these paths; a link there makes them the producer's (no copy)."""
    def both(*parts: str) -> tuple[str, str]:
        return "/".join([consumer_run_dir.rstrip("/"), *parts]), "/".join([producer_run_dir.rstrip("/"), *parts])

    pairs = [both(f"i{iteration}", stage)]
    if stage == "train":
        pairs.append(both(f"i{iteration}", "model"))
    return dict(pairs)


# --- what a verdict does to the status ----------------------------------------------------------


def reuse(record: IterationRecord, stage: str, found: Lookup, layout: Layout, stamp: str) -> Event:
    """Record `stage` of `record` as succeeded by `found.entry` (another run's output): its
    figures, where it came from, and from then on the links (`links`) for the stages that read
    it. Idempotent: the same entry gives the same record."""
    entry = found.entry
    assert entry is not None and found.verdict == "reuse"
    summary = entry.summary if isinstance(entry.summary, dict) and entry.summary else None
    rec = record.stages.get(stage) or StageRecord()
    rec.phase, rec.attempts, rec.job, rec.message = "Succeeded", 0, None, None
    rec.started_at, rec.finished_at = rec.started_at or stamp, rec.finished_at or stamp
    rec.cache_key, rec.reused_from, rec.waiting_for = found.key, entry.producer, None
    rec.reused_run_dir = layout.relative(entry.run_dir)
    rec.summary, rec.gpu_seconds = stage_summary(stage, summary), 0.0  # nothing ran: no cost
    record.stages[stage] = rec
    apply_summary(record, stage, summary, layout)
    return Event("Normal", Reason.STAGE_REUSED,
                 f"iteration {record.iteration} {stage}: reused {entry.producer} (same key {found.key[:12]}); "
                 f"{describe_summary(stage, summary)}")


def wait_message(iteration: int, stage: str, found: Lookup) -> str:
    assert found.entry is not None
    return (f"iteration {iteration}: {stage} waits for {found.entry.producer}, which produces the same stage "
            f"(key {found.key[:12]}); it reuses that output when it succeeds")


def links(status: RunStatus, layout: Layout) -> dict[str, str]:
    """consumer path -> producer path for every reused stage of the run so far: the stage
    programs make these links before they read anything (the local executor at once), so a
    reused stage's outputs are where the run's own would be."""
    out: dict[str, str] = {}
    for record in status.iterations:
        for stage, rec in record.stages.items():
            if rec.reused_run_dir is None or rec.phase != "Succeeded":
                continue
            producer = layout.resolve(rec.reused_run_dir)
            if producer.rstrip("/") != layout.run_dir.rstrip("/"):  # the same place: nothing to link
                out.update(reused_paths(stage, record.iteration, producer, layout.run_dir))
    return out


def published_summary(record: IterationRecord, stage: str) -> dict[str, Any]:
    """The summary a finished stage's cache entry carries: its stage record's part and the
    figures its iteration record holds (together, what the stage reported)."""
    rec = record.stages[stage]
    return {**(rec.summary or {}), **figures_of(record, stage)}


def publishable(spec: RunSpec, stage: str) -> bool:
    """Whether a finished stage's output stays where its entry points. A train's model may be
    deleted later (storage.keepModels best/last) and a run's whole directory with the run
    (storage.deleteDataOnDelete): such outputs are not offered to other runs."""
    if getattr(spec.storage, "delete_data_on_delete", False):
        return False
    return stage != "train" or spec.storage.keep_models == "all"


def carry_keys(planned: RunStatus, again: RunStatus) -> RunStatus:
    """`again` (a plan made once the Jobs just created were observed: kube/reconcile.py
    _as_started) with what `planned` decided about the cache: the keys of the stages it
    started (an observed execution's record is rebuilt from its Job, which does not carry its
    key) and the stages it reused (`again` walks on from the new Job and never looks back at
    them)."""
    for record in again.iterations:
        before = planned.record(record.iteration)
        if before is None:
            continue
        for stage, had in before.stages.items():
            rec = record.stages.get(stage)
            if had.reused_from is not None and (rec is None or rec.reused_from is None):
                record.stages[stage] = had.model_copy(deep=True)
                copy_figures(before, record, stage)
            elif rec is not None and rec.cache_key is None and had.cache_key is not None:
                rec.cache_key = had.cache_key
    return again
