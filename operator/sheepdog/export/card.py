"""The model card (README.md) of an exported model: where it came from and how it did.

The front matter is huggingface_hub's ModelCardData, so the hub reads it as it reads any card:
`base_model` (only when the base is a hub id: a path on the run's volume means nothing to
anyone else, so it is named in the text only) with `base_model_relation` (finetune for a merged
model, adapter for a LoRA adapter), `library_name` and tags to match, `license` (and
license_name / license_link) from the base model's card or config when they can be read
offline (license.py), `datasets` when the training data is on the hub, and the exported
iteration's evaluation as `model-index` results.
"""

from __future__ import annotations

from typing import Any

import yaml

from sheepdog.export.config import ExportConfig, ExportError
from sheepdog.export.hub import is_hub_id
from sheepdog.export.license import base_license

TAGS = ["sheepdog", "i-sheep", "self-alignment", "sft"]
COLUMNS = (("iteration", "iteration"), ("generated", "generated"), ("assessed", "assessed"),
           ("kept", "kept"), ("keepRate", "keep rate"), ("meanQuality", "mean quality"),
           ("meanFollowing", "mean following"), ("trainLoss", "train loss"))
# Suites that are a public benchmark's own data set on the hub; any other suite (ifeval-smoke:
# sheepdog's built-in prompts, heldout, an lm-eval task) is named as itself.
SUITE_DATASETS = {"ifeval": ("google/IFEval", "IFEval")}


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def evaluation_text(value: Any) -> str:
    if not isinstance(value, dict) or not value:
        return "-"
    return ", ".join(f"{k} {cell(v)}" for k, v in sorted(value.items()))


def eval_results(evaluation: Any) -> list:
    """The exported iteration's evaluation (metrics named <suite>.<metric>) as model-index results."""
    from huggingface_hub import EvalResult

    results = []
    if not isinstance(evaluation, dict):
        return results
    for key, value in sorted(evaluation.items()):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        suite, _, metric = key.partition(".")
        dataset_type, dataset_name = SUITE_DATASETS.get(suite, (suite, suite))
        results.append(EvalResult(task_type="text-generation", dataset_type=dataset_type, dataset_name=dataset_name,
                                  metric_type=metric or key, metric_name=key, metric_value=value))
    return results


def front_matter(config: ExportConfig, library: str):
    """ModelCardData of the export. `library`: transformers (merged) or peft (adapter)."""
    try:
        from huggingface_hub import ModelCardData
    except ImportError:
        raise ExportError("the model card needs huggingface_hub (pip install 'sheepdog[export]')") from None
    base = config.spec.model.base
    adapter = library == "peft"
    this = next((r for r in config.records if r.get("iteration") == config.iteration), {})
    extra: dict[str, Any] = dict(base_license(base, config.root))
    hub_base = is_hub_id(base)
    if hub_base:
        extra["base_model_relation"] = "adapter" if adapter else "finetune"
    results = eval_results(this.get("evaluation"))
    return ModelCardData(
        base_model=base if hub_base else None,
        library_name=library,
        pipeline_tag="text-generation",
        tags=TAGS + (["lora", "peft"] if adapter else []),
        datasets=list(config.datasets) or None,
        model_name=f"{config.run}-i{config.iteration}",
        eval_results=results or None,
        **extra,
    )


def iteration_table(records: list[dict[str, Any]]) -> str:
    head = [label for _, label in COLUMNS] + ["evaluation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [cell(r.get(key)) for key, _ in COLUMNS]
        if r.get("keepRate") is not None:
            cells[4] = f"{100 * r['keepRate']:.1f}%"
        lines.append("| " + " | ".join(cells + [evaluation_text(r.get("evaluation"))]) + " |")
    return "\n".join(lines)


def model_card(config: ExportConfig, library: str = "transformers") -> str:
    """README.md of the exported directory. `library`: transformers for a merged model, peft
    for an adapter (training.merge: false)."""
    spec, records = config.spec, config.records
    this = next((r for r in records if r.get("iteration") == config.iteration), {})
    # iteration 0 is M_0 (the base, evaluated only): not an iteration the run finished
    finished = [r["iteration"] for r in records if r.get("model") and r.get("iteration", 0) >= 1]
    best = config.best_iteration
    data = front_matter(config, library)
    license_line = (f"- license: {data.license}, the base model's" if data.license else
                    "- license: none found in the base model's card or config (the base model's terms apply)")
    lines = [
        "---", data.to_yaml(), "---", "",
        f"# {config.run}: iteration {config.iteration}", "",
        "A model trained by I-SHEEP iterative self-alignment (Liang et al., arXiv 2408.08072) with "
        "sheepdog: the model wrote instructions, answered them, graded its own answers, and was "
        "fine-tuned (LoRA) on the pairs it graded best.", "",
        f"- base model: `{spec.model.base}`",
        license_line,
        f"- strategy: {spec.training.strategy} (LoRA rank {spec.training.lora.rank}, "
        f"{'merged into the weights' if spec.training.merge else 'adapter only'})",
        f"- iterations: {len(finished)} finished of {spec.iterations} asked; this model is iteration "
        f"{config.iteration}" + (f", the run's best is {best}" if best is not None else ""),
        f"- data size: {spec.synthesis.data_size} new instructions per iteration; this iteration kept "
        f"{cell(this.get('kept'))} of {cell(this.get('assessed'))} assessed pairs "
        f"(filter {spec.filter.method}, threshold {spec.filter.threshold:g}"
        + (f", keep fraction {spec.filter.keep_fraction:g}" if spec.filter.keep_fraction is not None else "") + ")",
        f"- self-assessment: mean quality {cell(this.get('meanQuality'))}, mean following "
        f"{cell(this.get('meanFollowing'))}; training loss {cell(this.get('trainLoss'))}",
        f"- evaluation: {evaluation_text(this.get('evaluation'))}",
        "", "## Iterations", "", iteration_table(records),
        "", "## The run's spec", "", "```yaml",
        yaml.safe_dump(spec.to_wire(), sort_keys=False).rstrip(), "```", "",
    ]
    from huggingface_hub import ModelCard

    return ModelCard("\n".join(lines)).content  # parsed back: a front matter the hub could not read fails here
