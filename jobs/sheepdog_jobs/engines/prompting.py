"""Prompt rendering and tokenization shared by both engines and by training.

Both engines receive TOKEN IDS produced here, never raw text, so vLLM and transformers see
exactly the same input for the same prompt, and the train stage formats its examples with
the very same function (a model trained on one format and sampled with another is a silent
I-SHEEP failure: iteration t+1 would generate with a prompt it never learned).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class ChatTemplateError(ValueError):
    pass


@dataclass(frozen=True)
class DigitPlan:
    """How a score written after a prompt tokenizes, for next-token scoring.

    sep: tokens between the prompt and the digit (e.g. [" "] for tokenizers that split
    " 7" into " " + "7"); digits: token id of "1".."9"; ten: ("single", id) when "10" is one
    token, or ("split", id of "0") when it is "1" followed by "0"."""

    sep: tuple[int, ...]
    digits: dict[str, int]
    ten: tuple[str, int]


@dataclass(frozen=True)
class Chat:
    """A conversation for the model to continue: (role, content) messages, the last one the
    user's. With a chat template it is rendered as the whole conversation (MT-Bench's second
    turn), not as one user message; without one there is no conversation format to render."""

    messages: tuple[tuple[str, str], ...]


class PromptFormat:
    """chat_template: "none" (raw text, base models), "auto" (the tokenizer's own), or a
    Jinja template string."""

    def __init__(self, tokenizer, chat_template: str = "none"):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        if chat_template not in ("none", "auto"):
            tokenizer.chat_template = chat_template
        elif chat_template == "auto" and not getattr(tokenizer, "chat_template", None):
            raise ChatTemplateError("model.chatTemplate is auto but the tokenizer has no chat template")
        self._plans: dict[str, DigitPlan] = {}

    @property
    def templated(self) -> bool:
        return self.chat_template != "none"

    def render(self, prompt: "str | Chat") -> str:
        if isinstance(prompt, Chat):
            if not self.templated:
                raise ChatTemplateError("a multi-turn conversation needs a chat template (model.chatTemplate)")
            return self.tokenizer.apply_chat_template(
                [{"role": r, "content": c} for r, c in prompt.messages], tokenize=False,
                add_generation_prompt=True)
        if not self.templated:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def encode_rendered(self, text: str) -> list[int]:
        # A rendered template already holds its special tokens; raw text gets the tokenizer's
        # defaults (a BOS where the model expects one).
        return list(self.tokenizer(text, add_special_tokens=not self.templated)["input_ids"])

    def encode(self, prompt: str) -> list[int]:
        return self.encode_rendered(self.render(prompt))

    def encode_plain(self, text: str) -> list[int]:
        """Untemplated text (perplexity, embeddings)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def eos_ids(self, generation_config=None) -> set[int]:
        ids = set()
        for source in (self.tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return ids

    # ---- digit scoring ---------------------------------------------------------------------
    def digit_plan(self, rendered_prompt: str) -> DigitPlan:
        """The plan for a prompt, probed on a short text that ends like it (the tokenization
        of a score depends only on what immediately precedes it)."""
        last = rendered_prompt[-1:] or "\n"
        key = "space" if last.isspace() else "glued"
        if key not in self._plans:
            self._plans[key] = self._probe(last if last.isspace() else ":", sep="" if last.isspace() else " ")
        return self._plans[key]

    def _tail(self, context: str, text: str) -> list[int]:
        tok = self.tokenizer
        head = tok(context, add_special_tokens=False)["input_ids"]
        full = tok(context + text, add_special_tokens=False)["input_ids"]
        if full[: len(head)] != head:
            raise ChatTemplateError(f"tokenizer merges {text!r} into the preceding text; "
                                    "use scoring: text for this model")
        return list(full[len(head):])

    def _probe(self, end: str, sep: str) -> DigitPlan:
        context = "Score" + end
        tails = {str(d): self._tail(context, sep + str(d)) for d in range(1, 10)}
        seps = {tuple(t[:-1]) for t in tails.values()}
        if len(seps) != 1:
            raise ChatTemplateError("digits 1..9 tokenize inconsistently; use scoring: text")
        sep_ids = seps.pop()
        digits = {d: t[-1] for d, t in tails.items()}
        ten_tail = self._tail(context, sep + "10")
        if ten_tail[: len(sep_ids)] != list(sep_ids):
            raise ChatTemplateError("'10' tokenizes unlike the digits; use scoring: text")
        rest = ten_tail[len(sep_ids):]
        if len(rest) == 1:
            ten = ("single", rest[0])
        elif len(rest) == 2 and rest[0] == digits["1"]:
            ten = ("split", rest[1])
        else:
            raise ChatTemplateError("'10' tokenizes unlike the digits; use scoring: text")
        return DigitPlan(sep=sep_ids, digits=digits, ten=ten)


def combine_digit_logprobs(first: dict[str, float], ten: str, ten_lp: float) -> dict[str, float]:
    """log P(score = k), k = 1..10, from the first-token log-probs of "1".."9" and
    - ten = "single": ten_lp = log P("10" token);
    - ten = "split":  ten_lp = log P("0" | prompt + "1"); then P(10) = P("1") P("0"|"1") and
      P(1) = P("1") (1 - P("0"|"1")): the first-token "1" is shared by both scores."""
    out = {d: float(lp) for d, lp in first.items()}
    if ten == "single":
        out["10"] = float(ten_lp)
    else:
        lp1 = out["1"]
        out["10"] = lp1 + ten_lp
        p_not_zero = -math.expm1(ten_lp)  # 1 - P("0"|"1"), accurate for tiny probabilities
        out["1"] = lp1 + math.log(p_not_zero) if p_not_zero > 0 else float("-inf")
    return out
