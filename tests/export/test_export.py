"""sheepdog export: the model of one iteration with a model card, to a directory or to S3
(a real S3 API: moto's server on 127.0.0.1, reached through AWS_ENDPOINT_URL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sheepdog.api.spec import RunSpec
from sheepdog.cli import main
from sheepdog.export import ExportConfig, ExportError, export_command, export_config, export_model
from sheepdog.export.card import model_card
from sheepdog.export.config import choose_iteration
from sheepdog.export.s3 import split_url
from sheepdog.stage_config import Layout
from tests.export.conftest import RUN, make_run_dir, record


def _records(n: int = 2) -> list[dict]:
    return [record(i, 1.5 - i / 10, 0.3 + i / 10) for i in range(1, n + 1)]


def test_choose_iteration_best_number_and_errors():
    records = _records(3)
    assert choose_iteration("best", records, best=2) == 2
    assert choose_iteration("best", records, best=None) == 3  # no stopping: the last finished
    assert choose_iteration("1", records, best=2) == 1
    with pytest.raises(ExportError, match="iteration 7 has no model .*1, 2, 3"):
        choose_iteration("7", records, best=2)
    with pytest.raises(ExportError, match="best or a number"):
        choose_iteration("last", records, best=2)
    with pytest.raises(ExportError, match="no iteration"):
        choose_iteration("best", [{"iteration": 1}], best=None)


def test_export_config_resolves_paths_and_drops_stage_records():
    layout = Layout(root="/data", run_dir="/data/runs/tiny")
    cfg = export_config("tiny", RunSpec.model_validate(RUN["spec"]), _records(2), layout, "exports/tiny", "best", 1)
    assert (cfg.iteration, cfg.model_dir, cfg.to) == (1, "/data/i1/model", "/data/exports/tiny")
    assert all("stages" not in r for r in cfg.records)
    s3 = export_config("tiny", RunSpec.model_validate(RUN["spec"]), _records(2), layout, "s3://b/p", "2", 1)
    assert s3.to == "s3://b/p" and s3.iteration == 2
    command = export_command(s3, python="python", summary_file="/dev/termination-log")
    assert command[:3] == ["python", "-m", "sheepdog.export"]
    assert ExportConfig.model_validate_json(command[command.index("--config") + 1]) == s3


def test_model_card_names_the_run_its_figures_and_spec():
    spec = RunSpec.model_validate(RUN["spec"])
    m0 = {"iteration": 0, "model": "models/base", "evaluation": {"ifeval-smoke.promptStrict": 0.2}}  # M_0
    cfg = ExportConfig(run="tiny", iteration=1, best_iteration=1, spec=spec, model_dir="/m", to="/out",
                       records=[m0] + [{k: v for k, v in r.items() if k != "stages"} for r in _records(2)])
    card = model_card(cfg)
    front = card.split("---")[1]
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in front and "library_name: transformers" in front
    assert "# tiny: iteration 1" in card
    assert "strategy: one_base" in card
    assert "2 finished of 3 asked; this model is iteration 1, the run's best is 1" in card
    assert "8 new instructions per iteration; this iteration kept 4 of 7 assessed pairs" in card
    assert "keep fraction 0.5" in card and "training loss 1.4" in card
    assert "evaluation: ifeval-smoke.promptStrict 0.4" in card
    assert "| 2 | 8 | 7 | 5 | 71.4% |" in card  # the iterations table
    assert "| 0 | - | - | - | - | - | - | - | ifeval-smoke.promptStrict 0.2 |" in card  # M_0's evaluation
    assert "```yaml\nmodel:\n  base: HuggingFaceTB/SmolLM2-135M-Instruct" in card  # the spec


def test_model_card_of_a_volume_path_base_has_no_hub_base_model():
    spec = RunSpec.model_validate({**RUN["spec"], "model": {"base": "models/tiny"}})
    cfg = ExportConfig(run="tiny", iteration=1, spec=spec, model_dir="/m", to="/out", records=[])
    assert "base_model" not in model_card(cfg).split("---")[1]


def test_cli_exports_the_best_iteration_to_a_directory(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", best=1)
    out = tmp_path / "export"
    assert main(["export", str(run), "--iteration", "best", "--to", str(out)]) == 0
    assert "exported iteration 1 of tiny" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "export.json",
                                                      "model.safetensors", "tokenizer.json"]
    assert (out / "model.safetensors").read_bytes() == bytes([1]) * 1000
    assert json.loads((out / "export.json").read_text())["iteration"] == 1
    assert "# tiny: iteration 1" in (out / "README.md").read_text()
    # again, for iteration 2: replaces its own earlier export
    assert main(["export", str(run), "--iteration", "2", "--to", str(out)]) == 0
    assert (out / "model.safetensors").read_bytes() == bytes([2]) * 1000


def test_cli_refuses_a_foreign_directory_and_a_missing_iteration(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(run), "--to", str(taken)]) == 2
    assert "not an export of run tiny" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine" and len(list(taken.iterdir())) == 1
    assert main(["export", str(run), "--iteration", "5", "--to", str(tmp_path / "x")]) == 2
    assert "iteration 5 has no model" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--to", str(tmp_path / "x")]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_export_program_reports_failure_in_its_summary(tmp_path):
    """`python -m sheepdog.export` (the export Job's command) on a model directory that is not
    one: exit 1 and a summary that says why."""
    spec = RunSpec.model_validate(RUN["spec"])
    (tmp_path / "empty").mkdir()
    cfg = ExportConfig(run="tiny", iteration=1, spec=spec, model_dir=str(tmp_path / "empty"),
                       to=str(tmp_path / "out"), records=[])
    summary = tmp_path / "summary.json"
    proc = subprocess.run(export_command(cfg, python=sys.executable, summary_file=str(summary)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    got = json.loads(summary.read_text())
    assert got["ok"] is False and "not a model directory" in got["error"]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == got
    assert not (tmp_path / "out").exists()


def test_split_url():
    assert split_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert split_url("s3://bucket") == ("bucket", "")
    with pytest.raises(ExportError):
        split_url("s3:///x")


def test_cli_uploads_to_s3(tmp_path, s3_server, capsys):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="models")
    run = make_run_dir(tmp_path / "run", best=2)
    assert main(["export", str(run), "--to", "s3://models/isheep/tiny"]) == 0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="models")["Contents"])
    assert keys == [f"isheep/tiny/{n}" for n in ("README.md", "config.json", "export.json",
                                                 "model.safetensors", "tokenizer.json")]
    body = s3.get_object(Bucket="models", Key="isheep/tiny/model.safetensors")["Body"].read()
    assert body == bytes([2]) * 1000
    card = s3.get_object(Bucket="models", Key="isheep/tiny/README.md")["Body"].read().decode()
    assert "# tiny: iteration 2" in card
    # a bucket that does not exist: a clear failure, not a traceback
    assert main(["export", str(run), "--to", "s3://nobucket/x"]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err
