"""Loads a model directory in vLLM and greedily generates a few tokens. Prints one JSON line.

    python tests/jobs/scripts/vllm_load.py MODEL

vLLM spawns its engine process: this must run as a program (the __main__ guard), not in pytest.
"""

import json
import sys

if __name__ == "__main__":
    from sheepdog_jobs.engines.vllm_engine import VllmEngine

    engine = VllmEngine(sys.argv[1], "none", seed=0)
    [done] = engine.generate(["Name three primary colors."], temperature=0.0, top_p=1.0, max_tokens=4, seed=0)
    engine.close()
    print(json.dumps({"text": done.text, "tokens": done.num_tokens}), flush=True)
