"""The train stage's save cannot loop: weights hashed while written, the manifest before the
checkpoints' removal, and a kill at any point of the save resumed from the last checkpoint."""

from __future__ import annotations

import os

import pytest

from sheepdog_jobs import storage
from sheepdog_jobs.training import LOG_FILE, crash_points
from sheepdog_jobs.training.checkpoints import MARKER
from sheepdog_jobs.training.hashed_save import HashingWriter

from .test_train_deepspeed import write_curated


def test_writer_hashes_what_it_writes(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    writer = HashingWriter()
    with writer.installed():
        model.save_pretrained(tmp_path / "m", max_shard_size="20KB")  # several shards
    import transformers.modeling_utils as mu

    assert mu.safe_save_file is not writer.save_file  # restored
    shards = sorted((tmp_path / "m").glob("*.safetensors"))
    assert len(shards) > 1
    for shard in shards:
        assert writer.entries[os.path.abspath(shard)] == storage.file_entry(shard)
    assert writer.seconds["write"] > 0 and writer.seconds["hash"] > 0
    # The weights load back as written.
    again = LlamaForCausalLM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    # Moved to their final place: the writer's entries, the small files hashed now.
    entries = writer.entries_under(tmp_path / "m", tmp_path / "final")
    assert set(entries) == {str(tmp_path / "final" / p.relative_to(tmp_path / "m"))
                            for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert entries[str(tmp_path / "final" / "config.json")] == storage.file_entry(tmp_path / "m" / "config.json")


def test_manifest_takes_entries_hashed_while_writing(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "b.txt").write_text("small")
    known = {"bytes": 10, "sha256": storage.sha256_file(tmp_path / "a.bin")}
    manifest = storage.write_manifest(tmp_path, ["a.bin", "b.txt"], "fp", hashed={str(tmp_path / "a.bin"): known})
    assert manifest["files"] == {"a.bin": known, "b.txt": storage.file_entry(tmp_path / "b.txt")}
    assert storage.verify_manifest(tmp_path, "fp") is not None
    # The given entry is what is recorded (not read again): a wrong one does not verify.
    storage.write_manifest(tmp_path, ["a.bin"], "fp", hashed={str(tmp_path / "a.bin"): {"bytes": 10, "sha256": "0"}})
    assert storage.verify_manifest(tmp_path, "fp") is None


def test_crash_points(monkeypatch):
    with pytest.raises(ValueError, match="unknown crash point"):
        crash_points.reach("save:nowhere")
    monkeypatch.setenv(crash_points.ENV, "save:written")
    crash_points.reach("save:loaded")  # another point: goes on


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_inside_the_save_resumes_from_the_checkpoint(tmp_path, make_config, run_cli, tiny_model):
    """Killed before or after the model's rename (no manifest yet), the retry resumes at the last
    checkpoint's step and saves; killed after the manifest (checkpoints not yet removed), the
    next retry is done at once and removes them."""
    data = write_curated(tmp_path)
    # 4 examples, batch 1, accumulation 2, one epoch: steps 1-2; checkpoints at 1 and at the end.
    spec = {"training": {"epochs": 1, "validationFraction": 0.34, "perDeviceBatchSize": 1,
                         "gradientAccumulation": 2, "checkpointEvery": 1, "reportTo": [], "lora": {"dropout": 0}}}
    cfg = make_config(tmp_path, "train", spec=spec, model=tiny_model, train_data=[data])
    out, model = tmp_path / "i1" / "train", tmp_path / "i1" / "model"

    # Killed with the model written under its temporary name: nothing of it is trusted.
    proc, _ = run_cli(cfg, timeout=900, SHEEPDOG_TEST_CRASH_AT="save:written")
    assert proc.returncode == crash_points.EXIT_CODE, proc.stderr[-4000:]
    assert list(tmp_path.glob("i1/.model.tmp-*")) and not model.exists()

    proc, _ = run_cli(cfg, timeout=900, SHEEPDOG_TEST_CRASH_AT="save:model-renamed")
    assert proc.returncode == crash_points.EXIT_CODE, proc.stderr[-4000:]
    assert "test crash point: exiting at save:model-renamed" in proc.stderr
    assert "resuming from checkpoint-2" in proc.stderr
    assert not list(tmp_path.rglob(".*.tmp-*"))  # the first attempt's temporary directories went
    assert (model / "model.safetensors").is_file() and not (out / storage.MANIFEST).exists()
    assert (out / "checkpoints" / "checkpoint-2" / MARKER).is_file()

    proc, _ = run_cli(cfg, timeout=900, SHEEPDOG_TEST_CRASH_AT="save:manifest-written")
    assert proc.returncode == crash_points.EXIT_CODE, proc.stderr[-4000:]
    assert "resuming from checkpoint-2" in proc.stderr
    manifest = storage.verify_manifest(out, None)
    assert manifest is not None and (out / "checkpoints").exists()
    summary = manifest["summary"]
    assert summary["resumedFromStep"] == summary["step"] == summary["totalSteps"] == 2
    assert [r["step"] for r in storage.read_jsonl(out / LOG_FILE) if "loss" in r] == [1, 2]
    assert set(summary["saveSeconds"]) == {"load", "merge", "write", "hash"}
    assert summary["saveSeconds"]["write"] > 0 and summary["saveSeconds"]["hash"] > 0
    print(f"\nsave seconds (tiny model): {summary['saveSeconds']}")
    assert "../model/model.safetensors" in manifest["files"]

    proc, summary = run_cli(cfg, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert summary["skipped"] and not (out / "checkpoints").exists()
