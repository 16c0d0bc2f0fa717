"""report.png: keep rate and mean self-assessment scores per iteration (what tells a person
whether self-alignment is converging or collapsing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_report(report: dict[str, Any], path: Path) -> bool:
    """Write the PNG; False (and nothing written) when matplotlib is missing or nothing is known."""
    records = [r for r in report.get("iterations", []) if r.get("iteration") is not None]
    if not records:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    its = [r["iteration"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rates = [100 * r["keepRate"] if r.get("keepRate") is not None else float("nan") for r in records]
    left.plot(its, rates, marker="o", color="tab:green")
    left.set_title("kept by the filter")
    left.set_ylabel("keep rate (%)")
    left.set_ylim(0, 100)
    for key, label, color in (("meanQuality", "mean quality", "tab:blue"),
                              ("meanFollowing", "mean following", "tab:orange")):
        values = [r.get(key) if r.get(key) is not None else float("nan") for r in records]
        right.plot(its, values, marker="o", label=label, color=color)
    right.set_title("self-assessment")
    right.set_ylabel("mean score (1..10)")
    right.set_ylim(0, 10.5)
    right.legend(loc="lower right")
    for ax in (left, right):
        ax.set_xlabel("iteration")
        ax.set_xticks(its)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report.get('run')}: {report.get('phase')}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return True
