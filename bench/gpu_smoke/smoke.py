"""The GPU smoke (issue 22 item 9): what one GPU does with the paper's model shape, with torch
alone: no transformers, peft, vLLM or DeepSpeed, no network, no weights. It runs on a bare GPU
machine with that machine's own Python (bench/gpu_smoke/pack.sh makes the kit; docs/gpu-plan.md
says how to run it) and prints one JSON object, the last line of stdout.

What it builds: a decoder of the family I-SHEEP trains (LLaMA / Qwen2: RMSNorm, rotary
positions, grouped-query attention through torch's SDPA, a SwiGLU MLP, q/k/v biases for Qwen)
at the width of the chosen shape (Qwen1.5-72B's by default) with a few layers, random weights in
bf16 (fp32 on CPU), and LoRA (rank r on every linear) written here.

What it measures:
* train: cutoff-length rows of random tokens, micro-batch 1, AdamW on the LoRA parameters, with
  and without gradient checkpointing (torch.utils.checkpoint, non-reentrant), at two layer
  counts: step time and tokens/s of the steps after the first, MFU (the train stage's formula,
  jobs/sheepdog_jobs/training/mfu.py), the peak memory (torch.cuda.max_memory_allocated; on CPU
  the resident set's high-water mark), and the bytes saved for backward (saved-tensor hooks,
  exact on both devices). The difference between the two layer counts is the memory of one
  layer; scaled to the shape's layer count it is compared with `sheepdog plan`'s activation
  figures (sheepdog.capacity.memory, which the kit carries).
* generate: a batch of prompts, prefill then greedy decode with a KV cache, all on the device:
  prefill and decode tokens/s.

    python3 smoke.py [--device cpu|cuda] [--shape qwen1.5-72b|smollm2-135m] [--layers 2,4] ...
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# In the kit, mfu.py and sheepdog/capacity sit beside this file; in the repository, their sources.
for path in (HERE, REPO / "jobs" / "sheepdog_jobs" / "training", REPO / "operator"):
    if path.is_dir() and str(path) not in sys.path:
        sys.path.append(str(path))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.checkpoint import checkpoint  # noqa: E402

import mfu as mfu_math  # noqa: E402

GIB = 2 ** 30
# The shapes' config.json fields (Qwen/Qwen1.5-72B, HuggingFaceTB/SmolLM2-135M-Instruct).
SHAPES = {
    "qwen1.5-72b": dict(hidden=8192, layers=80, heads=64, kv_heads=64, intermediate=24576, vocab=152064,
                        qkv_bias=True, tied=False, model_type="qwen2"),
    "smollm2-135m": dict(hidden=576, layers=30, heads=9, kv_heads=3, intermediate=1536, vocab=49152,
                         qkv_bias=False, tied=True, model_type="llama"),
}


class LoraLinear(nn.Module):
    """A frozen linear plus a trainable low-rank update B(A x) x alpha / r (B starts at zero)."""

    def __init__(self, d_in: int, d_out: int, rank: int, bias: bool = False, alpha: int = 16):
        super().__init__()
        self.base = nn.Linear(d_in, d_out, bias=bias)
        self.base.requires_grad_(False)
        self.a = nn.Linear(d_in, rank, bias=False)
        self.b = nn.Linear(rank, d_out, bias=False)
        nn.init.zeros_(self.b.weight)
        self.scale = alpha / rank

    def forward(self, x):
        return self.base(x) + self.b(self.a(x)) * self.scale


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


def rotary(q, k, positions, head_dim: int, base: float = 1e6):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=q.device, dtype=torch.float32) / head_dim))
    angles = positions[:, None].float() * inv[None, :]
    cos, sin = torch.cat([angles, angles], -1).cos().to(q.dtype), torch.cat([angles, angles], -1).sin().to(q.dtype)

    def rot(x):
        half = x.shape[-1] // 2
        return torch.cat([-x[..., half:], x[..., :half]], -1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


class Layer(nn.Module):
    def __init__(self, s: dict, rank: int):
        super().__init__()
        h, self.heads, self.kv_heads = s["hidden"], s["heads"], s["kv_heads"]
        self.head_dim = h // self.heads
        kv = self.kv_heads * self.head_dim
        self.q = LoraLinear(h, h, rank, s["qkv_bias"])
        self.k = LoraLinear(h, kv, rank, s["qkv_bias"])
        self.v = LoraLinear(h, kv, rank, s["qkv_bias"])
        self.o = LoraLinear(h, h, rank)
        self.gate = LoraLinear(h, s["intermediate"], rank)
        self.up = LoraLinear(h, s["intermediate"], rank)
        self.down = LoraLinear(s["intermediate"], h, rank)
        self.norm1, self.norm2 = RMSNorm(h), RMSNorm(h)

    def forward(self, x, positions, cache=None):
        b, t, _ = x.shape
        y = self.norm1(x)
        q = self.q(y).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(y).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(y).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = rotary(q, k, positions, self.head_dim)
        if cache is not None:  # generation: append to this layer's keys and values
            if cache.get("k") is not None:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        if self.kv_heads != self.heads:  # grouped-query: each key/value head serves a group (any torch 2)
            k = k.repeat_interleave(self.heads // self.kv_heads, 1)
            v = v.repeat_interleave(self.heads // self.kv_heads, 1)
        causal = cache is None or t > 1
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        x = x + self.o(attn.transpose(1, 2).reshape(b, t, -1))
        y = self.norm2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


class Decoder(nn.Module):
    def __init__(self, s: dict, layers: int, rank: int):
        super().__init__()
        self.embed = nn.Embedding(s["vocab"], s["hidden"])
        self.embed.requires_grad_(False)
        self.layers = nn.ModuleList(Layer(s, rank) for _ in range(layers))
        self.norm = RMSNorm(s["hidden"])
        self.head = None if s["tied"] else nn.Linear(s["hidden"], s["vocab"], bias=False).requires_grad_(False)
        self.checkpointing = False

    def logits(self, x):
        return F.linear(self.norm(x), self.embed.weight if self.head is None else self.head.weight)

    def forward(self, ids, positions, caches=None):
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            if self.checkpointing and caches is None:
                x = checkpoint(layer, x, positions, use_reentrant=False)
            else:
                x = layer(x, positions, None if caches is None else caches[i])
        return x


def matmul_params(model: Decoder) -> tuple[int, int]:
    """(N_frozen, N_lora) as the train stage counts them: linears and the LM head, LoRA's."""
    frozen = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad and p.dim() >= 2
                 and not n.startswith("embed"))
    frozen += model.embed.weight.numel() if model.head is None else 0  # a tied head multiplies by it
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return frozen, lora


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "maxrss"


def saved_bytes(model, ids, positions) -> int:
    """Bytes autograd keeps for backward over one forward and loss (each storage once)."""
    seen, total = set(), [0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key not in seen and t.device.type != "meta":
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = train_loss(model, ids, positions)
    loss.backward()
    return total[0]


def train_loss(model, ids, positions):
    x = model(ids, positions)
    logits = model.logits(x).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


def train(s, layers, args, device, dtype, checkpointing) -> dict:
    torch.manual_seed(0)
    model = Decoder(s, layers, args.lora_rank).to(device=device, dtype=dtype)
    model.checkpointing = checkpointing
    frozen, lora = matmul_params(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, s["vocab"], (args.micro_batch, args.cutoff), device=device)
    positions = torch.arange(args.cutoff, device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    durations = []
    for _ in range(args.steps):
        sync(device)
        began = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        train_loss(model, ids, positions).backward()
        opt.step()
        sync(device)
        durations.append(time.perf_counter() - began)
    peak, source = peak_bytes(device)
    saved = saved_bytes(model, ids, positions)
    steady = durations[1:] or durations  # the first step is warm-up
    step = sum(steady) / len(steady)
    tokens = args.micro_batch * args.cutoff / step
    per_token = mfu_math.flops_per_token(frozen, lora, layers, s["hidden"], args.cutoff)
    peak_flops = mfu_math.peak_flops(torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    util = mfu_math.mfu(tokens, per_token, 1, peak_flops)
    del model, opt
    return {"layers": layers, "gradientCheckpointing": checkpointing, "stepSeconds": round(step, 4),
            "tokensPerSecond": round(tokens, 1), "mfu": None if util is None else round(util, 4),
            "peakGiB": round(peak / GIB, 3), "peakSource": source, "savedForBackwardGiB": round(saved / GIB, 4),
            "frozenParams": frozen, "loraParams": lora}


@torch.inference_mode()
def generate(s, layers, args, device, dtype) -> dict:
    torch.manual_seed(0)
    model = Decoder(s, layers, args.lora_rank).to(device=device, dtype=dtype).eval()
    ids = torch.randint(0, s["vocab"], (args.batch, args.prompt_tokens), device=device)
    caches = [{} for _ in model.layers]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    began = time.perf_counter()
    x = model(ids, torch.arange(args.prompt_tokens, device=device), caches)
    nxt = model.logits(x[:, -1:]).argmax(-1)  # sampled on the device: no host round trip a token
    sync(device)
    prefill = time.perf_counter() - began
    began = time.perf_counter()
    for i in range(args.decode_tokens - 1):
        pos = torch.tensor([args.prompt_tokens + i], device=device)
        nxt = model.logits(model(nxt, pos, caches)).argmax(-1)
    sync(device)
    decode = time.perf_counter() - began
    peak, source = peak_bytes(device)
    return {"layers": layers, "batch": args.batch, "promptTokens": args.prompt_tokens,
            "decodeTokens": args.decode_tokens, "prefillTokensPerSecond": round(args.batch * args.prompt_tokens / prefill, 1),
            "decodeTokensPerSecond": round(args.batch * (args.decode_tokens - 1) / max(decode, 1e-9), 1),
            "peakGiB": round(peak / GIB, 3), "peakSource": source}


def planned(shape_name: str, s: dict, args) -> dict | None:
    """sheepdog plan's activation figures for this shape (sheepdog.capacity), if importable."""
    try:
        from sheepdog.capacity.memory import layer_activation_bytes
        from sheepdog.capacity.shape import ModelShape
    except ImportError as exc:
        return {"error": f"sheepdog.capacity not importable: {exc}"}
    shape = ModelShape(hidden=s["hidden"], layers=s["layers"], heads=s["heads"], kv_heads=s["kv_heads"],
                       intermediate=s["intermediate"], vocab=s["vocab"], head_dim=s["hidden"] // s["heads"],
                       tied_embeddings=s["tied"], max_position=32768, dtype_bytes=2, qkv_bias=s["qkv_bias"],
                       source=shape_name)
    tokens = args.micro_batch * args.cutoff
    per_layer = layer_activation_bytes(shape, args.lora_rank, tokens, args.cutoff)
    return {"activationGiBPerLayer": round(per_layer / GIB, 4),
            "activationsGiBWithoutCheckpointing": round(s["layers"] * per_layer / GIB, 2),
            "activationsGiBWithCheckpointing": round((s["layers"] * tokens * s["hidden"] * 2 + per_layer) / GIB, 2)}


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if cuda else "cpu")
    p.add_argument("--shape", choices=sorted(SHAPES))
    p.add_argument("--layers", default=None, help="two layer counts, e.g. 2,4 (their difference is one layer's cost)")
    p.add_argument("--cutoff", type=int, default=None, help="training row length (training.cutoffLength)")
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--batch", type=int, default=None, help="generation batch")
    p.add_argument("--prompt-tokens", type=int, default=None)
    p.add_argument("--decode-tokens", type=int, default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not cuda:
        p.error("--device cuda: torch sees no CUDA device (--device cpu runs the same steps on the CPU)")
    gpu = args.device == "cuda"
    # On CPU the small shape and short rows: the check that the script is right, in a minute.
    args.shape = args.shape or ("qwen1.5-72b" if gpu else "smollm2-135m")
    defaults = {"layers": "2,4", "cutoff": 1024 if gpu else 128, "steps": 6 if gpu else 3,
                "batch": 64 if gpu else 4, "prompt_tokens": 512 if gpu else 32, "decode_tokens": 128 if gpu else 8}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        small, large = sorted(int(x) for x in args.layers.split(","))
    except ValueError:
        p.error(f"--layers {args.layers!r}: two layer counts, e.g. 2,4")
    if not 1 <= small < large:
        p.error("--layers: two different counts of at least 1")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if gpu else torch.float32
    s = SHAPES[args.shape]
    started = time.perf_counter()
    runs = [train(s, n, args, device, dtype, ckpt) for ckpt in (False, True) for n in (small, large)]
    per_layer = {}
    for ckpt in (False, True):
        a, b = [r for r in runs if r["gradientCheckpointing"] is ckpt]
        saved = (b["savedForBackwardGiB"] - a["savedForBackwardGiB"]) / (large - small)
        peak = (b["peakGiB"] - a["peakGiB"]) / (large - small)
        key = "withCheckpointing" if ckpt else "withoutCheckpointing"
        per_layer[key] = {"savedForBackwardGiB": round(saved, 4), "peakGiB": round(peak, 4),
                          f"scaledTo{s['layers']}LayersSavedGiB": round(saved * s["layers"], 2)}
    result = {
        "device": args.device, "deviceName": torch.cuda.get_device_name(device) if gpu else platform.machine(),
        "torch": torch.__version__, "python": platform.python_version(), "dtype": str(dtype).split(".")[-1],
        "shape": args.shape, "cutoff": args.cutoff, "microBatch": args.micro_batch, "loraRank": args.lora_rank,
        "train": runs, "perLayer": per_layer, "planned": planned(args.shape, s, args),
        "generate": generate(s, large, args, device, dtype),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
