"""The SelfAlignmentSweep CustomResourceDefinition, generated from the pydantic models by the
same machinery as the run's (sheepdog.api.crd: structural schema, CEL rules carried, defaults).

    python -m sheepdog.api.sweep_crd > crds/sheepdog.dev_selfalignmentsweeps.yaml

spec.template is the run spec's schema itself, so the API server applies the same defaults and
CEL rules to a sweep's template as to a run's spec; each cell's child is validated again by the
operator (and the API server) when it is made.
"""

from __future__ import annotations

import sys
from typing import Any


from sheepdog.api import crd as run_crd
from sheepdog.api.spec import GROUP
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
    return run_crd.root_schema(
        "A SelfAlignmentSweep fans a run spec out into a grid of SelfAlignmentRuns (axes crossed, "
        "named cells, repeats), one child run per cell, and collects their figures into one "
        "comparison table.", run_crd.model_schema(SweepSpec), status)


def crd() -> dict[str, Any]:
    return run_crd.crd_document(SWEEP_KIND, SWEEP_PLURAL, SINGULAR, SHORT_NAMES, openapi_schema(), PRINTER_COLUMNS)


def render() -> str:
    return run_crd.render_document(crd(), "sheepdog.api.sweep_crd")


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
