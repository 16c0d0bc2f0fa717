"""training.reportTo: where the train stage reports (docs/training.md).

- tensorboard: transformers' TensorBoard callback, event files in <stage out>/tensorboard.
- wandb: transformers' W&B callback, offline (WANDB_MODE=offline unless set), files in
  <stage out>/wandb; `wandb sync` uploads them later from anywhere.
- mlflow: our callback, because the layout is ours: one sheepdog run is one MLflow experiment
  (named after the run) holding a parent run for the whole run and one child run per
  iteration, with the spec as parameters and the iteration's figures as metrics. A restarted
  attempt finds its runs again by their tags instead of creating new ones.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from transformers import TrainerCallback

# Trainer's names for the integrations it runs itself; mlflow is ours (below).
_TRAINER_REPORTS = ("tensorboard", "wandb")
TAG_RUN, TAG_ITERATION = "sheepdog.run", "sheepdog.iteration"


def trainer_reports(report_to: Iterable[str]) -> list[str]:
    return [r for r in report_to if r in _TRAINER_REPORTS] or ["none"]


def prepare_env(report_to: Iterable[str], out: Path, run: str, iteration: int) -> None:
    """Environment the Trainer's integrations read (they take no arguments)."""
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(out / "tensorboard")
    if "wandb" in report_to:
        from sheepdog_jobs.training.iteration_tracking import wandb_mode

        # online with an API key; offline otherwise (pods reach no W&B server by default)
        os.environ["WANDB_MODE"] = wandb_mode(os.environ)
        os.environ["WANDB_DIR"] = str(out)
        os.environ.setdefault("WANDB_PROJECT", run)
        os.environ.setdefault("WANDB_RUN_GROUP", run)  # one group per sheepdog run
        os.environ.setdefault("WANDB_NAME", f"{run}-iteration-{iteration}-steps")


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """{"training": {"lora": {"rank": 8}}} -> {"training.lora.rank": "8"} (MLflow params are flat)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: str(value)[:6000]}  # MLflow's limit on a parameter's value


def numeric(figures: dict) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTracker(TrainerCallback):
    def __init__(self, uri: str, run: str, iteration: int, spec: dict):
        self.uri, self.run, self.iteration, self.spec = uri, run, iteration, spec
        self.client = None
        self.child_id: Optional[str] = None

    def _find(self, experiment_id: str, query: str):
        found = self.client.search_runs([experiment_id], filter_string=query, max_results=1)
        return found[0] if found else None

    def start(self) -> str:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.run)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.run)
        run_tag = f"tags.`{TAG_RUN}` = '{self.run}'"
        parent = self._find(experiment_id, f"{run_tag} and tags.`{TAG_ITERATION}` = 'all'")
        params = [Param(k, v) for k, v in sorted(flatten(self.spec).items())]
        if parent is None:
            parent = self.client.create_run(experiment_id, run_name=self.run,
                                            tags={TAG_RUN: self.run, TAG_ITERATION: "all"})
            self._params(parent.info.run_id, params)
        child = self._find(experiment_id, f"{run_tag} and tags.`{TAG_ITERATION}` = '{self.iteration}'")
        if child is None:
            child = self.client.create_run(
                experiment_id, run_name=f"iteration-{self.iteration}",
                tags={TAG_RUN: self.run, TAG_ITERATION: str(self.iteration), "mlflow.parentRunId": parent.info.run_id})
            self._params(child.info.run_id, params)
        self.child_id = child.info.run_id
        return self.child_id

    def _params(self, run_id: str, params: list) -> None:
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(run_id, params=params[i:i + 100])

    def log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.child_id, metrics=[Metric(k, v, stamp, step) for k, v in sorted(metrics.items())])

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.child_id is None:
            self.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.child_id and logs:
            metrics = {f"train/{k}" if not k.startswith("eval_") else f"eval/{k[5:]}": v
                       for k, v in numeric(logs).items()}
            self.log(metrics, state.global_step)

    def finish(self, figures: dict, step: int) -> None:
        """The iteration's figures (the train summary, the curate and synthesize counts)."""
        if self.child_id:
            self.log(numeric(figures), step)
            self.client.set_terminated(self.child_id)


def tracking_uri(config) -> str:
    """training.trackingUri, else a store in the iteration's train directory (the evaluate
    stage, which runs later, finds the same one)."""
    from sheepdog_jobs.stages.common import layout

    if config.spec.training.tracking_uri:
        return config.spec.training.tracking_uri
    # SQLite: MLflow 3 refuses its file store unless told to.
    return f"sqlite:///{Path(layout(config).stage_dir(config.iteration, 'train')) / 'mlflow.db'}"


def log_evaluation(config, evaluation: dict) -> None:
    """The evaluate stage's metrics (evaluation/<metric>) into the iteration's child run, when
    the run reports to MLflow; iteration 0 (the base model) gets a child run of its own."""
    if "mlflow" not in config.spec.training.report_to:
        return
    tracker = MlflowTracker(tracking_uri(config), config.run, config.iteration,
                            config.spec.model_dump(mode="json", by_alias=True))
    tracker.start()
    tracker.log({f"evaluation/{k}": v for k, v in numeric(evaluation).items()}, 0)
