"""The dataset card (README.md) of `sheepdog export-data`: what made the pairs and how many
each iteration kept, built with huggingface_hub's DatasetCardData so the hub (and
`datasets.load_dataset` on a local folder) reads its `configs` section."""

from __future__ import annotations

from typing import Any

import yaml

from sheepdog.export.card import cell, evaluation_text
from sheepdog.export.data import DATA, LLAMA_FACTORY_INFO, RunPairs, data_file, split_name
from sheepdog.export.license import license_of

TAGS = ["sheepdog", "i-sheep", "self-alignment", "synthetic", "sft"]
# What each iteration's model was trained on, by training.strategy (planner/lineage_policy.py).
TRAINED_ON = {
    "one_base": "Iteration t's model is the base model fine-tuned on iteration t's kept pairs.",
    "one_last": "Iteration t's model is iteration t-1's model fine-tuned on iteration t's kept pairs.",
    "total_base": "Iteration t's model is the base model fine-tuned on the kept pairs of iterations 1 to t.",
    "direct": "The run's one iteration kept all its pairs at once; its model is the base fine-tuned on them.",
}


def size_category(rows: int) -> str:
    """The hub's size_categories bucket for `rows`."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if rows < bound:
            return name
    return "n>10M"


def card_data(run: RunPairs, counts: dict[str, dict[int, int]]):
    from huggingface_hub import DatasetCardData

    configs = []
    for config, per_iteration in counts.items():
        entry: dict[str, Any] = {"config_name": config,
                                 "data_files": [{"split": split_name(i), "path": data_file(config, i)}
                                                for i in sorted(per_iteration)]}
        if config == "messages":
            entry["default"] = True
        configs.append(entry)
    extra: dict[str, Any] = {}
    license_id = license_of(run.spec.model.base, str(run.run_dir))
    if license_id:  # the pairs are the base model's output: its license is the one that can apply
        extra["license"] = license_id
    return DatasetCardData(
        pretty_name=f"{run.name}: I-SHEEP self-aligned pairs",
        task_categories=["text-generation"],
        language=["en"],
        tags=TAGS,
        size_categories=[size_category(sum(counts.get("messages", {}).values()))],
        configs=configs,
        sheepdog_run=run.name,  # lets a later export of the same run replace this folder
        **extra,
    )


def settings_lines(run: RunPairs) -> list[str]:
    spec = run.spec
    s, a, f = spec.synthesis, spec.assessment, spec.filter
    if f.method == "score":
        selection = (f"keep the best fraction {f.keep_fraction:g} by mean score" if f.keep_fraction is not None
                     else f"keep pairs whose every criterion score is > {f.threshold:g}")
    else:
        selection = f"method {f.method} (pplMax {f.ppl_max:g}, clusters {f.clusters})"
    return [
        f"- base model: `{spec.model.base}`; training strategy {spec.training.strategy}",
        f"- iterations: {len(run.iterations)} exported of {spec.iterations} asked",
        f"- seed tasks: `{spec.seed.path}`" if spec.seed.path else
        "- seed tasks: the 175 Self-Instruct seed tasks (Wang et al. 2023)",
        f"- synthesis: {s.data_size} new instructions per iteration, temperature {s.temperature:g}, "
        f"top-p {s.top_p:g}, max tokens {s.max_tokens}, ROUGE-L dedup at {s.rouge_l_max:g}",
        f"- self-assessment: criteria {', '.join(a.criteria) or 'none'}, prompt {a.prompt}, "
        f"scoring {a.scoring}, judge {a.judge}",
        f"- filter: heuristic rules {'on' if f.rules else 'off'}; {selection}",
    ]


def iteration_table(run: RunPairs, counts: dict[str, dict[int, int]]) -> str:
    head = ["iteration", "generated", "assessed", "kept", "keep rate", "mean quality", "mean following",
            "dropped (reason: pairs)", "train loss", "evaluation"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for it in run.iterations:
        record, summary = run.record(it.iteration), it.summary
        rate = summary.get("keepRate")
        dropped = summary.get("dropped") if isinstance(summary.get("dropped"), dict) else {}
        cells = [str(it.iteration), cell(record.get("generated")), cell(summary.get("assessed")),
                 str(counts["messages"][it.iteration]),
                 f"{100 * rate:.1f}%" if isinstance(rate, (int, float)) else "-",
                 cell(summary.get("meanQuality")), cell(summary.get("meanFollowing")),
                 ", ".join(f"{k}: {v}" for k, v in sorted(dropped.items())) or "-",
                 cell(record.get("trainLoss")), evaluation_text(record.get("evaluation"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def files_table(counts: dict[str, dict[int, int]]) -> str:
    lines = ["| config | split | rows | file |", "|---|---|---|---|"]
    for config, per_iteration in counts.items():
        for i in sorted(per_iteration):
            lines.append(f"| {config} | {split_name(i)} | {per_iteration[i]} | `{data_file(config, i)}` |")
    return "\n".join(lines)


def dataset_card(run: RunPairs, counts: dict[str, dict[int, int]]):
    from huggingface_hub import DatasetCard

    dropped = "messages_dropped" in counts
    body = [
        f"# {run.name}: I-SHEEP self-aligned pairs", "",
        "Instruction-response pairs that a model wrote, answered and graded itself during the "
        f"I-SHEEP run `{run.name}` (iterative self-alignment, Liang et al., arXiv 2408.08072), "
        f"exported by sheepdog. {TRAINED_ON[run.spec.training.strategy]}"
        + (" The `*_dropped` configs hold the pairs curate dropped, with the reason." if dropped else ""), "",
        "## The run's settings", "", *settings_lines(run), "",
        "## Iterations", "", iteration_table(run, counts), "",
        "## Configs and files", "",
        "- `messages` (default): a `messages` column of user and assistant turns; the user turn is "
        "the instruction, then its input on the next line when it has one.",
        "- `alpaca`: `instruction`, `input`, `output` columns (LLaMA-Factory's alpaca layout).",
        "- every row also has `id`, `iteration` and the self-assessment scores `quality` and "
        "`following` (null where that criterion was not judged)"
        + ("; `*_dropped` rows have `reason`." if dropped else "."), "",
        files_table(counts), "",
        "## Loading", "", "```python", "from datasets import load_dataset", "",
        f'pairs = load_dataset("PATH_OR_REPO", "messages")  # splits {", ".join(split_name(it.iteration) for it in run.iterations)}',
        "```", "",
        f"For LLaMA-Factory, `{LLAMA_FACTORY_INFO}` names `{run.name}` (alpaca, every iteration: the "
        f"folder `{DATA}/alpaca`), `{run.name}_messages` (sharegpt) and one entry per iteration "
        f"(`{run.name}_i1`, `{run.name}_i1_messages`, ...); point `dataset_dir` at this folder.", "",
        "## The run's spec", "", "```yaml", yaml.safe_dump(run.spec.to_wire(), sort_keys=False).rstrip(), "```", "",
    ]
    return DatasetCard(f"---\n{card_data(run, counts).to_yaml()}\n---\n\n" + "\n".join(body))
