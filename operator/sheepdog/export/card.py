"""The model card (README.md) of an exported model: where it came from and how it did.

Hugging Face reads the YAML front matter; `base_model` is set only when the base is a hub id
(a path on the run's volume means nothing to anyone else, so it is named in the text only).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from sheepdog.export.config import ExportConfig

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COLUMNS = (("iteration", "iteration"), ("generated", "generated"), ("assessed", "assessed"),
           ("kept", "kept"), ("keepRate", "keep rate"), ("meanQuality", "mean quality"),
           ("meanFollowing", "mean following"), ("trainLoss", "train loss"))


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


def front_matter(config: ExportConfig, library: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"library_name": library, "tags": ["sheepdog", "i-sheep", "self-alignment", "lora"]}
    base = config.spec.model.base
    if HUB_ID.match(base) and not base.startswith(("models/", "runs/")):
        meta["base_model"] = base
    return meta


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
    lines = [
        "---", yaml.safe_dump(front_matter(config, library), sort_keys=True).strip(), "---", "",
        f"# {config.run}: iteration {config.iteration}", "",
        "A model trained by I-SHEEP iterative self-alignment (Liang et al., arXiv 2408.08072) with "
        "sheepdog: the model wrote instructions, answered them, graded its own answers, and was "
        "fine-tuned (LoRA) on the pairs it graded best.", "",
        f"- base model: `{spec.model.base}`",
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
    return "\n".join(lines)
