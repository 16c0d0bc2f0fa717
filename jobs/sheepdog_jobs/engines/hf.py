"""TransformersEngine: batched generation on CPU (or one GPU) with Hugging Face transformers.

We run our own decode loop instead of model.generate() because generate() draws every row
from one global RNG: a prompt's sample would then depend on its batch neighbours. Here each
row has its own torch.Generator seeded with its request seed, like vLLM's per-request seeds,
so a restarted phase reproduces the same samples whatever the batching.
"""

from __future__ import annotations

import time
from typing import Sequence

from sheepdog_jobs.engines.base import Completion, Engine, cut_at_stop, seeds_for
from sheepdog_jobs.engines.prompting import PromptFormat

_GREEDY_BELOW = 1e-5
_STOP_WINDOW = 8  # tokens decoded after each step to see a stop string appear


def _batches(order: list[int], size: int):
    for i in range(0, len(order), size):
        yield order[i:i + size]


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, model: str, chat_template: str = "none", *, batch_size: int = 8,
                 dtype: str = "auto", model_obj=None, tokenizer=None, adapter: str | None = None):
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.adapter = adapter

        self.torch = torch
        started = time.monotonic()
        self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
        if model_obj is None:
            torch_dtype = torch.float32 if dtype == "auto" and not torch.cuda.is_available() else "auto"
            model_obj = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
            if adapter is not None:
                # training.merge: false: peft applies the adapter to the base. Folded into the
                # weights in memory (nothing is written): the same outputs as the unmerged
                # layers without their extra matmuls in every decode step.
                from peft import PeftModel

                model_obj = PeftModel.from_pretrained(model_obj, adapter).merge_and_unload()
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
            model_obj.to(self.device)
            self.loads += 1
        else:
            self.device = next(model_obj.parameters()).device
        self.model = model_obj.eval()
        self.load_seconds = time.monotonic() - started
        self.format = PromptFormat(self.tokenizer, chat_template)
        self.eos = self.format.eos_ids(getattr(self.model, "generation_config", None))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos) if self.eos else 0
        self.batch_size = batch_size

    # ---- helpers -----------------------------------------------------------------------------
    def _left_pad(self, seqs: list[list[int]]):
        torch = self.torch
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        # Positions count real tokens only, so a left-padded row sees the same RoPE phases
        # as it would alone.
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def _sample(self, logits, generators, temperature: float, top_p: float):
        torch = self.torch
        if temperature < _GREEDY_BELOW:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, idx = probs.sort(dim=-1, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the token crossing it included).
            drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, idx, sorted_p)
        out = [torch.multinomial(probs[i], 1, generator=g).squeeze(0) for i, g in enumerate(generators)]
        return torch.stack(out)

    # ---- Engine API --------------------------------------------------------------------------
    def generate(self, prompts, *, temperature, top_p, max_tokens, seed, stop=()):
        torch = self.torch
        seeds = seeds_for(seed, len(prompts))
        encoded = [self.format.encode(p) for p in prompts]
        self.prompt_tokens += sum(len(e) for e in encoded)
        # Longest first: similar lengths share a batch (less padding), and memory peaks early.
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(prompts)
        started = time.monotonic()
        with torch.inference_mode():
            for rows in _batches(order, self.batch_size):
                for i, c in zip(rows, self._generate_batch([encoded[i] for i in rows], [seeds[i] for i in rows],
                                                           temperature, top_p, max_tokens, tuple(stop))):
                    results[i] = c
        self.generate_seconds += time.monotonic() - started
        self.generated_tokens += sum(c.num_tokens for c in results)
        return results

    def _generate_batch(self, seqs, seeds, temperature, top_p, max_tokens, stop=()):
        torch = self.torch
        from transformers import DynamicCache

        if self.request_seeds:
            gens = [torch.Generator(device="cpu").manual_seed(int(s) & 0xFFFF_FFFF_FFFF) for s in seeds]
        else:  # a global seed (synthesis.seedScope: global): one stream for the whole batch
            gens = [torch.Generator(device="cpu").manual_seed(int(seeds[0]) & 0xFFFF_FFFF_FFFF)] * len(seeds)
        ids, mask, pos = self._left_pad(seqs)
        cache = DynamicCache()
        # logits_to_keep=1: the prompt's full logits would be batch x length x vocab floats
        # (GBs for a 150k vocabulary) and only the last position is sampled from.
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        n = len(seqs)
        tokens: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        reasons = ["length"] * n
        next_pos = pos[:, -1:] + 1
        for _ in range(max_tokens):
            nxt = self._sample(out.logits[:, -1, :].to("cpu"), gens, temperature, top_p)
            for i in range(n):
                if done[i]:
                    continue
                t = int(nxt[i])
                tokens[i].append(t)
                if t in self.eos:
                    done[i], reasons[i] = True, "stop"
                elif stop and cut_at_stop(self.tokenizer.decode(tokens[i][-_STOP_WINDOW:]), stop)[1]:
                    # A few tokens back is enough to see a short stop string appear.
                    done[i], reasons[i] = True, "stop"
            if all(done):
                break
            # Finished rows keep decoding padding; their outputs are ignored (cheaper than
            # re-packing the cache for a handful of rows).
            feed = torch.tensor([self.pad_id if done[i] else tokens[i][-1] for i in range(n)]).to(self.device)
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
            out = self.model(input_ids=feed[:, None], attention_mask=mask, position_ids=next_pos,
                             past_key_values=cache, use_cache=True, logits_to_keep=1)
            next_pos = next_pos + 1
        results = []
        for i in range(n):
            body = [t for t in tokens[i] if t not in self.eos]
            text, _ = cut_at_stop(self.tokenizer.decode(body, skip_special_tokens=True), stop)
            results.append(Completion(text=text, finish_reason=reasons[i], num_tokens=len(tokens[i])))
        return results

    def _forward_logprobs(self, seqs: list[list[int]], keep: int = 0):
        """log-softmax over the vocabulary for a left-padded batch, at the last `keep`
        positions (0 = all)."""
        ids, mask, pos = self._left_pad(seqs)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep).logits
        return self.torch.log_softmax(logits.float(), dim=-1), mask

    def _digit_logprobs(self, jobs):
        torch = self.torch
        out = [None] * len(jobs)
        order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0]))
        with torch.inference_mode():
            for rows in _batches(order, self.batch_size):
                seqs = []
                for i in rows:
                    ids, plan = jobs[i]
                    # "split": one extra token "1" gives P("0" | ... "1") at the last position
                    # of the same forward pass.
                    seqs.append(ids + [plan.digits["1"]] if plan.ten[0] == "split" else ids)
                logp, _ = self._forward_logprobs(seqs, keep=2)
                for row, i in enumerate(rows):
                    ids, plan = jobs[i]
                    at = -2 if plan.ten[0] == "split" else -1
                    first = {d: float(logp[row, at, t]) for d, t in plan.digits.items()}
                    out[i] = (first, float(logp[row, -1, plan.ten[1]]))
        return out

    def perplexity(self, texts):
        import math

        torch = self.torch
        seqs = [self.format.encode_plain(t) for t in texts]
        self.prompt_tokens += sum(len(s) for s in seqs)
        out = [float("nan")] * len(texts)
        with torch.inference_mode():
            for rows in _batches(sorted(range(len(seqs)), key=lambda i: -len(seqs[i])), self.batch_size):
                batch = [seqs[i] for i in rows]
                logp, mask = self._forward_logprobs(batch)
                width = logp.shape[1]
                for row, i in enumerate(rows):
                    n = len(seqs[i])
                    if n < 2:
                        continue
                    start = width - n
                    target = torch.tensor(seqs[i][1:], device=logp.device)
                    lp = logp[row, start:width - 1].gather(-1, target[:, None]).squeeze(-1)
                    out[i] = math.exp(-float(lp.mean()))
        return out

    def embed(self, texts):
        import numpy as np

        torch = self.torch
        seqs = [self.format.encode_plain(t) for t in texts]
        out = [None] * len(texts)
        with torch.inference_mode():
            for rows in _batches(list(range(len(seqs))), self.batch_size):
                ids, mask, pos = self._left_pad([seqs[i] for i in rows])
                hidden = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                    output_hidden_states=True).hidden_states[-1].float()
                m = mask[..., None].to(hidden.dtype)
                means = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
                for row, i in enumerate(rows):
                    out[i] = means[row].cpu().numpy()
        return np.stack(out) if out else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)

    def close(self) -> None:
        self.model = None
