"""The train stage deletes the superseded models its config names, and nothing else."""

from __future__ import annotations

from sheepdog_jobs.stages.train import LINEAGE
from sheepdog_jobs.training import superseded


def model(path, lineage=True):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    if lineage:
        (path / LINEAGE).write_text("{}")
    return str(path)


def test_deletes_superseded_models_of_this_run_only(tmp_path):
    run = tmp_path / "runs" / "r"
    m1, m2, m3 = (model(run / f"i{i}" / "model") for i in (1, 2, 3))
    foreign = model(tmp_path / "elsewhere" / "model")  # not under the run directory
    no_lineage = model(run / "i4" / "model", lineage=False)  # not written by a train stage
    (run / "i1" / ".model.deleting-99").mkdir()  # a killed attempt's leftover
    deleted = superseded.delete([m1, m2, foreign, no_lineage, str(run / "i9" / "model")], str(run),
                                reads=[m2, str(tmp_path / "base")], lineage_file=LINEAGE)
    assert deleted == [m1]
    assert not (run / "i1" / "model").exists() and not list(run.glob("i*/.model.deleting-*"))
    for kept in (m2, m3, foreign, no_lineage):  # read by the stage, not listed, foreign, not a model
        assert (tmp_path / kept / "model.safetensors").is_file()
    assert superseded.delete([m1], str(run), reads=[], lineage_file=LINEAGE) == []  # already gone


def test_the_train_stage_deletes_before_anything_else(tmp_path, make_config, tiny_model):
    import pytest

    from sheepdog_jobs.stages import train
    from sheepdog_jobs.stages.common import StageError

    m1 = model(tmp_path / "i1" / "model")
    cfg = make_config(tmp_path, "train", model=tiny_model, iteration=3, train_data=[], delete_models=[m1])
    with pytest.raises(StageError, match="trainData is empty"):  # stops right after the deletion
        train.run(cfg)
    assert not (tmp_path / "i1" / "model").exists()
