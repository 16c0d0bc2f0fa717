"""A finished local run directory, as `sheepdog run` leaves it, for the export tests.

`model_files` are the files of each iteration's model directory: fake bytes for the unit
tests, or the real tiny model's files (tests/export/test_export_model.py)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Optional

import pytest
import yaml
from huggingface_hub import HfApi

RUN = {
    "apiVersion": "sheepdog.dev/v1alpha1", "kind": "SelfAlignmentRun", "metadata": {"name": "tiny"},
    "spec": {"model": {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"}, "iterations": 3,
             "synthesis": {"dataSize": 8}, "filter": {"keepFraction": 0.5},
             "evaluation": {"enabled": True}, "stopping": {"metric": "ifeval-smoke.promptStrict", "patience": 1}},
}


def record(i: int, loss: float, strict: float) -> dict:
    return {"iteration": i, "generated": 8, "assessed": 7, "parseFailures": 1, "kept": 3 + i, "keepRate": (3 + i) / 7,
            "meanQuality": 6.5 + i / 10, "meanFollowing": 7.0, "trainLoss": loss, "model": f"i{i}/model",
            "evaluation": {"ifeval-smoke.promptStrict": strict},
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


def pairs_of(iteration: int) -> list[dict]:
    """Synthesize's assessments.jsonl records of one iteration: scored pairs (one with an
    input), an unscored one and one the rule filter drops (empty output)."""
    def pair(k: int, instruction: str, given: str, output: str, quality, following) -> dict:
        return {"id": f"i{iteration}-{k:06d}", "instruction": instruction, "input": given, "output": output,
                "ruleReason": None, "scores": {"quality": quality, "following": following}}

    return [pair(0, f"Name {iteration + 2} primary colours.", "", "Red, yellow and blue.", 9, 9),
            pair(1, "Translate to French.", "Good morning", "Bonjour.", 8, 9),
            pair(2, "Write a haiku about rain.", "", "Soft rain on the roof.", 5, 6),
            pair(3, "List two prime numbers.", "", "2 and 3.", 6, 4),
            pair(4, "Explain gravity briefly.", "", "Mass attracts mass.", None, 7),
            pair(5, "Describe the sea.", "", "", 7, 7)]


def add_curated_pairs(root: Path, iterations: int = 2) -> Path:
    """i<N>/curate as the real curate stage writes it (kept.jsonl, dropped.jsonl, _SUCCESS),
    run on a synthesize output written with the stage programs' own storage functions."""
    from sheepdog.api.load import load_run
    from sheepdog.planner import stage_config
    from sheepdog.stage_config import Layout
    from sheepdog_jobs import storage
    from sheepdog_jobs.stages import curate

    run = load_run(root / "run.yaml")
    layout = Layout(root=str(root), run_dir=str(root))
    for i in range(1, iterations + 1):
        src = root / f"i{i}" / "synthesize"
        storage.write_jsonl(src / "assessments.jsonl", pairs_of(i))
        storage.write_manifest(src, ["assessments.jsonl"], "fp")
        curate.run(stage_config(run.metadata.name, run.spec, i, "curate", layout))
    return root


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 server on 127.0.0.1 and a free port; boto3 finds it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class RecordingHfApi(HfApi):
    """The real HfApi with its two network calls recorded instead of sent; the folder handed
    to upload_folder is copied, since the export removes it afterwards."""

    def __init__(self, keep: Path):
        super().__init__(token="hf_test")
        self.keep, self.calls = keep, []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], {k: v for k, v in kwargs.items() if k != "repo_id"}))
        shutil.copytree(kwargs["folder_path"], self.keep)
