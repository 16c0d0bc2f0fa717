"""Per-iteration figures for the trackers of training.reportTo (docs/training.md, "Tracking").

The train stage's trackers see the optimizer's steps; this module gives them the iteration's
figures too, the ones report.json holds: generated, assessed, parseFailures, meanQuality,
meanFollowing, kept, keepRate (synthesize's and curate's summaries), trainLoss, evalLoss
(train's) and the evaluation's metrics (evaluate's), each at step = the iteration:

- tensorboard: scalars iteration/<figure> and evaluation/<metric> in <run dir>/tensorboard/
  iterations (one event directory for the whole run, so each figure is one curve over the
  iterations);
- wandb: the W&B run <run>-iteration-<N> (group <run>: one group per sheepdog run) gets the
  figures, and a table of sampled kept pairs (instruction, input, output, scores); online when
  WANDB_API_KEY is set, else offline files under the stage's directory (`wandb sync`);
- mlflow: the iteration's child run already gets the same figures (tracking.MlflowTracker).

The train stage logs what is known when it ends; the evaluate stage logs the evaluation
(iteration 0: M_0's). A tracker that fails is logged and skipped: a report never fails a stage.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from sheepdog_jobs import storage

log = logging.getLogger("sheepdog_jobs")

# report.json's per-iteration figures that the stages' summaries carry
FIGURES = ("generated", "assessed", "parseFailures", "meanQuality", "meanFollowing", "kept", "keepRate",
           "trainLoss", "evalLoss")
SAMPLED_PAIRS = 20
TABLE = "sampled_pairs"


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def sampled_pairs(kept_file: Path, n: int = SAMPLED_PAIRS) -> list[dict[str, Any]]:
    """The first n kept pairs (curate writes them in a seeded order), for a look at the data."""
    if not kept_file.exists():
        return []
    rows = []
    for record in storage.read_jsonl(kept_file)[:n]:
        scores = record.get("scores") or {}
        rows.append({"instruction": record.get("instruction", ""), "input": record.get("input", ""),
                     "output": record.get("output", ""), "quality": scores.get("quality"),
                     "following": scores.get("following")})
    return rows


def tensorboard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "tensorboard" / "iterations"


def log_tensorboard(logdir: Path, iteration: int, figures: Mapping[str, float],
                    evaluation: Mapping[str, float]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    try:
        for k, v in sorted(figures.items()):
            writer.add_scalar(f"iteration/{k}", v, iteration)
        for k, v in sorted(evaluation.items()):
            writer.add_scalar(f"evaluation/{k}", v, iteration)
    finally:
        writer.close()


def wandb_mode(environ: Mapping[str, str]) -> str:
    """WANDB_MODE as set; else online with an API key (the user asked W&B to see it), else
    offline (a pod reaches no W&B server by default)."""
    return environ.get("WANDB_MODE") or ("online" if environ.get("WANDB_API_KEY") else "offline")


def log_wandb(out_dir: Path, run: str, iteration: int, figures: Mapping[str, float],
              evaluation: Mapping[str, float], pairs: list[dict[str, Any]]) -> None:
    import wandb

    out_dir.mkdir(parents=True, exist_ok=True)
    w = wandb.init(project=os.environ.get("WANDB_PROJECT") or run, group=run, job_type="iteration",
                   name=f"{run}-iteration-{iteration}", id=f"{run}-iteration-{iteration}", resume="allow",
                   dir=str(out_dir), mode=wandb_mode(os.environ), reinit="create_new",
                   config={"sheepdog.run": run, "sheepdog.iteration": iteration})
    try:
        row = {"iteration": iteration, **{f"iteration/{k}": v for k, v in figures.items()},
               **{f"evaluation/{k}": v for k, v in evaluation.items()}}
        if pairs:
            columns = list(pairs[0])
            row[TABLE] = wandb.Table(columns=columns, data=[[p[c] for c in columns] for p in pairs])
        w.log(row)
    finally:
        w.finish()


def report_iteration(report_to: Iterable[str], run_dir: Path, out_dir: Path, run: str, iteration: int,
                     figures: Optional[Mapping[str, float]] = None, evaluation: Optional[Mapping[str, Any]] = None,
                     pairs: Optional[list[dict[str, Any]]] = None) -> None:
    """Log one iteration's figures and/or evaluation to the trackers of report_to (mlflow's
    own callback logs them there)."""
    figures, evaluation = dict(figures or {}), numeric(evaluation or {})
    if not figures and not evaluation:
        return
    report_to = set(report_to)
    if "tensorboard" in report_to:
        try:
            log_tensorboard(tensorboard_dir(run_dir), iteration, figures, evaluation)
        except Exception as exc:  # noqa: BLE001 - a report must not fail a stage whose work is done
            log.warning("TensorBoard did not take iteration %d's figures: %s", iteration, exc)
    if "wandb" in report_to:
        try:
            log_wandb(out_dir, run, iteration, figures, evaluation, pairs or [])
        except Exception as exc:  # noqa: BLE001 - as above
            log.warning("W&B did not take iteration %d's figures: %s", iteration, exc)
