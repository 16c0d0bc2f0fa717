"""Every stage can hold its model: evaluate's GPUs (its tensor parallel) default to synthesize's
tensor parallel, decided once in the spec and read by the Job builder, `sheepdog plan` and the
stage; curate's PPL filter on vLLM splits the model over curate's GPUs."""

from __future__ import annotations

from sheepdog.api.spec import RunSpec
from sheepdog.capacity import plan_run, shape_from_config
from sheepdog.kube import jobs
from sheepdog.planner.lineage_policy import stage_config
from sheepdog.stage_config import kube_layout
from tests.capacity.shapes import QWEN72B

QWEN = shape_from_config(QWEN72B)


def spec_of(stages: dict | None = None, **extra) -> RunSpec:
    return RunSpec.model_validate({"model": {"base": "m"}, "evaluation": {"enabled": True},
                                   "stages": stages or {}, **extra})


def test_evaluate_defaults_to_synthesize_tensor_parallel():
    assert spec_of().stages.evaluate.gpus == 8  # synthesize's default: 8 GPUs, tensor parallel 8
    assert spec_of({"synthesize": {"gpus": 4, "tensorParallel": 4}}).stages.evaluate.gpus == 4
    assert spec_of({"synthesize": {"gpus": 0}}).stages.evaluate.gpus == 1  # a CPU synthesize: as before
    assert spec_of({"evaluate": {"gpus": 2}}).stages.evaluate.gpus == 2  # given: kept
    assert spec_of({"evaluate": {"gpus": 0}}).stages.evaluate.gpus == 0
    # The stored spec leaves a derived value out (as the API server stores it: the CRD has no
    # default); read back, it is derived again, so a later tensorParallel carries over.
    wire = spec_of({"synthesize": {"gpus": 4, "tensorParallel": 4}}).to_wire()
    assert "gpus" not in wire["stages"]["evaluate"] and RunSpec.model_validate(wire).stages.evaluate.gpus == 4
    wire["stages"]["synthesize"] = {"gpus": 2, "tensorParallel": 2}
    assert RunSpec.model_validate(wire).stages.evaluate.gpus == 2
    assert spec_of({"evaluate": {"gpus": 2}}).to_wire()["stages"]["evaluate"]["gpus"] == 2


def test_the_evaluate_job_requests_synthesize_tensor_parallel():
    spec = spec_of({"synthesize": {"gpus": 4, "tensorParallel": 4}})
    config = stage_config("r", spec, 1, "evaluate", kube_layout("r", spec))
    job = jobs.build_stage_job("r", "ns", "uid", spec, config, {})
    assert job["metadata"]["annotations"][jobs.GPUS_ANNOTATION] == "4"
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "4"


def test_plan_uses_the_same_tensor_parallel():
    plan = plan_run(spec_of(), QWEN)
    evaluate = plan["stages"]["evaluate"]
    assert evaluate["gpus"] == evaluate["tensorParallel"] == 8 and evaluate["fits"]
    # One GPU (the old default) cannot hold a 72B: the plan says so.
    one = plan_run(spec_of({"evaluate": {"gpus": 1}}), QWEN)["stages"]["evaluate"]
    assert one["tensorParallel"] == 1 and not one["fits"]


def test_curate_ppl_on_vllm_splits_the_model_over_its_gpus():
    ppl = {"filter": {"method": "ppl"}, "engine": "vllm"}
    curate = plan_run(spec_of({"curate": {"gpus": 8}}, **ppl), QWEN)["stages"]["curate"]
    assert curate["tensorParallel"] == 8 and curate["fits"]
    # density's embeddings come from transformers: one device whatever the stage's GPUs.
    density = plan_run(spec_of({"curate": {"gpus": 8}}, filter={"method": "density"}), QWEN)["stages"]["curate"]
    assert density["tensorParallel"] == 1 and not density["fits"]
