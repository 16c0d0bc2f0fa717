"""`sheepdog sweep` with the fake stage program: every cell runs as a local run in its own
workdir, sweep.json holds the issue's shape, the tables and a plot per axis are written, a
second invocation resumes (runs nothing again), and a bad cell refuses the sweep before any
stage runs."""

from __future__ import annotations

import io
import json

import pytest

from sheepdog.cli import main
from sheepdog.sweep.grid import SweepInvalid
from sheepdog.sweep.local import run_sweep

SWEEP = """apiVersion: sheepdog.dev/v1alpha1
kind: SelfAlignmentSweep
metadata:
  name: demo
spec:
  template:
    model: {{base: models/tiny}}
    seed: {{path: seeds/tasks.jsonl}}
    iterations: 1
    training: {{strategy: one_base}}
    retries: 0
    stages:
      train: {{gpus: 0}}
  axes:
    - field: filter.threshold
      name: c
      values: {values}
"""


def write_sweep(project, values="[-1, 5, 8]"):
    path = project.root / "sweep.yaml"
    path.write_text(SWEEP.format(values=values))
    return path


def test_three_cells_run_and_the_table_has_three_rows(project, capsys):
    sweep = write_sweep(project)
    out = io.StringIO()
    result = run_sweep(sweep, project.root / "sw", share=False, out=out)
    assert result.exit_code == 0
    work = project.root / "sw"
    doc = json.loads((work / "sweep.json").read_text())
    assert doc["sweep"] == "demo" and doc["phase"] == "Succeeded"
    assert [c["name"] for c in doc["cells"]] == ["c-m1", "c-5", "c-8"]
    assert [c["settings"] for c in doc["cells"]] == [{"filter.threshold": v} for v in (-1, 5, 8)]
    for cell in doc["cells"]:
        assert set(cell) >= {"name", "settings", "phase", "iterations", "reused"}
        assert cell["phase"] == "Succeeded" and cell["iterations"][0]["kept"] == 4
        # each cell's run file carries its value; each ran in its own workdir
        run = json.loads(json.dumps(__import__("yaml").safe_load((work / "cells" / f"{cell['run']}.yaml").read_text())))
        assert run["spec"]["filter"]["threshold"] == cell["settings"]["filter.threshold"]
        assert (work / cell["run"] / "report.json").exists()
    # without sharing, every cell ran its three stages
    assert sorted(project.invocations()) == sorted([(1, s) for s in ("synthesize", "curate", "train")] * 3)
    text = (work / "table.txt").read_text().splitlines()
    assert text[0].split()[:4] == ["cell", "filter.threshold", "runs", "phase"]
    assert [line.split()[0] for line in text[2:5]] == ["c-m1", "c-5", "c-8"]
    assert (work / "table.md").read_text().startswith("| cell | filter.threshold |")
    assert (work / "table.csv").read_text().splitlines()[1].startswith("c-m1,-1,1,Succeeded,4")
    assert (work / "plot-filter-threshold.png").read_bytes()[:4] == b"\x89PNG"
    printed = out.getvalue()
    assert "[c-5] Succeeded" in printed and "sweep.json:" in printed

    # again: every cell is finished, nothing runs
    before = len(project.invocations())
    assert run_sweep(sweep, work, share=False, out=io.StringIO(), plot=False).exit_code == 0
    assert len(project.invocations()) == before


def test_cells_share_synthesize_through_one_stage_cache(project):
    """The cells differ from curate on: synthesize runs once, the other two reuse it."""
    sweep = write_sweep(project)
    out = io.StringIO()
    result = run_sweep(sweep, project.root / "sw", out=out, plot=False)
    assert result.exit_code == 0
    ran = project.invocations()
    assert ran.count((1, "synthesize")) == 1, ran
    assert ran.count((1, "curate")) == 3 and ran.count((1, "train")) == 3, ran
    doc = result.document
    assert doc["reusedStages"] == 2 and doc["stageCache"] == str(project.root / "sw" / "stage-cache")
    producer, *reusers = doc["cells"]
    assert producer["reused"] == []
    for cell in reusers:
        [reuse] = cell["reused"]
        assert (reuse["iteration"], reuse["stage"]) == (1, "synthesize")
        assert producer["run"] in reuse["from"]
    assert "shared stages: c-5 i1 synthesize from" in out.getvalue()


@pytest.mark.parametrize("share", [True, False])
def test_parallel_cells(project, share):
    sweep = write_sweep(project)
    result = run_sweep(sweep, project.root / "sw", parallel=3, share=share, out=io.StringIO(), plot=False)
    assert result.exit_code == 0
    assert [c["phase"] for c in result.document["cells"]] == ["Succeeded"] * 3
    # sharing: the three cells start together, one produces synthesize and two wait for it
    assert project.invocations().count((1, "synthesize")) == (1 if share else 3)


def test_an_invalid_cell_refuses_the_sweep_before_anything_runs(project, capsys):
    sweep = write_sweep(project, values="[5, 12]")
    with pytest.raises(SweepInvalid) as err:
        run_sweep(sweep, project.root / "sw", out=io.StringIO())
    assert "cell c-12 (filter.threshold=12): spec.filter.threshold: must be between -1 and 10 (got 12)" in str(err.value)
    assert project.invocations() == [] and not (project.root / "sw").exists()
    # the command line says so and exits 2
    assert main(["sweep", str(sweep), "--workdir", str(project.root / "sw")]) == 2
    assert "cell c-12" in capsys.readouterr().err


def test_a_missing_model_is_named_per_cell(project, capsys):
    sweep = write_sweep(project)
    sweep.write_text(sweep.read_text().replace("models/tiny", "models/nope"))
    assert main(["sweep", str(sweep), "--workdir", str(project.root / "sw")]) == 2
    assert "cell c-m1: spec.model.base: no model at 'models/nope'" in capsys.readouterr().err
