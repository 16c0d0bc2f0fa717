"""ExportConfig: everything one export needs, built the same way for both callers (the CLI
from a local run's report.json, the planner from the run's status), so the export program
reads nothing else, as a stage reads only its StageConfig."""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from sheepdog.api.spec import RunSpec
from sheepdog.stage_config import TERMINATION_LOG, Layout

EXPORT_MODULE = "sheepdog.export"
# The keys of an iteration record the model card reports (status.iterations / report.json);
# per-stage records are left out: they are bookkeeping, and they would make the Job's
# command line grow with every retry.
CARD_KEYS = ("iteration", "generated", "assessed", "parseFailures", "kept", "keepRate", "meanQuality",
             "meanFollowing", "trainLoss", "evaluation", "generatorModel", "baseModel", "model")


class ExportError(ValueError):
    """The export cannot be done as asked (no such iteration, no model, destination taken)."""


class ExportConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    run: str
    iteration: int = Field(description="The iteration whose model is exported.")
    best_iteration: Optional[int] = Field(None, description="The run's best iteration when known.")
    spec: RunSpec
    model_dir: str = Field(description="The model directory to export (absolute).")
    to: str = Field(description="s3://bucket/prefix, hf://ORG/NAME, or an absolute directory.")
    records: list[dict[str, Any]] = Field(default_factory=list, description="The run's iteration records.")
    root: Optional[str] = Field(None, description="The run's volume root: where a relative base model "
                                "path lives (its card gives the model's license).")
    datasets: list[str] = Field(default_factory=list, description="Hub ids of the data the model was "
                                "trained on (e.g. a `sheepdog export-data --to hf://` of the run), for the card.")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True),
                          separators=(",", ":"), sort_keys=True)


def is_s3(to: str) -> bool:
    return to.startswith("s3://")


def is_hf(to: str) -> bool:
    """A hub repository destination, hf://ORG/NAME (sheepdog/export/hub.py)."""
    return to.startswith("hf://")


def is_remote(to: str) -> bool:
    """A destination that is not a path (S3 or the hub)."""
    return is_s3(to) or is_hf(to)


def card_records(iterations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: r[k] for k in CARD_KEYS if r.get(k) is not None} for r in iterations if isinstance(r, dict)]


def choose_iteration(choice: Union[str, int], records: list[dict[str, Any]], best: Optional[int]) -> int:
    """`best` (the run's best iteration, else its last finished one) or an iteration number
    whose model exists."""
    with_model = [r["iteration"] for r in records if r.get("model") and isinstance(r.get("iteration"), int)]
    if choice == "best":
        if best is not None:
            return best
        if not with_model:
            raise ExportError("no iteration of this run has a model yet")
        return max(with_model)
    try:
        number = int(choice)
    except (TypeError, ValueError):
        raise ExportError(f"--iteration must be best or a number, not {choice!r}") from None
    if number not in with_model:
        have = ", ".join(map(str, sorted(with_model))) or "none"
        raise ExportError(f"iteration {number} has no model (iterations with a model: {have})")
    return number


def export_config(run: str, spec: RunSpec, iterations: list[dict[str, Any]], layout: Layout,
                  to: str, choice: Union[str, int] = "best", best: Optional[int] = None,
                  datasets: Optional[list[str]] = None) -> ExportConfig:
    """The export of iteration `choice` of a run. Model paths in the records are relative to the
    layout's root (as status records are); a relative `to` is a path on the run's storage."""
    records = card_records(iterations)
    iteration = choose_iteration(choice, records, best)
    model = next(r["model"] for r in records if r.get("iteration") == iteration and r.get("model"))
    if not to:
        raise ExportError("no destination: give --to DIR, s3://bucket/prefix or hf://ORG/NAME")
    return ExportConfig(run=run, iteration=iteration, best_iteration=best, spec=spec,
                        model_dir=layout.resolve(model), to=to if is_remote(to) else layout.resolve(to),
                        records=records, root=layout.root, datasets=list(datasets or []))


def export_command(config: ExportConfig, python: str = "python", summary_file: str = TERMINATION_LOG,
                   config_file: Optional[str] = None) -> list[str]:
    """The export's one command line, for both executors (as stage_command is for stages).
    `config_file`: where the export finds config.to_json() (a cluster's mounted ConfigMap,
    kube/stage_config_map.py); None puts the JSON itself on the command line (local runs)."""
    return [python, "-m", EXPORT_MODULE, "--config", config_file or config.to_json(), "--summary-file", summary_file]
