"""Serves a LoRA adapter directory (training.merge: false) through create_engine, as the stages
do, and generates greedily with and without the adapter applied. Prints one JSON line: the
engine, its base and adapter, the texts with the adapter and with the bare base, and (vLLM)
whether a LoRARequest went with every request.

    python tests/jobs/scripts/adapter_serving.py ENGINE ADAPTER_DIR

vLLM spawns its engine process on GPU: this must run as a program (the __main__ guard).
"""

import json
import sys

PROMPTS = ["The capital of France is", "List three colours:"]

if __name__ == "__main__":
    from sheepdog_jobs.stages.common import configure_torch_threads

    configure_torch_threads()  # as every stage program does, before torch is imported
    from sheepdog_jobs.engines import create_engine

    name, adapter = sys.argv[1], sys.argv[2]
    engine = create_engine(name, adapter, "none", seed=0)

    def texts(e):
        return [c.text for c in e.generate(PROMPTS, temperature=0.0, top_p=1.0, max_tokens=16, seed=0)]

    with_adapter = texts(engine)
    result = {"engine": engine.name, "adapter": engine.adapter, "loraRequest": None, "withAdapter": with_adapter}
    if engine.name == "vllm":
        result["base"] = engine.model_path
        result["loraRequest"] = engine.lora_request.lora_path if engine.lora_request else None
        engine.lora_request = None  # the same loaded base, the adapter not applied
        result["bare"] = texts(engine)
    else:
        from sheepdog_jobs.engines.adapters import resolve
        from sheepdog_jobs.engines.hf import TransformersEngine

        result["base"] = resolve(adapter).base
        result["bare"] = texts(TransformersEngine(result["base"], "none"))
    engine.close()
    print(json.dumps(result))
