"""Sends the vLLM engine one batch of seeded instruction requests (the synthesize phase-A shape:
a shared ICL meta prompt, prefix caching on) larger than one scheduler step's token budget.
Prints one JSON line: prompt tokens, the step budget, and the texts; or, when the engine fails,
{"error": <the EngineError's one-line message>}.

    python tests/jobs/scripts/vllm_big_batch.py MODEL N_PROMPTS

vLLM spawns its engine process: this must run as a program (the __main__ guard), not in pytest.
"""

import json
import random
import sys

if __name__ == "__main__":
    from sheepdog_jobs.stages.common import configure_torch_threads

    configure_torch_threads()  # as every stage program does, before torch is imported
    from sheepdog_jobs.engines import EngineError
    from sheepdog_jobs.engines.vllm_engine import VllmEngine
    from sheepdog_jobs.prompts import build_instruction_request
    from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS, load_seed_tasks

    model, n = sys.argv[1], int(sys.argv[2])
    seeds = load_seed_tasks(SELF_INSTRUCT_SEED_TASKS)
    rng = random.Random(0)
    prompts = [build_instruction_request(rng.sample(seeds, 5)) for _ in range(n)]
    engine = VllmEngine(model, "none", seed=0)
    scheduler = engine.llm.llm_engine.vllm_config.scheduler_config
    result = {"promptTokens": [len(engine.format.encode(p)) for p in prompts],
              "stepBudget": scheduler.max_num_batched_tokens,
              "chunkedPrefill": bool(scheduler.enable_chunked_prefill)}
    try:
        result["texts"] = [c.text for c in engine.generate(prompts, temperature=1.0, top_p=0.95,
                                                           max_tokens=8, seed=11)]
    except EngineError as exc:
        result["error"] = str(exc)
    engine.close()
    print(json.dumps(result), flush=True)
