"""`sheepdog validate` on a sweep file: every cell's child run validated as the operator builds
it (one invalid cell refuses the file, named with its settings, path and reason), each shipped
example valid, and --workdir checks each cell's inputs as `sheepdog sweep` would."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sheepdog.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "sweeps").glob("*.yaml"))

SWEEP = {
    "apiVersion": "sheepdog.dev/v1alpha1",
    "kind": "SelfAlignmentSweep",
    "metadata": {"name": "qt"},
    "spec": {"template": {"model": {"base": "models/tiny"}, "iterations": 1},
             "axes": [{"field": "filter.threshold", "name": "c", "values": [-1, 5, 8]}]},
}


def write(tmp_path: Path, values: list) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(SWEEP))
    doc["spec"]["axes"][0]["values"] = values
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_valid_sweep_lists_its_cells_and_their_runs(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, [-1, 5, 8]))]) == 0
    out = capsys.readouterr().out
    assert "valid SelfAlignmentSweep qt: 3 cell(s)" in out
    for cell in ("c-m1", "c-5", "c-8"):
        assert f"{cell}: run qt-{cell}, 1 iteration(s)" in out


def test_one_invalid_cell_refuses_the_sweep_naming_the_cell_path_and_reason(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, [-1, 12, 8]))]) == 2
    err = capsys.readouterr().err
    assert "cell c-12 (filter.threshold=12): spec.filter.threshold:" in err
    assert "c-m1" not in err and "c-8" not in err  # only the bad cell is named


def test_a_misspelt_axis_field_is_refused(tmp_path, capsys):
    path = write(tmp_path, [-1, 5])
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["axes"][0]["field"] = "filter.treshold"
    path.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(path)]) == 2
    assert "spec.axes[0].field" in capsys.readouterr().err


def test_set_is_refused_for_a_sweep(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, [-1])), "--set", "iterations=2"]) == 2
    assert "--set applies to run files" in capsys.readouterr().err


def test_workdir_checks_each_cells_model(tmp_path, capsys):
    path = write(tmp_path, [-1, 5])
    work = tmp_path / "work"
    work.mkdir()
    assert main(["validate", str(path), "--workdir", str(work)]) == 2
    err = capsys.readouterr().err
    assert "cell c-m1:" in err and "models/tiny" in err
    (work / "models" / "tiny").mkdir(parents=True)
    (work / "models" / "tiny" / "config.json").write_text("{}")
    assert main(["validate", str(path), "--workdir", str(work)]) == 0


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_shipped_sweep_example_is_valid(example, capsys):
    assert main(["validate", str(example)]) == 0, capsys.readouterr().err
