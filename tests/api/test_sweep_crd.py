"""The generated SelfAlignmentSweep CRD: in sync with the models, `kubectl get sweep`, its
template the run spec's own schema (same defaults and CEL rules), grid values untyped."""

from __future__ import annotations

import pathlib

from sheepdog.api import crd as run_crd
from sheepdog.api import sweep_crd

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_crds_dir_and_chart_match_models():
    expected = sweep_crd.render()
    assert (ROOT / sweep_crd.CRD_FILE).read_text() == expected, "run `make crds`"
    assert (ROOT / "charts/sheepdog" / sweep_crd.CRD_FILE).read_text() == expected, "run `make crds`"


def test_names_and_columns():
    crd = sweep_crd.crd()
    names = crd["spec"]["names"]
    assert crd["metadata"]["name"] == "selfalignmentsweeps.sheepdog.dev"
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "SelfAlignmentSweep", "selfalignmentsweeps", ["sweep"])
    assert "sheepdog" in names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Done"] == ".status.progress"
    assert columns["Saved GPU-s"] == ".status.savedGpuSeconds"


def test_template_is_the_run_spec_schema():
    schema = sweep_crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    template = dict(schema["properties"]["spec"]["properties"]["template"])
    template.pop("description", None)
    run_spec = dict(run_crd.spec_schema())
    run_spec.pop("description", None)
    assert template == run_spec
    assert template["x-kubernetes-validations"]  # the run's CEL rules hold for a template too
    axis = schema["properties"]["spec"]["properties"]["axes"]["items"]
    assert axis["properties"]["values"]["items"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert schema["properties"]["spec"]["required"] == ["template"]
