"""docs/spec.md is generated from the models; it must not drift."""

from pathlib import Path

from sheepdog.api.reference import render, rows
from sheepdog.api.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]


def test_spec_reference_matches_models():
    assert (ROOT / "docs/spec.md").read_text() == render(), (
        "docs/spec.md is stale: run `python -m sheepdog.api.reference > docs/spec.md`"
    )


def test_reference_lists_every_api_md_field_with_its_default():
    table = {path: default for path, _, default, _ in rows(RunSpec)}
    # A sample of shared API.md's contract: names and defaults are fixed there.
    assert table["spec.synthesis.dataSize"] == "`10000`"
    assert table["spec.filter.threshold"] == "`8`"
    assert table["spec.training.strategy"] == '`"one_base"`'
    assert table["spec.assessment.criteria"] == '`["quality", "following"]`'
    assert table["spec.training.lora.alpha"] == "`16`"
    assert table["spec.model.base"] == "required"
