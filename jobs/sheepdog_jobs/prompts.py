"""Prompt templates of I-SHEEP (stage facts 1, 2 and 4), as plain strings.

No chat template is applied here: the engine layer wraps a prompt in the model's chat
template when the run asks for one (``model.chatTemplate``); base models get these strings raw.

Quoted material (allowed as presets, with attribution):
* ``ALPACA_META_PROMPT``: the instruction-generation meta prompt of Stanford Alpaca
  (Taori et al. 2023, github.com/tatsu-lab/stanford_alpaca, prompt.txt, Apache-2.0), itself
  derived from Self-Instruct (Wang et al. 2022).  Alpaca's file numbers its requirements
  1,2,3,2,3,4,5,6,7; we number them 1..9 as the I-SHEEP authors' copy does.
* the self-assessment rubrics and ICL examples: Liang et al., "I-SHEEP", arXiv 2408.08072,
  Appendix A (prompt settings "simple standard", "combined standard" and "ICL").
"""

from __future__ import annotations

import re
from typing import Protocol, Sequence

__all__ = [
    "ASSESSMENT_KINDS", "CRITERIA", "SCORE_CUE", "ALPACA_META_PROMPT", "DEFAULT_RESPONSE_PROMPT",
    "CHATML_RESPONSE_PROMPT", "PROMPT_TAILS", "build_instruction_request", "build_response_prompt",
    "build_assessment_prompt", "response_template", "training_template",
]

ASSESSMENT_KINDS = ("simple", "combined", "icl")
CRITERIA = ("quality", "following")
# Every assessment prompt ends with exactly this sentence (ISHEEP.md stage fact 4).
SCORE_CUE = "As a strict scoring expert, your score is:"

# Source: Taori et al. 2023, Stanford Alpaca prompt.txt (requirements renumbered 1..9).
# "{n}" stands for the number of tasks requested (20 in Alpaca and in the paper).
ALPACA_META_PROMPT = """\
You are asked to come up with a set of {n} diverse task instructions. These task instructions \
will be given to a GPT model and we will evaluate the GPT model for completing the instructions.

Here are the requirements:
1. Try not to repeat the verb for each instruction to maximize diversity.
2. The language used for the instruction also should be diverse. For example, you should \
combine questions with imperative instructions.
3. The type of instructions should be diverse. The list should include diverse types of tasks \
like open-ended generation, classification, editing, etc.
4. A GPT language model should be able to complete the instruction. For example, do not ask \
the assistant to create any visual or audio output. For another example, do not ask the \
assistant to wake you up at 5pm or set a reminder because it cannot perform any action.
5. The instructions should be in English.
6. The instructions should be 1 to 2 sentences long. Either an imperative sentence or a \
question is permitted.
7. You should generate an appropriate input to the instruction. The input field should \
contain a specific example provided for the instruction. It should involve realistic data \
and should not contain simple placeholders. The input should provide substantial content to \
make the instruction challenging but should ideally not exceed 100 words.
8. Not all instructions require input. For example, when a instruction asks about some \
general information, "what is the highest peak in the world", it is not necessary to provide \
a specific context. In this case, we simply put "<noinput>" in the input field.
9. The output should be an appropriate response to the instruction and the input. Make sure \
the output is less than 100 words.

List of {n} tasks:
"""


class _Example(Protocol):
    instruction: str
    input: str
    output: str


def build_instruction_request(examples: Sequence[_Example], num_tasks: int = 20,
                              include_output: bool = True) -> str:
    """The Alpaca-format request: meta prompt, k numbered examples, then "k+1. Instruction:".

    Layout (as Alpaca's encode_prompt): the meta prompt, a blank line, then for each example
    "###\\nN. Instruction: ...\\nN. Input:\\n<input or <noinput>>\\nN. Output:\\n<output>\\n",
    then "###\\n{k+1}. Instruction:".  Instructions are whitespace-collapsed and lose a
    trailing colon, as in Alpaca.  ``include_output=False`` leaves the Output sections out, as
    the I-SHEEP authors' scripts do (responses are generated zero-shot later anyway).
    """
    if not examples:
        raise ValueError("build_instruction_request needs at least one example")
    if num_tasks <= len(examples):
        raise ValueError(f"num_tasks ({num_tasks}) must exceed the number of examples "
                         f"({len(examples)})")
    parts = [ALPACA_META_PROMPT.format(n=num_tasks), "\n"]
    for number, ex in enumerate(examples, start=1):
        instruction = re.sub(r"\s+", " ", ex.instruction).strip().rstrip(":")
        input_text = ex.input.strip() or "<noinput>"
        parts.append(f"###\n{number}. Instruction: {instruction}\n"
                     f"{number}. Input:\n{input_text}\n")
        if include_output:
            parts.append(f"{number}. Output:\n{ex.output.strip()}\n")
    parts.append(f"###\n{len(examples) + 1}. Instruction:")
    return "".join(parts)


# The authors' scripts (generate_output.py) prompt for a response with the instruction and the
# input glued together, then a newline. It is the default so that a reproduction sends what
# they sent; any other layout (the blank-line join, a Dromedary-style principle prompt) is a
# synthesis.responsePrompt away.
DEFAULT_RESPONSE_PROMPT = "{instruction}{input}\n"


# The wrapper of the authors' generate_output_iter2.py (responses from iteration 2 on) and of
# their training data (add_qwen_prompts; LLaMA-Factory's "qwen_like" template): ChatML with a
# fixed system prompt around the instruction and the input, glued as in iteration 1.
CHATML_RESPONSE_PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                          "<|im_start|>user\n{instruction}{input}<|im_end|>\n<|im_start|>assistant\n")


def response_template(synthesis, iteration: int) -> str | None:
    """The response prompt template of ``iteration`` (1-based) from a SynthesisSpec:
    laterResponsePrompt from iteration 2 on when it is set, else responsePrompt (None: the
    default).  The model of iteration t (trained after it) answers with iteration t+1's."""
    later = getattr(synthesis, "later_response_prompt", None)
    return later if later and iteration >= 2 else synthesis.response_prompt


def training_template(spec, iteration: int) -> str | None:
    """The prompt template of iteration ``iteration``'s training examples: training.prompt, or
    the response prompt that iteration's pairs were answered with."""
    return getattr(spec.training, "prompt", None) or response_template(spec.synthesis, iteration)


def build_response_prompt(instruction: str, input: str, template: str | None = None) -> str:
    """The zero-shot response prompt: ``template`` (synthesis.responsePrompt, with
    {instruction} and {input}) or DEFAULT_RESPONSE_PROMPT, filled with the stripped fields.

    The ONE place a response prompt is built: synthesis, the training examples, the model
    filters' pair text and both evaluations call it, so a model is trained, filtered and
    evaluated on the very prompt it answered during synthesis.  The default ends with a
    newline so that a base model starts its answer on a new line.
    """
    return (template or DEFAULT_RESPONSE_PROMPT).format(instruction=instruction.strip(),
                                                        input=input.strip())


# Source: Liang et al. 2024 (I-SHEEP), Appendix A, prompt settings 1 and 2 (quoted).
_RUBRICS = {
    ("simple", "quality"):
        "Please rate the response above on a scale from 1 for poor response (The response is "
        "incorrect.) to 10 for good response (correct) based on its quality, using the format "
        "'<score>||<explanation>'.",
    ("simple", "following"):
        "Please rate the response from 1 (The response does not comply with the instruction.) "
        "to 10 (The response adheres to the instruction.) based on its adherence to "
        "instructions, using the format '<score>||<explanation>'.",
    ("combined", "quality"):
        "Please rate the response above on a scale from 1 for poor response (The response is "
        "incorrect, lengthy, unclear, redundant in format and content.) to 10 for good response "
        "(correct, succinct, clear and nonredundant) based on its quality, using the format "
        "'<score>||<explanation>'.",
    ("combined", "following"):
        "Please rate the response from 1 (The response continues to generate the instruction "
        "content. the response does not meet the format required by the instruction. the "
        "instruction is unclear and ambiguous.) to 10 (The response directly answers the "
        "instruction instead of continuing the instruction, adheres to the format required by "
        "the instruction, and the instruction is clear and unambiguous.) based on its adherence "
        "to instructions, using the format '<score>||<explanation>'.",
}

# Source: Liang et al. 2024 (I-SHEEP), Appendix A, "ICL prompt setting" (quoted, typos kept).
_ICL_EXAMPLES = (
    ("Select the oldest person from the list. George Washington, Confucius, Michael Jordan, "
     "Michelangelo", "Confucious", 6,
     "The response is correct, but the response does not provide further explanation"),
    ("Read this sentence and come up with an appropriate response. That\u2019s really pretty.",
     "Matterhorn is the highest mountain in the world.", 1,
     "The response is neither correct nor adheres to the instruction."),
    ("Generate a slogan for the given product. Product: Athletic shoes",
     "Sole to soul: Power your active lifestyle with our athletic shoes.", 10,
     "The response is correct, organized, and instruction-following."),
)
# The paper's ICL prompt names no criterion; these phrases (from its rubrics) make the quality
# and following prompts differ, so that both criteria can be scored with ICL.
_ICL_FOCUS = {"quality": "based on its quality",
              "following": "based on its adherence to instructions"}


# assessment.promptTail: "sheepdog" tidies the pair and ends on the cue; "authors" is the
# scripts' exact text (evaluate_prompt.py): the response as generated, "." always appended,
# and a space after the cue.
PROMPT_TAILS = ("sheepdog", "authors")


def _pair(instruction: str, input: str, response: str, tail: str = "sheepdog") -> str:
    if tail == "authors":
        # The scripts: a non-empty input joins the instruction after a space; the response is
        # not stripped and always gets a "." ("Paris." -> "Paris..", " 42\n" -> " 42\n.").
        full = f"{instruction} {input}" if input != "" else instruction
        return f"Instruction: {full} Response: {response}."
    # As the reference: instruction and input joined by a space, and a "." after the
    # response, except that we do not double the end punctuation ("Paris.." -> "Paris.").
    instruction, input, response = instruction.strip(), input.strip(), response.strip()
    full = f"{instruction} {input}" if input else instruction
    end = "" if response.endswith((".", "!", "?")) else "."
    return f"Instruction: {full} Response: {response}{end}"


def build_assessment_prompt(kind: str, criterion: str, instruction: str, input: str,
                            response: str, rubric_first: bool = False, tail: str = "sheepdog") -> str:
    """A self-assessment prompt asking for '<score>||<explanation>' (scores 1..10).

    ``kind``: "simple" | "combined" | "icl"; ``criterion``: "quality" | "following".
    Default order is the paper's: the pair, then the rubric, then SCORE_CUE.  With
    ``rubric_first=True`` the rubric (and, for ICL, the examples) come first and the pair last,
    so that all prompts of one (kind, criterion) share a long common prefix that an engine's
    prefix cache can reuse; this is a documented deviation from the paper's order.
    Every prompt ends exactly with SCORE_CUE (no trailing space; the reference had one), unless
    ``tail == "authors"`` (assessment.promptTail): then the pair is the scripts' (response
    unstripped, "." always appended) and the prompt ends with SCORE_CUE and a space.
    """
    if tail not in PROMPT_TAILS:
        raise ValueError(f"unknown assessment prompt tail {tail!r}; expected one of {', '.join(PROMPT_TAILS)}")
    prompt = _assessment_prompt(kind, criterion, instruction, input, response, rubric_first, tail)
    return prompt + " " if tail == "authors" else prompt


def _assessment_prompt(kind: str, criterion: str, instruction: str, input: str, response: str,
                       rubric_first: bool, tail: str) -> str:
    if kind not in ASSESSMENT_KINDS:
        raise ValueError(f"unknown assessment prompt kind {kind!r}; expected one of "
                         f"{', '.join(ASSESSMENT_KINDS)}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")
    pair = _pair(instruction, input, response, tail)
    if kind == "icl":
        focus = _ICL_FOCUS[criterion]
        shots = "\n".join(
            f"{_pair(i, '', r)} Assess the above instruction-response pair: {s}||{e}"
            for i, r, s, e in _ICL_EXAMPLES)
        if rubric_first:
            return (f"Assess each instruction-response pair {focus} on a scale from 1 to 10, "
                    f"using the format '<score>||<explanation>'.\n{shots}\n"
                    f"{pair} Assess the above instruction-response pair. {SCORE_CUE}")
        return (f"{shots}\n{pair} Assess the instruction-response pair {focus}, using the "
                f"format '<score>||<explanation>'. {SCORE_CUE}")
    rubric = _RUBRICS[(kind, criterion)]
    if rubric_first:
        rubric = rubric.replace("the response above", "the response below")
        return (f"{rubric}\nHere are the instruction and the response. {pair}\n{SCORE_CUE}")
    return f"Here are the instruction and the response. {pair}\n{rubric} {SCORE_CUE}"
