"""The issue's local sweep on the REAL tiny model: examples/sweeps/quickstart-threshold.yaml
(C in -1, 2.5, 3: the tiny model's score scale; one iteration), cut to test size (fewer instructions, shorter generations, no
evaluation, the transformers engine), run by `sheepdog sweep`: synthesize runs once (the other
two cells reuse it through the shared stage cache), curate and train three times, and the
table has three rows with different kept counts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from bench.sweep_sharing import quick
from sheepdog.sweep.local import run_sweep
from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sweeps" / "quickstart-threshold.yaml"


def test_threshold_sweep_synthesizes_once_and_keeps_different_counts(tiny_model, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("SHEEPDOG_STAGE_MODULE", raising=False)  # the real sheepdog_jobs
    doc = quick(yaml.safe_load(EXAMPLE.read_text()))  # the benchmark's test-size cut
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(doc, sort_keys=False))
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "models" / "smollm2-135m-instruct").symlink_to(tiny_model)

    result = run_sweep(sweep, work, out=io.StringIO(), plot=False)
    doc = json.loads((work / "sweep.json").read_text())
    assert result.exit_code == 0, [(c["name"], c["phase"]) for c in doc["cells"]]
    cells = doc["cells"]
    assert [c["settings"]["filter.threshold"] for c in cells] == [-1, 2.5, 3]
    # synthesize ran in the first cell only; the others reused it
    ran = [c["name"] for c in cells if (work / c["run"] / "i1" / "synthesize.log").exists()
           and not c["reused"]]
    assert ran == ["c-m1"], ran
    assert [[(r["iteration"], r["stage"]) for r in c["reused"]] for c in cells] == [[], [(1, "synthesize")],
                                                                                  [(1, "synthesize")]]
    for c in cells:  # curate and train ran in every cell
        assert (work / c["run"] / "i1" / "curate.log").exists() and (work / c["run"] / "i1" / "train.log").exists()
    kept = [c["iterations"][-1]["kept"] for c in cells]
    assert len(set(kept)) == 3 and kept == sorted(kept, reverse=True), kept  # a higher C keeps fewer
    rows = (work / "table.txt").read_text().splitlines()[2:5]
    assert [r.split()[0] for r in rows] == ["c-m1", "c-2-5", "c-3"]
    assert [int(r.split()[4]) for r in rows] == kept
