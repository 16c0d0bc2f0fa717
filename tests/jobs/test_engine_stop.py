"""Stop strings (Engine.generate(stop=...)): synthesize stops an instruction request at the
17th item as the authors' scripts do. cut_at_stop is pure; the transformers engine is checked
on the tiny model (vLLM takes SamplingParams.stop, which excludes the string the same way)."""

from __future__ import annotations

import pytest

from sheepdog_jobs.engines.base import cut_at_stop


def test_cut_at_stop_cuts_before_the_first_stop_string():
    assert cut_at_stop("a 16. x\n17. Instruction: y", ["17"]) == ("a 16. x\n", True)
    assert cut_at_stop("b 9 then 17", ["17", "9"]) == ("b ", True)
    assert cut_at_stop("no stop here", ["17"]) == ("no stop here", False)
    assert cut_at_stop("anything", []) == ("anything", False)


@pytest.mark.model
def test_transformers_engine_stops_at_a_stop_string(tiny_model):
    from sheepdog_jobs.engines import create_engine

    engine = create_engine("transformers", tiny_model, "none")
    try:
        prompt = "Count from 1 to 20: 1, 2, 3, 4, 5,"
        [free] = engine.generate([prompt], temperature=0.0, top_p=1.0, max_tokens=30, seed=0)
        [stopped] = engine.generate([prompt], temperature=0.0, top_p=1.0, max_tokens=30, seed=0, stop=["9"])
    finally:
        engine.close()
    assert "9" in free.text, free.text  # greedy counting reaches 9 within 30 tokens
    assert stopped.text == free.text[:free.text.index("9")]
    assert stopped.finish_reason == "stop" and stopped.num_tokens < free.num_tokens
