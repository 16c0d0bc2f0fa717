"""The train stage's free-space check: the numbers, before any training."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

from sheepdog_jobs.stages.common import StageError
from sheepdog_jobs.training import free_space

Usage = namedtuple("Usage", "total used free")


def model_dir(root: Path, weights: int) -> Path:
    root.mkdir(parents=True)
    (root / "model-00001-of-00002.safetensors").write_bytes(b"\0" * (weights // 2))
    (root / "model-00002-of-00002.safetensors").write_bytes(b"\0" * (weights - weights // 2))
    (root / "config.json").write_text("{}" * 500)  # not weights
    return root


def test_needed_bytes_are_the_base_weights_when_merging(tmp_path):
    base = model_dir(tmp_path / "base", 10_000)
    assert free_space.weight_bytes(base) == 10_000
    assert free_space.needed_bytes(base, merge=True) == int(10_000 * (1 + free_space.MARGIN))
    assert free_space.needed_bytes(base, merge=True, adapter_bytes=1000) == int(11_000 * (1 + free_space.MARGIN))
    assert free_space.needed_bytes(base, merge=False, adapter_bytes=1000) == int(1000 * (1 + free_space.MARGIN))
    assert free_space.weight_bytes("Org/hub-id") == 0  # nothing local to measure


def test_check_fails_with_the_numbers(tmp_path, monkeypatch):
    free = shutil.disk_usage(tmp_path).free
    free_space.check(tmp_path / "not" / "yet" / "made", 1, "x")  # the first existing parent is asked
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(100 * free_space.GiB, 99 * free_space.GiB,
                                                              free_space.GiB))
    with pytest.raises(free_space.NoSpace) as exc:
        free_space.check(tmp_path, 3 * free_space.GiB, "saving the model")
    assert str(exc.value).startswith(f"saving the model needs 3.00 GiB on {tmp_path} but only 1.00 GiB of "
                                     "100.00 GiB is free")
    free_space.check(tmp_path, free_space.GiB, "saving the model")  # exactly enough


def test_train_refuses_before_training(tmp_path, monkeypatch, make_config):
    """The stage's own path: the check is the first thing _train does (no model loaded)."""
    from sheepdog_jobs.stages import train

    base = model_dir(tmp_path / "base", 4 * free_space.GiB // 1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(1000, 1000, 0))
    cfg = make_config(tmp_path, "train", model=str(base))
    with pytest.raises(StageError, match="the model this train writes needs 0.00 GiB .* only 0.00 GiB of"):
        train._train(cfg, [], "fp", Path(cfg.out_dir), Path(cfg.model_out))
