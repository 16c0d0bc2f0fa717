"""engines.choose_engine: `engine: auto` picks what can run here (issue 21 item 4)."""

import pytest

from sheepdog_jobs.engines import EngineError, choose_engine, resolve_engine, vllm_build


@pytest.mark.parametrize("build, cuda, expected", [
    ("cpu", False, "vllm"),  # vLLM's CPU build runs anywhere
    ("cpu", True, "vllm"),
    ("cuda", True, "vllm"),
    ("cuda", False, "transformers"),  # the GPU worker image scheduled on a CPU node
    (None, True, "transformers"),
    (None, False, "transformers"),
])
def test_auto_picks_what_can_run(build, cuda, expected):
    assert choose_engine("auto", build, cuda) == expected


def test_an_explicit_engine_is_taken_or_refused():
    assert choose_engine("vllm", "cuda", False) == "vllm"  # asked for: its own error at start says why
    assert choose_engine("transformers", "cpu", False) == "transformers"
    with pytest.raises(EngineError, match="not installed"):
        choose_engine("vllm", None, True)
    with pytest.raises(EngineError, match="unknown engine"):
        choose_engine("tgi", "cpu", False)


def test_this_machine_has_vllms_cpu_build_and_auto_picks_it():
    """CI installs vLLM's CPU build (scripts/setup-venv): the quickstart runs on it unchanged."""
    assert vllm_build() == "cpu"
    assert resolve_engine("auto") == "vllm"
