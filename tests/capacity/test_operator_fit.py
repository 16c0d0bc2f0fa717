"""The operator's fit check (capacity/admission.py): with the base's config.json in
spec.model.shape, the pre-flight holds a run whose stage cannot fit its GPUs, with the plan's
numbers, before any Job; `sheepdog validate` plans from the same field when it cannot read
config.json itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from sheepdog.api.spec import RunSpec
from sheepdog.capacity.admission import shape_fit_problems
from sheepdog.kube.preflight import prepare
from tests.capacity.shapes import QWEN72B

RUN = {"metadata": {"name": "r", "namespace": "ns", "uid": "u"}}
PAPER_GPUS = {"synthesize": {"gpus": 8, "tensorParallel": 8}, "train": {"gpus": 8}}
# 4096-token rows without checkpointing: 175 GiB of activations a rank (docs/gpu-plan.md)
UNFIT_TRAIN = {"cutoffLength": 4096, "gradientCheckpointing": False}


def spec(shape=None, **training):
    return RunSpec.model_validate({"model": {"base": "/data/models/q72", **({"shape": shape} if shape else {})},
                                   "stages": PAPER_GPUS, "training": training})


def test_without_a_shape_nothing_is_checked():
    assert shape_fit_problems(spec(**UNFIT_TRAIN)) == []


def test_a_train_that_cannot_fit_is_refused_with_its_numbers():
    problems = shape_fit_problems(spec(QWEN72B, **UNFIT_TRAIN))
    assert len(problems) == 1, problems
    assert problems[0].startswith("stages.train cannot fit in spec.resources.gpuMemoryGiB 80 GiB per GPU")
    assert "activations" in problems[0] and "training.gradientCheckpointing: true" in problems[0]
    assert problems[0].endswith("(planned from spec.model.shape)")
    assert shape_fit_problems(spec(QWEN72B)) == []  # the defaults fit 8 x 80 GB


def test_an_unreadable_shape_is_a_problem():
    [problem] = shape_fit_problems(spec({"hidden_size": 8192}))
    assert "spec.model.shape" in problem and "num_hidden_layers" in problem


def test_the_preflight_holds_an_unfit_run_before_any_job():
    out = prepare(RUN, spec(QWEN72B, **UNFIT_TRAIN), None)
    assert not out.passed and out.problems[0].startswith("stages.train cannot fit")
    fit = prepare(RUN, spec(QWEN72B), None)
    assert fit.passed and fit.problems == []


def test_validate_plans_from_the_shape_when_config_json_is_out_of_reach(tmp_path):
    run = {"apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "metadata": {"name": "q"},
           "spec": spec(QWEN72B, **UNFIT_TRAIN).to_wire()}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    proc = subprocess.run([str(Path(sys.executable).parent / "sheepdog"), "validate", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "stages.train cannot fit" in proc.stdout + proc.stderr
