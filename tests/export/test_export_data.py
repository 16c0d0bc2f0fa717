"""sheepdog export-data: a run's curated pairs as parquet with a dataset card and LLaMA-Factory's
dataset_info.json, read back with `datasets.load_dataset`; to a directory, S3 (moto's server)
and the hub (up to the upload: an HfApi subclass that records the calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard

from sheepdog.cli import main
from sheepdog.export import ExportError
from sheepdog.export.data import export_data, read_run, user_turn
from sheepdog.export.data_card import size_category
from sheepdog.export.hub import repo_id_of
from tests.export.conftest import RecordingHfApi, add_curated_pairs, make_run_dir


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    # Nothing here may reach the hub; datasets' cache stays in the test's directory.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return add_curated_pairs(make_run_dir(tmp_path / "run", iterations=2), iterations=2)


def load(path: Path, config: str):
    from datasets import load_dataset

    return load_dataset(str(path), config)


def test_export_to_a_directory_loads_with_datasets(run_dir, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["export-data", str(run_dir), "--to", str(out), "--include-dropped"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"exported iterations 1, 2: 4 kept pairs, 8 dropped to {out} (10 files)\n"
    assert captured.err == ""  # no progress bars
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "dataset_info.json"]

    messages = load(out, "messages")
    assert sorted(messages) == ["iteration_1", "iteration_2"]
    # keepFraction 0.5 of the 4 scored pairs: the two best by mean score, as curate chose them
    first = messages["iteration_1"]
    assert first["id"] == ["i1-000000", "i1-000001"]
    assert first[1]["messages"] == [{"role": "user", "content": "Translate to French.\nGood morning"},
                                    {"role": "assistant", "content": "Bonjour."}]
    assert (first[1]["quality"], first[1]["following"], first[1]["iteration"]) == (8.0, 9.0, 1)
    assert messages["iteration_2"][0]["messages"][0]["content"] == "Name 4 primary colours."

    alpaca = load(out, "alpaca")["iteration_1"]
    assert alpaca.column_names == ["instruction", "input", "output", "id", "iteration", "quality", "following"]
    assert alpaca[1]["instruction"] == "Translate to French." and alpaca[1]["input"] == "Good morning"

    dropped = load(out, "alpaca_dropped")["iteration_2"]
    assert sorted(zip(dropped["id"], dropped["reason"])) == [
        ("i2-000002", "below_keep_fraction"), ("i2-000003", "below_keep_fraction"),
        ("i2-000004", "unscored"), ("i2-000005", "rule_empty_output")]
    assert load(out, "messages_dropped")["iteration_1"].num_rows == 4
    # the default config is messages
    from datasets import load_dataset

    assert load_dataset(str(out))["iteration_2"].column_names[0] == "messages"


def test_the_card_records_settings_counts_and_filters(run_dir, tmp_path):
    out = tmp_path / "data"
    export_data(run_dir, str(out), include_dropped=True)
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["sheepdog_run"] == "tiny" and data["size_categories"] == ["n<1K"]
    assert data["task_categories"] == ["text-generation"] and "i-sheep" in data["tags"]
    configs = {c["config_name"]: c for c in data["configs"]}
    assert sorted(configs) == ["alpaca", "alpaca_dropped", "messages", "messages_dropped"]
    assert configs["messages"]["default"] is True
    assert configs["alpaca"]["data_files"] == [{"split": "iteration_1", "path": "data/alpaca/iteration_1.parquet"},
                                               {"split": "iteration_2", "path": "data/alpaca/iteration_2.parquet"}]
    text = card.text
    assert "- base model: `HuggingFaceTB/SmolLM2-135M-Instruct`; training strategy one_base" in text
    assert "- iterations: 2 exported of 3 asked" in text
    assert "Iteration t's model is the base model fine-tuned on iteration t's kept pairs." in text  # one_base
    assert "- filter: heuristic rules on; keep the best fraction 0.5 by mean score" in text
    assert "- self-assessment: criteria quality, following" in text
    # iteration 1: 8 generated (report), 5 assessed and 2 kept (curate), reasons, loss, evaluation
    assert ("| 1 | 8 | 5 | 2 | 40.0% | 7 | 7 | below_keep_fraction: 2, rule_empty_output: 1, "
            "unscored: 1 | 1.4 | ifeval-smoke.promptStrict 0.3 |") in text
    assert "| messages_dropped | iteration_2 | 4 | `data/messages_dropped/iteration_2.parquet` |" in text
    assert "```yaml\nmodel:\n  base: HuggingFaceTB/SmolLM2-135M-Instruct" in text


def test_dataset_info_is_llama_factorys_layout(run_dir, tmp_path):
    out = tmp_path / "data"
    export_data(run_dir, str(out))
    info = json.loads((out / "dataset_info.json").read_text())
    assert sorted(info) == ["tiny", "tiny_i1", "tiny_i1_messages", "tiny_i2", "tiny_i2_messages", "tiny_messages"]
    assert info["tiny_i2"] == {"file_name": "data/alpaca/iteration_2.parquet", "formatting": "alpaca",
                               "columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    assert info["tiny_messages"]["formatting"] == "sharegpt"
    assert info["tiny_messages"]["tags"]["user_tag"] == "user"
    assert info["tiny"]["file_name"] == "data/alpaca"
    for entry in info.values():  # every file or folder it names is there
        assert (out / entry["file_name"]).exists(), entry
    # without --include-dropped there are no dropped configs at all
    assert sorted(p.name for p in (out / "data").iterdir()) == ["alpaca", "messages"]


def test_reexport_replaces_its_own_folder_and_refuses_a_foreign_one(run_dir, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["export-data", str(run_dir), "--to", str(out), "--include-dropped"]) == 0
    assert main(["export-data", str(run_dir), "--to", str(out)]) == 0  # the same run: replaced
    assert not (out / "data" / "alpaca_dropped").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export-data", str(run_dir), "--to", str(taken)]) == 2
    assert "not a data export of run tiny" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_unfinished_and_damaged_curate_outputs(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run", iterations=2)
    assert main(["export-data", str(run), "--to", str(tmp_path / "x")]) == 2
    assert "no iteration has finished curating yet" in capsys.readouterr().err
    add_curated_pairs(run, iterations=2)
    (run / "i2" / "curate" / "_SUCCESS").unlink()  # iteration 2 still curating: left out
    assert [it.iteration for it in read_run(run).iterations] == [1]
    kept = run / "i1" / "curate" / "kept.jsonl"
    kept.write_text(kept.read_text() + kept.read_text().splitlines()[0] + "\n")
    assert main(["export-data", str(run), "--to", str(tmp_path / "x")]) == 2
    assert "bytes, but _SUCCESS recorded" in capsys.readouterr().err
    assert main(["export-data", str(tmp_path / "nowhere"), "--to", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_the_card_says_what_every_strategy_trained_on():
    import typing

    from sheepdog.api.spec import TrainingSpec
    from sheepdog.export.data_card import TRAINED_ON

    assert set(TRAINED_ON) == set(typing.get_args(TrainingSpec.model_fields["strategy"].annotation))


def test_user_turn_and_size_category():
    assert user_turn({"instruction": "Sum.", "input": "2 and 3"}) == "Sum.\n2 and 3"
    assert user_turn({"instruction": "Sum 2 and 3.", "input": "  "}) == "Sum 2 and 3."
    assert [size_category(n) for n in (0, 999, 1000, 10**6, 10**8)] == ["n<1K", "n<1K", "1K<n<10K",
                                                                         "1M<n<10M", "n>10M"]


def test_upload_to_s3(run_dir, tmp_path, s3_server, capsys):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="data")
    assert main(["export-data", str(run_dir), "--to", "s3://data/isheep/tiny"]) == 0
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="data")["Contents"])
    assert keys == ["isheep/tiny/README.md", "isheep/tiny/data/alpaca/iteration_1.parquet",
                    "isheep/tiny/data/alpaca/iteration_2.parquet", "isheep/tiny/data/messages/iteration_1.parquet",
                    "isheep/tiny/data/messages/iteration_2.parquet", "isheep/tiny/dataset_info.json"]
    # what was uploaded loads as it does from a directory
    copy = tmp_path / "copy"
    for key in keys:
        (copy / key).parent.mkdir(parents=True, exist_ok=True)
        (copy / key).write_bytes(s3.get_object(Bucket="data", Key=key)["Body"].read())
    assert load(copy / "isheep" / "tiny", "alpaca")["iteration_2"].num_rows == 2
    assert main(["export-data", str(run_dir), "--to", "s3://nobucket/x"]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err


def test_push_to_the_hub_up_to_the_upload(run_dir, tmp_path):
    api = RecordingHfApi(tmp_path / "pushed")
    result = export_data(run_dir, "hf://my-org/tiny-pairs", include_dropped=True, private=True, api=api)
    assert result["kept"] == 4 and result["dropped"] == 8
    (create, name, kwargs), (upload, repo, upload_kwargs) = api.calls
    assert (create, name, kwargs) == ("create_repo", "my-org/tiny-pairs",
                                      {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert (upload, repo, upload_kwargs["repo_type"]) == ("upload_folder", "my-org/tiny-pairs", "dataset")
    assert upload_kwargs["commit_message"] == "sheepdog export-data of run tiny"
    assert not Path(upload_kwargs["folder_path"]).exists()  # the staging folder is gone
    # the folder pushed is the same dataset a directory export writes
    assert load(tmp_path / "pushed", "messages_dropped")["iteration_1"].num_rows == 4
    assert DatasetCard.load(tmp_path / "pushed" / "README.md").data.to_dict()["sheepdog_run"] == "tiny"


def test_hub_destinations_and_the_token_are_checked_first(run_dir, tmp_path, monkeypatch, capsys):
    assert repo_id_of("hf://my-org/tiny-pairs/") == "my-org/tiny-pairs"
    for bad in ("hf://tiny", "hf://a/b/c", "hf://my-org/..", "hf://-x/y"):
        with pytest.raises(ExportError, match="expected hf://ORG/NAME"):
            repo_id_of(bad)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login either
    assert main(["export-data", str(run_dir), "--to", "hf://my-org/tiny-pairs"]) == 2
    assert "needs a Hugging Face token: set HF_TOKEN" in capsys.readouterr().err
    assert main(["export-data", str(run_dir), "--to", "hf://nope"]) == 2
