"""`sheepdog export` of a real model: the exported directory loads in transformers on its own
(the run directory is gone by then) and generates the same tokens as the model it came from."""

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

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    source = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        got = model.generate(ids, max_new_tokens=4, do_sample=False)
        want = source.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(got, want)
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "# tiny: iteration 1" in card
