"""The local report: report.json (the same iteration records as status.iterations) and the
table `sheepdog run` and `sheepdog status` print."""

from __future__ import annotations

from typing import Any, Optional

from sheepdog.api.status import RunStatus

COLUMNS = ("iteration", "generated", "assessed", "parse failures", "kept", "keep rate",
           "mean quality", "mean following", "train loss", "eval")


def report_of(run_name: str, status: RunStatus) -> dict[str, Any]:
    wire = status.to_wire()
    return {
        "run": run_name,
        "phase": status.phase,
        "reason": status.reason,
        "message": status.message,
        "bestIteration": status.best_iteration,
        "bestModel": status.best_model,
        "gpuSeconds": status.gpu_seconds,  # the run's total, as status.gpuSeconds
        "iterations": wire.get("iterations", []),
    }


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _evaluation(value: Optional[dict[str, Any]], gain: Optional[dict[str, Any]] = None) -> str:
    """metric=value, and (+gain) against M_0 (iteration 0) where the record has one."""
    if not value:
        return "-"
    gain = gain or {}
    return " ".join(f"{k}={_cell(v)}" + (f"({gain[k]:+.3g})" if isinstance(gain.get(k), (int, float)) else "")
                    for k, v in sorted(value.items()))


def rows_of(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in report.get("iterations", []):
        rate = r.get("keepRate")
        rows.append([
            _cell(r.get("iteration")), _cell(r.get("generated")), _cell(r.get("assessed")),
            _cell(r.get("parseFailures")), _cell(r.get("kept")),
            "-" if rate is None else f"{100 * rate:.1f}%",
            _cell(r.get("meanQuality")), _cell(r.get("meanFollowing")), _cell(r.get("trainLoss")),
            _evaluation(r.get("evaluation"), r.get("evaluationGain")),
        ])
    return rows


def format_table(report: dict[str, Any]) -> str:
    rows = rows_of(report)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.rjust(w) if i < len(cells) - 1 else c for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(list(COLUMNS)), line(["-" * w for w in widths])] + [line(row) for row in rows]
    return "\n".join(s.rstrip() for s in out)


def format_report(report: dict[str, Any]) -> str:
    head = f"run {report.get('run')}: {report.get('phase')}"
    if report.get("reason"):
        head += f" ({report['reason']})"
    lines = [head]
    if report.get("message"):
        lines.append(f"  {report['message']}")
    lines += ["", format_table(report)]
    if report.get("bestModel"):
        lines += ["", f"best: iteration {report.get('bestIteration')}, model {report['bestModel']}"]
    return "\n".join(lines)
