"""`sheepdog plan`: what a run needs before any GPU is spent, from the model's shape alone.

plan_run(spec, shape) -> a JSON-able dict (docs/gpu-plan.md documents every key): per stage
the GPUs, the per-rank memory and its parts, whether it fits spec.resources.gpuMemoryGiB, the
expected tokens and GPU-hours per iteration; for the run the storage it needs. fit_problems()
turns a plan into the lines `sheepdog validate` refuses a run with. Pure: no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from sheepdog.api.spec import RunSpec
from sheepdog.capacity import lora_serving
from sheepdog.capacity.memory import RUNTIME_RESERVE, GiB, engine_memory, train_memory
from sheepdog.capacity.shape import ModelShape
from sheepdog.planner import data_size, iteration_count
from sheepdog.planner.stage_order import stages_of

# Peak dense 16-bit tensor FLOP/s and memory bandwidth (bytes/s) of one GPU, from the vendors'
# data sheets (SXM parts); what the time estimates divide by.
GPUS = {
    "h100": {"flops": 989e12, "bandwidth": 3.35e12},
    "h200": {"flops": 989e12, "bandwidth": 4.8e12},
    "a100": {"flops": 312e12, "bandwidth": 2.0e12},
    "a800": {"flops": 312e12, "bandwidth": 2.0e12},
}
# Assumptions of the estimates, each stated in the plan's output (plan["assumptions"]).
ASSUMPTIONS = {
    "vllmMemoryFraction": 0.9,        # the engine's gpu_memory_utilization (SHEEPDOG_VLLM_MEMORY)
    "vllmMaxNumBatchedTokens": 8192,  # tokens of vLLM's profile forward pass (version dependent)
    "vllmMaxNumSeqs": 256,            # vLLM's cap on concurrent sequences (version dependent)
    "decodeBandwidthEfficiency": 0.5,  # share of peak bandwidth a decode step reaches
    "prefillMfu": 0.5,                # share of peak FLOP/s of prompt processing
    "trainMfu": 0.4,                  # share of peak FLOP/s of a LoRA training step
    "keptInstructionsPerRequest": 4,  # phase A: new instructions an instruction request yields
    "seedExampleTokens": 60,          # one in-context seed task in an instruction prompt
    "instructionTokens": 100,         # an instruction (with input) in a response prompt
    "rubricTokens": 400,              # an assessment prompt without the pair
    "bytesPerToken": 4,               # stored text (UTF-8, JSON), for the data's size
    "judgementsDecodedAgain": 0.1,    # assessment.decode score: share decoded again in full
}


def _gib(n: float) -> float:
    return round(n / GiB, 2)


def plan_run(spec: RunSpec, shape: ModelShape, *, gpu: str = "h100",
             claim_gib: Optional[float] = None) -> dict[str, Any]:
    """The whole plan of one run on `gpu` (a key of GPUS). Every generation request is taken to
    decode its whole token budget (judgements with assessment.decode score: ASSUMPTIONS)."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r} (known: {', '.join(GPUS)})")
    gpu_gib = spec.resources.gpu_memory_gib
    stages = {}
    for stage in stages_of(spec):
        stages[stage] = {"train": _train, "curate": _curate}.get(stage, _engine_stage)(spec, shape, stage, gpu)
    gpu_hours = [s["gpuHoursPerIteration"] for s in stages.values()]
    storage = _storage(spec, shape, claim_gib)
    return {
        "model": {"source": shape.source, "params": shape.params(), "layers": shape.layers,
                  "hidden": shape.hidden, "weightsGiB": _gib(shape.weight_bytes()),
                  "maxModelLen": shape.max_position},
        "gpu": gpu, "gpuMemoryGiB": gpu_gib,
        "stages": stages,
        "fits": all(s["fits"] is not False for s in stages.values()),
        "gpuHoursPerIteration": None if None in gpu_hours else round(sum(gpu_hours), 2),
        "iterations": iteration_count(spec),
        "storage": storage,
        "storageGiB": storage["totalGiB"],
        "assumptions": {**ASSUMPTIONS, **GPUS[gpu]},
    }


# --- stages -----------------------------------------------------------------------------------


def _serves_adapter(spec: RunSpec, stage: str) -> bool:
    """training.merge: false makes M_t an adapter: evaluate serves one over the base, and so do
    synthesize and curate's model filters from the second iteration on (they serve M_{t-1};
    direct trains once, after its only synthesize). The plan counts that peak."""
    if spec.training.merge:
        return False
    if stage == "evaluate":
        return True
    return spec.training.strategy != "direct" and iteration_count(spec) > 1


def _engine_memory(spec: RunSpec, shape: ModelShape, engine: str, tensor_parallel: int,
                   adapter: bool = False) -> dict:
    """Memory of an inference engine on one rank (serving base + adapter when `adapter`), and
    whether it fits."""
    gpu_bytes = spec.resources.gpu_memory_gib * GiB
    rank = spec.training.lora.rank
    if engine == "transformers":
        # sheepdog's transformers engine puts the whole model on one device, no tensor parallel;
        # an adapter is loaded beside it by peft and folded in.
        extra = lora_serving.transformers_adapter_bytes(shape, rank) if adapter else 0
        need = shape.weight_bytes() + extra + RUNTIME_RESERVE
        memory = {"weightsGiB": _gib(shape.weight_bytes()), "reserveGiB": _gib(RUNTIME_RESERVE)}
        plus = ""
        if adapter:
            memory["adapterGiB"] = _gib(extra)
            plus = f" + adapter {_gib(extra)} GiB"
        return {"ranks": 1, "tensorParallel": 1, "memoryGiBPerRank": _gib(need), "servesAdapter": adapter,
                "memory": memory, "fits": need <= gpu_bytes,
                "why": f"weights {_gib(shape.weight_bytes())} GiB{plus} + {_gib(RUNTIME_RESERVE)} GiB reserve on one GPU"}
    slot = lora_serving.vllm_slot_rank(rank) if adapter else 0
    m = engine_memory(shape, tensor_parallel=tensor_parallel, gpu_bytes=gpu_bytes,
                      fraction=ASSUMPTIONS["vllmMemoryFraction"],
                      batched_tokens=ASSUMPTIONS["vllmMaxNumBatchedTokens"], max_seqs=ASSUMPTIONS["vllmMaxNumSeqs"],
                      lora_bytes=lora_serving.vllm_slot_bytes(shape, tensor_parallel, slot) if adapter else 0,
                      lora_activation_bytes=lora_serving.vllm_activation_bytes(
                          ASSUMPTIONS["vllmMaxNumBatchedTokens"], slot) if adapter else 0)
    max_len = shape.max_position
    # vLLM refuses to start unless one sequence of max_model_len tokens fits in its KV cache.
    fits = m.kv_tokens >= max_len
    memory = {"weightsGiB": _gib(m.weights), "activationsGiB": _gib(m.activations),
              "reserveGiB": _gib(m.reserve), "kvCacheGiB": _gib(max(0, m.kv_cache)), "loraGiB": _gib(m.lora)}
    lora = ""
    if adapter:
        lora = f", LoRA slots {_gib(m.lora)} (max_loras {lora_serving.VLLM_MAX_LORAS} x max_lora_rank {slot})"
    out = {
        "ranks": tensor_parallel, "tensorParallel": tensor_parallel, "servesAdapter": adapter,
        "memoryGiBPerRank": _gib(m.budget),
        "memory": memory,
        "kvCache": {"tokens": m.kv_tokens, "bytesPerTokenPerRank": m.kv_bytes_per_token,
                    "maxModelLen": max_len, "sequencesAtMaxModelLen": m.kv_tokens // max_len},
        "fits": fits,
        "why": (f"vLLM takes {_gib(m.budget)} GiB ({ASSUMPTIONS['vllmMemoryFraction']:g} of "
                f"{spec.resources.gpu_memory_gib:g} GiB): weights {_gib(m.weights)}{lora}, activations "
                f"{_gib(m.activations)}, reserve {_gib(m.reserve)}, leaving {_gib(m.kv_cache)} GiB = "
                f"{m.kv_tokens} KV tokens for one sequence of max_model_len {max_len}"),
    }
    if adapter:
        out["lora"] = {"maxLoras": lora_serving.VLLM_MAX_LORAS, "maxLoraRank": slot, "adapterRank": rank}
    return out


def _engine_name(spec: RunSpec) -> str:
    # auto resolves to vLLM in the worker image (it carries vLLM); GPU stages run there.
    return "transformers" if spec.engine == "transformers" else "vllm"


def _decode_tokens_per_second(shape: ModelShape, mem: dict, seq_len: int, gpu: dict) -> tuple[float, int]:
    """(tokens/s, running sequences) of a memory-bound decode: a step reads this rank's weights
    and every running sequence's KV cache once; the running sequences are as many as the KV
    cache holds (at most vllmMaxNumSeqs)."""
    kv = mem.get("kvCache")
    if not kv:  # transformers: a batch of 8 sequences at a time, the weights read every step
        return 8 * gpu["bandwidth"] * ASSUMPTIONS["decodeBandwidthEfficiency"] / shape.weight_bytes(), 8
    running = max(1, min(ASSUMPTIONS["vllmMaxNumSeqs"], kv["tokens"] // max(1, seq_len)))
    read = shape.weight_bytes() / mem["tensorParallel"] + running * (seq_len / 2) * kv["bytesPerTokenPerRank"]
    return running * gpu["bandwidth"] * ASSUMPTIONS["decodeBandwidthEfficiency"] / read, running


def _engine_stage(spec: RunSpec, shape: ModelShape, stage: str, gpu: str) -> dict:
    res = spec.stages.of(stage)
    engine = _engine_name(spec)
    tp = spec.stages.synthesize.tensor_parallel if stage == "synthesize" else max(1, res.gpus)
    pods = spec.stages.synthesize.shards if stage == "synthesize" else 1
    if res.gpus == 0:
        return _cpu_stage(stage, pods)
    out = {"gpus": res.gpus, "pods": pods, "engine": engine,
           **_engine_memory(spec, shape, engine, tp, _serves_adapter(spec, stage))}
    if stage != "synthesize":
        out.update(tokensPerIteration=None, gpuHoursPerIteration=None,
                   formula="not estimated: depends on the evaluation suites")
        return out
    a, s, n = spec.assessment, spec.synthesis, data_size(spec)
    requests = min(spec.synthesis.max_requests or n, math.ceil(n / ASSUMPTIONS["keptInstructionsPerRequest"]))
    judged = n * len(a.criteria)
    prompt_a = ASSUMPTIONS["instructionTokens"] + spec.seed.examples_per_request * ASSUMPTIONS["seedExampleTokens"]
    judge_decode = 0
    if a.scoring == "text":
        judge_decode = a.max_tokens
        if a.parse == "strict" and a.decode == "score" and a.score_max_tokens < a.max_tokens:
            # a short decode each, and a full one again where the score is not readable yet
            judge_decode = a.score_max_tokens + round(ASSUMPTIONS["judgementsDecodedAgain"] * a.max_tokens)
    phases = {
        "instructions": {"requests": requests, "promptTokens": requests * prompt_a, "decodeTokens": requests * s.max_tokens},
        "responses": {"requests": n, "promptTokens": n * ASSUMPTIONS["instructionTokens"], "decodeTokens": n * s.max_tokens},
        "assessments": {"requests": judged, "promptTokens": judged * (ASSUMPTIONS["rubricTokens"] + s.max_tokens),
                        "decodeTokens": judged * judge_decode},
    }
    g = GPUS[gpu]
    seconds = 0.0
    for name, p in phases.items():
        prompt_len = p["promptTokens"] // max(1, p["requests"])
        decode_len = p["decodeTokens"] // max(1, p["requests"])
        tps, p["runningSequences"] = _decode_tokens_per_second(shape, out, prompt_len + decode_len, g)
        prefill = p["promptTokens"] * 2 * shape.params() / (tp * g["flops"] * ASSUMPTIONS["prefillMfu"])
        p["seconds"] = round(p["decodeTokens"] / tps + prefill, 1)
        seconds += p["seconds"]
    out.update(
        phases=phases,
        tokensPerIteration=sum(p["promptTokens"] + p["decodeTokens"] for p in phases.values()),
        wallHoursPerIteration=round(seconds / pods / 3600, 2),
        gpuHoursPerIteration=round(seconds * res.gpus / 3600, 2),
        formula="per phase: decodeTokens / decode tokens/s + promptTokens x 2 N / (tensorParallel x peak "
                "FLOP/s x prefillMfu); decode tokens/s = running x bandwidth x decodeBandwidthEfficiency / "
                "(weights / tensorParallel + running x seqLen/2 x KV bytes per token); GPU-hours = seconds x "
                "gpus (shards split the work, not the total); every request decodes its whole budget "
                "(a judgement with assessment.decode score: scoreMaxTokens, plus maxTokens for the "
                "judgementsDecodedAgain share)",
    )
    return out


def _cpu_stage(stage: str, pods: int = 1) -> dict:
    return {"gpus": 0, "pods": pods, "memoryGiBPerRank": 0.0, "fits": None, "why": f"{stage} runs on CPU (gpus: 0)",
            "tokensPerIteration": None, "gpuHoursPerIteration": 0.0}


def _curate(spec: RunSpec, shape: ModelShape, stage: str, gpu: str) -> dict:
    res, method = spec.stages.curate, spec.filter.method
    if method == "score":
        return {"gpus": res.gpus, "pods": 1, "memoryGiBPerRank": 0.0, "fits": True,
                "why": "filter.method score: no model is loaded", "tokensPerIteration": 0,
                "gpuHoursPerIteration": 0.0}
    if res.gpus == 0:
        return _cpu_stage(stage)
    # ppl on vLLM splits the model over the stage's GPUs (tensor parallel = gpus, as the stage
    # does); density takes its embeddings from transformers, which loads on one GPU.
    engine = "transformers" if method == "density" else _engine_name(spec)
    tp = res.gpus if engine == "vllm" else 1
    out = {"gpus": res.gpus, "pods": 1, "engine": engine,
           **_engine_memory(spec, shape, engine, tp, _serves_adapter(spec, stage))}
    tokens = data_size(spec) * (ASSUMPTIONS["instructionTokens"] + spec.synthesis.max_tokens)
    seconds = tokens * 2 * shape.params() / (GPUS[gpu]["flops"] * ASSUMPTIONS["prefillMfu"])
    out.update(tokensPerIteration=tokens, gpuHoursPerIteration=round(seconds * res.gpus / 3600, 2),
               formula="pairs x (instruction + maxTokens) x 2 N / (peak FLOP/s x prefillMfu): one forward pass a pair")
    return out


def _train(spec: RunSpec, shape: ModelShape, stage: str, gpu: str) -> dict:
    res, t = spec.stages.train, spec.training
    if res.gpus == 0:
        return _cpu_stage(stage, res.nodes)
    ranks = res.gpus * res.nodes
    checkpointing, attn = t.gradient_checkpointing, t.attn_implementation
    m = train_memory(shape, ranks=ranks, zero_stage=t.zero_stage, lora_rank=t.lora.rank,
                     micro_batch=t.per_device_batch_size, seq_len=t.cutoff_length,
                     checkpointing=checkpointing, attn=attn,
                     param_bytes=4 if t.precision == "fp32" else 2)
    gpu_bytes = spec.resources.gpu_memory_gib * GiB
    total = m.total()
    with_ckpt, without = m.total(m.activations_with_checkpointing), m.total(m.activations_without_checkpointing)
    samples = math.floor(min(t.max_samples, data_size(spec)) * (1 - t.validation_fraction))
    tokens = math.ceil(samples * t.epochs) * t.cutoff_length
    # Per token: forward 2N, backward 2N (input gradients only: the base is frozen, LoRA's own
    # weight gradients are negligible), and 2N more to recompute the forward under checkpointing.
    flops = tokens * (6 if checkpointing else 4) * shape.params()
    seconds = flops / (ranks * GPUS[gpu]["flops"] * ASSUMPTIONS["trainMfu"])
    return {
        "gpus": res.gpus, "pods": res.nodes, "ranks": ranks, "zeroStage": t.zero_stage,
        "gradientCheckpointing": checkpointing, "attnImplementation": attn,
        "memoryGiBPerRank": _gib(total),
        "memory": {"weightsGiB": _gib(m.weights), "gatheredWeightsGiB": _gib(m.gathered),
                   "loraStatesGiB": _gib(m.lora_states), "buffersGiB": _gib(m.buffers),
                   "activationsGiB": _gib(m.activations), "logitsGiB": _gib(m.logits),
                   "reserveGiB": _gib(m.reserve)},
        "loraParams": shape.lora_params(t.lora.rank),
        "memoryGiBPerRankWithCheckpointing": _gib(with_ckpt),
        "memoryGiBPerRankWithoutCheckpointing": _gib(without),
        "fits": total <= gpu_bytes,
        "fitsWithCheckpointing": with_ckpt <= gpu_bytes,
        "fitsWithoutCheckpointing": without <= gpu_bytes,
        "why": (f"{_gib(total)} GiB per rank of {spec.resources.gpu_memory_gib:g}: weights shard "
                f"{_gib(m.weights)}, gathered {_gib(m.gathered)}, LoRA states {_gib(m.lora_states)}, "
                f"activations {_gib(m.activations)} (micro-batch {t.per_device_batch_size} x cutoff "
                f"{t.cutoff_length}, checkpointing {'on' if checkpointing else 'off'}), logits "
                f"{_gib(m.logits)}, buffers {_gib(m.buffers)}, reserve {_gib(m.reserve)}"),
        "tokensPerIteration": tokens,
        "wallHoursPerIteration": round(seconds / 3600, 2),
        "gpuHoursPerIteration": round(seconds * ranks / 3600, 2),
        "formula": "tokens = floor(min(maxSamples, dataSize) x (1 - validationFraction)) x epochs x "
                   "cutoffLength (every sample taken at the cutoff: an upper bound); FLOPs = tokens x "
                   "(4, or 6 with checkpointing) x N; seconds = FLOPs / (ranks x peak FLOP/s x trainMfu)",
    }


# --- storage ----------------------------------------------------------------------------------


def models_stored(spec: RunSpec, trained: int) -> int:
    """Iteration models on the volume at the peak under storage.keepModels
    (planner/model_keep_policy.py): all; last keeps M_{t-1} while M_t is written; best and an
    exported run keep the best one too."""
    keep = spec.storage.keep_models
    if keep == "all":
        return trained
    return min(trained, 2 if keep == "last" and spec.export is None else 3)


def _storage(spec: RunSpec, shape: ModelShape, claim_gib: Optional[float]) -> dict:
    t = spec.training
    trained = 1 if t.strategy == "direct" else iteration_count(spec)
    lora = shape.lora_params(t.lora.rank)
    adapter = lora * 4  # PEFT keeps (and saves) adapters in fp32
    # train writes the adapter beside its output and the model of the next iteration: merged
    # (a whole model in the base's dtype) or, with merge: false, the adapter again.
    per_iteration_model = adapter + (shape.weight_bytes() if t.merge else adapter)
    a = spec.assessment
    pair_tokens = ASSUMPTIONS["instructionTokens"] + spec.synthesis.max_tokens + len(a.criteria) * (
        a.max_tokens if a.scoring == "text" else 1)
    # synthesize's outputs, then curate's and train's copies of the kept pairs: about twice.
    data = data_size(spec) * pair_tokens * ASSUMPTIONS["bytesPerToken"] * 2
    # During a train: two checkpoints (save_total_limit) of the LoRA states (fp32 master,
    # momentum, variance, 16-bit copy), deleted once the model is written.
    checkpoints = 2 * lora * 14
    stored = models_stored(spec, trained)
    # storage.keepModels deletes superseded models (their adapters and data stay): at the peak,
    # while iteration t trains, M_{t-1}, M_t (and the best one) are on the volume.
    total = (shape.weight_bytes() + trained * (per_iteration_model + data) + checkpoints
             - (trained - stored) * (per_iteration_model - adapter))
    return {
        "baseGiB": _gib(shape.weight_bytes()),
        "modelsGiBPerIteration": _gib(per_iteration_model),
        "dataGiBPerIteration": _gib(data),
        "checkpointsGiB": _gib(checkpoints),
        "iterationsStored": trained,
        "modelsStored": stored,
        "keepModels": spec.storage.keep_models,
        "totalGiB": _gib(total),
        "formula": "base + iterations x (merged model or adapter, + adapter, + data) + checkpoints of one train, "
                   "less the superseded models storage.keepModels deletes (all: none; last: all but 2; "
                   "best, or an exported run: all but 3)",
        "claimGiB": claim_gib,
        "fits": None if claim_gib is None else total <= claim_gib * GiB,
    }


# --- refusals and text ------------------------------------------------------------------------


def fit_problems(plan: dict) -> list[str]:
    """One line per stage (or the storage) that cannot fit, with the numbers."""
    problems = []
    gib = plan["gpuMemoryGiB"]
    for stage, s in plan["stages"].items():
        if s["fits"] is not False:
            continue
        hint = ""
        if stage == "train" and not s["gradientCheckpointing"] and s["fitsWithCheckpointing"]:
            hint = (f"; with training.gradientCheckpointing: true it needs "
                    f"{s['memoryGiBPerRankWithCheckpointing']} GiB")
        elif stage != "train":
            hint = f"; give stages.{stage} more GPUs (tensor parallel) or a smaller model"
        problems.append(f"stages.{stage} cannot fit in spec.resources.gpuMemoryGiB {gib:g} GiB per GPU: "
                        f"{s['why']}{hint}")
    st = plan["storage"]
    if st["fits"] is False:
        problems.append(f"storage: the run needs about {st['totalGiB']} GiB (base {st['baseGiB']} + "
                        f"{st['iterationsStored']} x ({st['modelsGiBPerIteration']} model + "
                        f"{st['dataGiBPerIteration']} data) + {st['checkpointsGiB']} checkpoints) but the "
                        f"claim holds {st['claimGiB']:g} GiB")
    return problems


def format_plan(plan: dict) -> str:
    m = plan["model"]
    lines = [f"model: {m['source'] or 'config.json'}: {m['params'] / 1e9:.2f} B params, {m['layers']} layers, "
             f"weights {m['weightsGiB']} GiB, max_model_len {m['maxModelLen']}",
             f"GPU: {plan['gpu']}, spec.resources.gpuMemoryGiB {plan['gpuMemoryGiB']:g}", ""]
    for stage, s in plan["stages"].items():
        fits = {True: "fits", False: "DOES NOT FIT", None: "no GPU"}[s["fits"]]
        lines.append(f"{stage}: {s['gpus']} GPU(s) x {s['pods']} pod(s), {s['memoryGiBPerRank']} GiB per rank: {fits}")
        lines.append(f"  {s['why']}")
        if "kvCache" in s:
            kv = s["kvCache"]
            lines.append(f"  KV cache: {kv['tokens']} tokens = {kv['sequencesAtMaxModelLen']} sequences of "
                         f"{kv['maxModelLen']} tokens ({kv['bytesPerTokenPerRank']} bytes per token per rank)")
        if "memoryGiBPerRankWithCheckpointing" in s:
            lines.append(f"  with gradient checkpointing {s['memoryGiBPerRankWithCheckpointing']} GiB, without "
                         f"{s['memoryGiBPerRankWithoutCheckpointing']} GiB; LoRA {s['loraParams'] / 1e6:.1f} M params")
        for name, p in (s.get("phases") or {}).items():
            lines.append(f"  {name}: {p['requests']} requests, {p['promptTokens']} prompt + {p['decodeTokens']} "
                         f"decode tokens, {p['runningSequences']} at once, ~{p['seconds'] / 3600:.2f} h")
        if s.get("gpuHoursPerIteration") is not None and s.get("tokensPerIteration"):
            lines.append(f"  per iteration: {s['tokensPerIteration']} tokens, {s['gpuHoursPerIteration']} GPU-hours")
    st = plan["storage"]
    claim = "" if st["claimGiB"] is None else f" of a {st['claimGiB']:g} GiB claim: {'fits' if st['fits'] else 'DOES NOT FIT'}"
    kept = "" if st["modelsStored"] == st["iterationsStored"] else \
        f", keepModels {st['keepModels']}: {st['modelsStored']} models at most"
    lines += ["", f"storage: {st['totalGiB']} GiB{claim} (base {st['baseGiB']} + {st['iterationsStored']} x "
              f"({st['modelsGiBPerIteration']} models + {st['dataGiBPerIteration']} data) + "
              f"{st['checkpointsGiB']} checkpoints{kept})",
              f"GPU-hours per iteration: {plan['gpuHoursPerIteration']} (an estimate; formulas and assumptions: "
              "--output json)",
              f"every stage fits: {'yes' if plan['fits'] else 'NO'}"]
    return "\n".join(lines) + "\n"
