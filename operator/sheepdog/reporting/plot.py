"""report.png: per iteration, what tells a person whether self-alignment is converging or
collapsing: the filter's keep rate, the mean self-assessment scores, the training loss and the
evaluation metrics. The same picture for a local run (`sheepdog run`) and a cluster run
(`sheepdog report`): it reads only the report dict (status.iterations records)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

PANELS = ("kept by the filter", "self-assessment", "training loss", "evaluation")
NAN = float("nan")


def _value(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else NAN


def _eval_loss(record: dict[str, Any]) -> float:
    """The train stage's validation loss, kept in its summary (not a report column)."""
    summary = (((record.get("stages") or {}).get("train") or {}).get("summary") or {})
    return _value(summary, "evalLoss")


def _drawn(values: list[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def report_figure(report: dict[str, Any]) -> Optional[Any]:
    """The matplotlib Figure of the report (2 x 2 panels, titled as PANELS), or None when
    matplotlib is missing or no iteration is known. The caller closes it."""
    records = sorted((r for r in report.get("iterations", []) if isinstance(r.get("iteration"), int)),
                     key=lambda r: r["iteration"])
    if not records:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    its = [r["iteration"] for r in records]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    rate, scores, loss, evaluation = axes.flat
    rate.plot(its, [100 * _value(r, "keepRate") for r in records], marker="o", color="tab:green")
    rate.set_ylabel("keep rate (%)")
    rate.set_ylim(0, 100)
    for key, label, color in (("meanQuality", "mean quality", "tab:blue"),
                              ("meanFollowing", "mean following", "tab:orange")):
        scores.plot(its, [_value(r, key) for r in records], marker="o", label=label, color=color)
    scores.set_ylabel("mean score (1..10)")
    scores.set_ylim(0, 10.5)
    scores.legend(loc="lower right")
    loss.plot(its, [_value(r, "trainLoss") for r in records], marker="o", label="train (last epoch)",
              color="tab:red")
    validation = [_eval_loss(r) for r in records]
    if _drawn(validation):
        loss.plot(its, validation, marker="s", linestyle="--", label="validation", color="tab:purple")
    loss.set_ylabel("loss")
    loss.legend(loc="upper right")
    metrics = sorted({k for r in records for k in (r.get("evaluation") or {})})
    for metric in metrics:
        evaluation.plot(its, [_value(r.get("evaluation") or {}, metric) for r in records], marker="o", label=metric)
    if metrics:
        evaluation.legend(loc="best", fontsize="small")
    else:
        evaluation.text(0.5, 0.5, "no evaluation (evaluation.enabled: false)", ha="center", va="center",
                        transform=evaluation.transAxes, color="gray")
    evaluation.set_ylabel("metric")
    for ax, title in zip(axes.flat, PANELS):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.set_xticks(its)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report.get('run')}: {report.get('phase')}")
    fig.tight_layout()
    return fig


def plot_report(report: dict[str, Any], path: Path) -> bool:
    """Write the PNG; False (and nothing written) when matplotlib is missing or nothing is known."""
    fig = report_figure(report)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True
