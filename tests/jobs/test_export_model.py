"""`sheepdog export` of a real model: the exported directory loads in transformers on its own
(the run directory is gone by then), with the weights of the model it came from."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sheepdog.cli import main
from tests.export.conftest import make_run_dir


@pytest.mark.model
def test_exported_tiny_model_loads_in_transformers(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = make_run_dir(tmp_path / "run", model_source=Path(tiny_model), iterations=1, best=1)
    out = tmp_path / "exported"
    assert main(["export", str(run), "--iteration", "best", "--to", str(out)]) == 0
    shutil.rmtree(run)  # standalone: nothing may point back into the run

    # the weights are the run's, byte for byte; loading them takes transformers alone
    weights = sorted(p.name for p in Path(tiny_model).glob("*.safetensors"))
    assert weights and all((out / w).read_bytes() == (Path(tiny_model) / w).read_bytes() for w in weights)
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size) and torch.isfinite(logits).all()
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "# tiny: iteration 1" in card
