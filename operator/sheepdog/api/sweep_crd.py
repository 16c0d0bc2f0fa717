"""The SelfAlignmentSweep CustomResourceDefinition, generated from the pydantic models by the
same machinery as the run's (sheepdog.api.crd: structural schema, CEL rules carried, defaults).

    python -m sheepdog.api.sweep_crd > crds/sheepdog.dev_selfalignmentsweeps.yaml

spec.template is the run spec's schema itself, so the API server applies the same defaults and
CEL rules to a sweep's template as to a run's spec; each cell's child is validated again by the
operator (and the API server) when it is made.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from sheepdog.api import crd as run_crd
from sheepdog.api.spec import GROUP, VERSION
from sheepdog.api.sweep_spec import SWEEP_KIND, SWEEP_PLURAL, SweepSpec
from sheepdog.api.sweep_status import SweepStatus

SINGULAR = "selfalignmentsweep"
SHORT_NAMES = ["sweep"]
CRD_NAME = f"{SWEEP_PLURAL}.{GROUP}"
CRD_FILE = f"crds/{GROUP}_{SWEEP_PLURAL}.yaml"

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Done", "type": "string", "jsonPath": ".status.progress",
     "description": "Child runs succeeded / child runs in the grid."},
    {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
    {"name": "Failed", "type": "integer", "jsonPath": ".status.failed"},
    {"name": "Reused", "type": "integer", "jsonPath": ".status.reusedStages",
     "description": "Stages the children took from the stage cache."},
    {"name": "GPU-s", "type": "number", "jsonPath": ".status.gpuSeconds", "priority": 1},
    {"name": "Saved GPU-s", "type": "number", "jsonPath": ".status.savedGpuSeconds", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def openapi_schema() -> dict[str, Any]:
    status = run_crd.model_schema(SweepStatus, status=True)
    status.pop("required", None)
    return {
        "type": "object",
        "description": "A SelfAlignmentSweep fans a run spec out into a grid of SelfAlignmentRuns "
        "(axes crossed, named cells, repeats), one child run per cell, and collects their "
        "figures into one comparison table.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": run_crd.metadata_schema(),
            "spec": run_crd.model_schema(SweepSpec),
            "status": status,
        },
        "required": ["spec"],
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "sheepdog", "app.kubernetes.io/part-of": "sheepdog"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": SWEEP_KIND,
                "listKind": f"{SWEEP_KIND}List",
                "plural": SWEEP_PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(run_crd.CATEGORIES),
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema()},
                "subresources": {"status": {}},
                "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
            }],
        },
    }


def render() -> str:
    doc = crd()
    version = doc["spec"]["versions"][0]
    version["schema"]["openAPIV3Schema"] = run_crd.ordered(version["schema"]["openAPIV3Schema"])
    body = yaml.dump(doc, Dumper=run_crd._Dumper, sort_keys=False, default_flow_style=False, width=100,
                     allow_unicode=True)
    return run_crd.HEADER.replace("sheepdog.api.crd", "sheepdog.api.sweep_crd") + "---\n" + body


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
