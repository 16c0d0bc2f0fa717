"""A finished local run directory, as `sheepdog run` leaves it, for the export tests.

`model_files` are the files of each iteration's model directory: fake bytes for the unit
tests, or the real tiny model's files (tests/export/test_export_model.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import yaml

RUN = {
    "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "metadata": {"name": "tiny"},
    "spec": {"model": {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "iterations": 3,
             "synthesis": {"dataSize": 8}, "filter": {"keepFraction": 0.5},
             "evaluation": {"enabled": True}, "stopping": {"metric": "ifeval.promptStrict", "patience": 1}},
}


def record(i: int, loss: float, strict: float) -> dict:
    return {"iteration": i, "generated": 8, "assessed": 7, "parseFailures": 1, "kept": 3 + i, "keepRate": (3 + i) / 7,
            "meanQuality": 6.5 + i / 10, "meanFollowing": 7.0, "trainLoss": loss, "model": f"i{i}/model",
            "evaluation": {"ifeval.promptStrict": strict},
            "stages": {"train": {"phase": "Succeeded", "summary": {"trainLoss": loss}}}}


def make_run_dir(root: Path, model_source: Optional[Path] = None, iterations: int = 2, best: int = 1) -> Path:
    """report.json and run.yaml as the local executor writes them, and i<N>/model for each
    iteration (a copy of `model_source`, or a small fake model)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.yaml").write_text(yaml.safe_dump(RUN), encoding="utf-8")
    records = [record(i, 1.5 - i / 10, [0.3, 0.4, 0.35][i - 1]) for i in range(1, iterations + 1)]
    report = {"run": "tiny", "phase": "Succeeded", "bestIteration": best, "bestModel": f"i{best}/model",
              "iterations": records}
    (root / "report.json").write_text(json.dumps(report), encoding="utf-8")
    for i in range(1, iterations + 1):
        model = root / f"i{i}" / "model"
        if model_source is not None:
            shutil.copytree(model_source, model)
            continue
        model.mkdir(parents=True)
        (model / "config.json").write_text(json.dumps({"model_type": "llama", "iteration": i}))
        (model / "model.safetensors").write_bytes(bytes([i]) * 1000)
        (model / "tokenizer.json").write_text("{}")
        (model / ".model.safetensors.tmp").write_bytes(b"partial")  # a partial write: never exported
    return root
