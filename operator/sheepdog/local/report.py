"""The local report: report.json (the same iteration records as status.iterations) and the
table `sheepdog run` and `sheepdog status` print."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from sheepdog.api.status import RunStatus
from sheepdog.stage_config import PROMPT_SAMPLES

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
        "bestBy": status.best_by,  # the stopping metric that chose it; None: the last iteration
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
        if report.get("bestBy"):
            lines += ["", f"best: iteration {report.get('bestIteration')} by {report['bestBy']}, "
                          f"model {report['bestModel']}"]
        else:  # nothing compared the iterations: calling the last one "best" would claim that
            lines += ["", f"last iteration: {report.get('bestIteration')}, model {report['bestModel']} "
                          "(no stopping metric chose a best)"]
    return "\n".join(lines)


# ---- prompt samples (`sheepdog status --prompts`) ------------------------------------------
_STAGE_ORDER = ("synthesize", "curate", "train", "evaluate")


def prompt_samples(workdir: Path | str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(stage directory relative to the workdir, its sample lines) for every iN/<stage> that
    has a prompts.sample.jsonl, in iteration then stage order; a damaged line is skipped."""
    root = Path(workdir)
    found = []
    for path in root.glob(f"i*/*/{PROMPT_SAMPLES}"):
        m = re.fullmatch(r"i(\d+)", path.parent.parent.name)
        stage = path.parent.name
        if m:
            order = _STAGE_ORDER.index(stage) if stage in _STAGE_ORDER else len(_STAGE_ORDER)
            found.append(((int(m.group(1)), order), path))
    out = []
    for _, path in sorted(found):
        lines = []
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(text)
            except ValueError:
                continue
            if isinstance(item, dict):
                lines.append(item)
        out.append((str(path.parent.relative_to(root)), lines))
    return out


def format_prompt_samples(samples: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """Each sample's exact prompt and output between rules, so whitespace and special tokens
    (a trailing space, <|im_start|>) show as they were sent."""
    if not samples:
        return f"no {PROMPT_SAMPLES} yet (synthesize and evaluate write one when they run)"
    blocks = []
    for stage_dir, lines in samples:
        for item in lines:
            blocks.append(
                f"=== {stage_dir}  phase {item.get('phase')}  iteration {item.get('iteration')}  "
                f"model {item.get('model')}\n--- prompt {json.dumps(item.get('prompt'), ensure_ascii=False)}\n"
                f"--- output {json.dumps(item.get('output'), ensure_ascii=False)}")
    return "\n".join(blocks)
