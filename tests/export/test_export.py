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


def test_export_program_reads_its_config_from_a_file(tmp_path):
    """The export Job's command names a file (its mounted ConfigMap), not the JSON: the program
    reads it; a file it cannot read is its summary's error, like any other failure."""
    spec = RunSpec.model_validate(RUN["spec"])
    (tmp_path / "empty").mkdir()
    cfg = ExportConfig(run="tiny", iteration=1, spec=spec, model_dir=str(tmp_path / "empty"),
                       to=str(tmp_path / "out"), records=[])
    config_file = tmp_path / "config.json"
    config_file.write_text(cfg.to_json())
    summary = tmp_path / "summary.json"
    command = export_command(cfg, python=sys.executable, summary_file=str(summary), config_file=str(config_file))
    assert command[command.index("--config") + 1] == str(config_file)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    got = json.loads(summary.read_text())
    assert got["iteration"] == 1 and "not a model directory" in got["error"]  # the file's config was used

    missing = export_command(cfg, python=sys.executable, summary_file=str(summary),
                             config_file=str(tmp_path / "absent.json"))
    proc = subprocess.run(missing, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    got = json.loads(summary.read_text())
    assert "config file" in got["error"] and "absent.json" in got["error"], got


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


def _card_config(tmp_path: Path, base: str, **fields) -> ExportConfig:
    spec = RunSpec.model_validate({**RUN["spec"], "model": {"base": base}})
    records = [{k: v for k, v in r.items() if k != "stages"} for r in _records(2)]
    return ExportConfig(run="tiny", iteration=2, best_iteration=2, spec=spec, model_dir="/m", to="/out",
                        records=records, root=str(tmp_path), **fields)


def test_model_card_data_merged_vs_adapter_and_model_index(tmp_path):
    from huggingface_hub import ModelCard

    cfg = _card_config(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct", datasets=["my-org/tiny-pairs"])
    merged = ModelCard(model_card(cfg, "transformers")).data
    assert (merged.base_model, merged.library_name, merged.pipeline_tag) == (
        "HuggingFaceTB/SmolLM2-135M-Instruct", "transformers", "text-generation")
    assert merged.to_dict()["base_model_relation"] == "finetune"
    assert "lora" not in merged.tags and "i-sheep" in merged.tags  # a merged model is no LoRA adapter
    assert merged.datasets == ["my-org/tiny-pairs"]
    # model-index: iteration 2's evaluation, as the hub reads it back
    [result] = merged.eval_results
    assert (result.dataset_type, result.metric_type, result.metric_name, result.metric_value) == (
        "ifeval-smoke", "promptStrict", "ifeval-smoke.promptStrict", 0.5)
    assert merged.model_name == "tiny-i2"

    adapter = ModelCard(model_card(cfg, "peft")).data
    assert adapter.library_name == "peft" and adapter.to_dict()["base_model_relation"] == "adapter"
    assert {"lora", "peft"} <= set(adapter.tags)


def test_model_card_license_comes_from_the_base_models_card_config_or_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard

    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    cfg = _card_config(tmp_path, "models/base")  # relative: under the run's volume root
    card = model_card(cfg)
    assert ModelCard(card).data.license is None and "license: none found in the base model's card" in card
    assert "base_model" not in ModelCard(card).data.to_dict()  # a volume path is not a hub id

    (base / "config.json").write_text(json.dumps({"model_type": "llama", "license": "mit"}))
    assert ModelCard(model_card(cfg)).data.license == "mit"
    (base / "README.md").write_text("---\nlicense: other\nlicense_name: qwen\nlicense_link: LICENSE\n---\n# Base\n")
    data = ModelCard(model_card(cfg)).data.to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == ("other", "qwen", "LICENSE")

    # a hub id: its card from the local hub cache, never the network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = tmp_path / "hub" / "models--org--base" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--base" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--base" / "refs" / "main").write_text("abc123")
    (snapshot / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    hub = ModelCard(model_card(_card_config(tmp_path, "org/base"))).data
    assert (hub.license, hub.base_model) == ("apache-2.0", "org/base")


def test_cli_exports_to_the_hub_up_to_the_upload(tmp_path, monkeypatch, capsys):
    from huggingface_hub import ModelCard

    from tests.export.conftest import RecordingHfApi

    run = make_run_dir(tmp_path / "run", best=2)
    layout = Layout(root=str(run), run_dir=str(run))
    cfg = export_config("tiny", RunSpec.model_validate(RUN["spec"]), _records(2), layout, "hf://my-org/tiny", "best", 2)
    assert cfg.to == "hf://my-org/tiny"  # not resolved as a path
    api = RecordingHfApi(tmp_path / "pushed")
    result = export_model(cfg, private=True, api=api)
    assert result["files"] == 5 and result["bytes"] == 1000 + len(json.dumps({"model_type": "llama", "iteration": 2})) + 2
    (_, repo, create), (_, repo2, upload) = api.calls
    assert (repo, create) == ("my-org/tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    assert (repo2, upload["repo_type"]) == ("my-org/tiny", "model")
    assert upload["commit_message"] == "sheepdog export of run tiny, iteration 2"
    # what was handed to the hub is the directory export, card and export.json included
    assert sorted(p.name for p in (tmp_path / "pushed").iterdir()) == [
        "README.md", "config.json", "export.json", "model.safetensors", "tokenizer.json"]
    assert ModelCard.load(tmp_path / "pushed" / "README.md").data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"

    # from the CLI: no token is a clear error before any copy; so is a malformed destination
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert main(["export", str(run), "--to", "hf://my-org/tiny", "--dataset", "my-org/tiny-pairs"]) == 2
    assert "needs a Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert main(["export", str(run), "--to", "hf://tiny"]) == 2
    assert "expected hf://ORG/NAME" in capsys.readouterr().err


def test_spec_export_to_takes_a_hub_repository():
    from sheepdog.api.load import RunSpecError, parse_run

    def run_with(to: str):
        return parse_run({**{k: v for k, v in RUN.items() if k != "spec"},
                          "spec": {**RUN["spec"], "export": {"to": to, "credentialsSecretRef": {"name": "hf"}}}})

    assert run_with("hf://my-org/tiny-i-sheep").spec.export.to == "hf://my-org/tiny-i-sheep"
    for bad in ("hf://tiny", "hf://a/b/c", "gs://bucket/x"):
        with pytest.raises(RunSpecError, match="spec.export.to: must match"):
            run_with(bad)
    # the planner's export of such a run keeps the destination as it is (not a path on /data)
    layout = Layout(root="/data", run_dir="/data/runs/tiny")
    spec = run_with("hf://my-org/tiny-i-sheep").spec
    cfg = export_config("tiny", spec, _records(2), layout, spec.export.to, "best", 1)
    assert cfg.to == "hf://my-org/tiny-i-sheep" and cfg.root == "/data"
