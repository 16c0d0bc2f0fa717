"""Runs that say they reproduce the authors' scripts, and where they depart from them.

The rule: a run whose metadata.labels carry ``sheepdog.dev/reproduces: isheep-scripts``
(examples/paper.yaml does) is a reproduction of the I-SHEEP authors' scripts
(multimodal-art-projection/I-SHEEP, seed_ppl/). `sheepdog validate` then warns, without
failing, about every field below whose value differs from what the scripts ran. A label, not
the run's name: a name is free text that users pick for other reasons, and a label is
visible to `kubectl get -l` and stays when the run is copied and renamed.

Only what the scripts fix for every experiment is checked. What the paper's rows vary
(filter.threshold, assessment.criteria, training.strategy, iterations, dataSize, filter.method)
and what a small test run must change (the model, stage resources) are not.
"""

from __future__ import annotations

from typing import Any

from sheepdog.api.spec import RunSpec, SelfAlignmentRun

__all__ = ["REPRODUCES_LABEL", "SCRIPTS", "CHATML", "SCRIPTS_SETTINGS", "is_scripts_reproduction", "departures"]

REPRODUCES_LABEL = "sheepdog.dev/reproduces"
SCRIPTS = "isheep-scripts"

# The authors' ChatML wrapper (generate_output_iter2.py; their training data's qwen template).
CHATML = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
          "<|im_start|>user\n{instruction}{input}<|im_end|>\n<|im_start|>assistant\n")
_UNSET = object()

# camelCase path under spec -> (the scripts' value, the values that mean the same, the script).
SCRIPTS_SETTINGS: dict[str, tuple[Any, tuple[Any, ...], str]] = {
    "model.chatTemplate": ("none", (), "generate_output.py: raw prompts, no chat template"),
    "seed.examplesPerRequest": (5, (), "generate_instruction.py: num_prompt_instructions=5"),
    "synthesis.temperature": (1.0, (), "utils.py vllm_generator"),
    "synthesis.topP": (0.95, (), "utils.py vllm_generator"),
    "synthesis.maxTokens": (1000, (), "utils.py vllm_generator"),
    "synthesis.rougeLMax": (0.7, (), "generate_instruction.py"),
    "synthesis.dropLastItem": ("always", (), "generate_instruction.py post_process_gpt3_response"),
    "synthesis.instructionParser": ("authors", (), "generate_instruction.py post_process_gpt3_response"),
    "synthesis.dedupScope": ("window", (), "generate_instruction.py with context_generate_single.py"),
    "synthesis.dedupWindow": (100, (), "generate_instruction.py: num_instructions_to_generate=100"),
    "synthesis.responsePrompt": ("{instruction}{input}\n", (_UNSET,), "generate_output.py"),
    "synthesis.laterResponsePrompt": (CHATML, (), "generate_output_iter2.py (qwen72B_all.sh)"),
    "synthesis.responseStop": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], (),
                               "generate_output.py, generate_output_iter2.py"),
    "assessment.prompt": ("combined", (), "evaluate_prompt_parameters.py"),
    "assessment.scoring": ("text", (), "evaluate_prompt_parameters.py"),
    "assessment.parse": ("strict", (), "evaluate_prompt_parameters.py extract_number_from_eval"),
    "assessment.promptTail": ("authors", (), "evaluate_prompt_parameters.py (called by qwen72B_all.sh)"),
    "assessment.rubricFirst": (False, (), "evaluate_prompt_parameters.py"),
    "assessment.temperature": (1.0, (), "utils.py vllm_generator"),
    "assessment.maxTokens": (1000, (), "utils.py vllm_generator"),
    "filter.rules": (True, (), "step_2_1_filter_output_and_instruction_to_sft.py"),
    "filter.ruleSet": ("authors", (), "step_2_1_filter_output_and_instruction_to_sft.py"),
    "assessment.judge": ("base", (), "qwen72B_all.sh: evaluate_model is the base"),
    "training.prompt": (CHATML, (), "qwen72B_all.sh trains with LLaMA-Factory's template qwen_like"),
    "training.outputSuffix": ("<|im_end|>", (), "LLaMA-Factory's template qwen_like"),
    # The training script (deepspeed_training_lora_parameter_qwen_like_on_base_parameter.sh)
    # is not in the repository: these are the paper's Appendix E values.
    "training.lora.rank": (8, (), "paper Appendix E"),
    "training.learningRate": (5.0e-5, (), "paper Appendix E"),
    "training.epochs": (2, (), "paper Appendix E"),
    "training.cutoffLength": (1024, (), "paper Appendix E"),
    "training.maxSamples": (3000, (), "paper Appendix E"),
}


def is_scripts_reproduction(run: SelfAlignmentRun) -> bool:
    labels = (run.metadata.model_extra or {}).get("labels") or {}
    return isinstance(labels, dict) and labels.get(REPRODUCES_LABEL) == SCRIPTS


def _get(wire: dict[str, Any], path: str) -> Any:
    node: Any = wire
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _UNSET
        node = node[key]
    return node


def departures(spec: RunSpec) -> list[str]:
    """One line per field whose value differs from the scripts': the field, its value, the
    scripts' value and the script it comes from."""
    wire = spec.to_wire()
    out = []
    for path, (value, same, source) in SCRIPTS_SETTINGS.items():
        actual = _get(wire, path)
        if actual == value or any(actual is s or actual == s for s in same):
            continue
        shown = "unset" if actual is _UNSET else repr(actual)
        out.append(f"spec.{path} is {shown}; the scripts ran {value!r} ({source})")
    return out
