"""synthesis.seedScope: per-request seeds (request, the default) make a row's sample a function
of its own seed; a global seed (global) draws every row from one stream seeded once, so only
the batch's first seed matters. The transformers engine on the tiny model; vLLM's equivalent is
SamplingParams(seed=None) under the engine's global seed (engines/vllm_engine.py submit)."""

from __future__ import annotations

import pytest

from sheepdog_jobs.engines import create_engine

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


def texts(engine, seeds):
    return [c.text for c in engine.generate(["Write a word:", "Write a word:"], temperature=1.0, top_p=1.0,
                                            max_tokens=16, seed=seeds)]


def test_request_seeds_follow_each_row_and_a_global_seed_only_the_first(tiny_model):
    engine = create_engine("transformers", tiny_model, "none")
    assert engine.request_seeds is True
    a, b = texts(engine, [1, 2]), texts(engine, [1, 999])
    assert a[0] == b[0] and a[1] != b[1]  # row 1's own seed decides its sample
    assert a == texts(engine, [1, 2])  # reproducible
    engine.request_seeds = False  # what create_engine(..., request_seeds=False) sets
    g = texts(engine, [1, 2])
    assert g == texts(engine, [1, 999])  # one stream, seeded by the first seed
    assert g == texts(engine, [1, 2])  # still reproducible for the same batch
    engine.close()
    assert create_engine("transformers", tiny_model, "none", request_seeds=False).request_seeds is False
