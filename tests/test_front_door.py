"""The front door: `make demo`, the README's first command, runs the quickstart run file itself
(examples/quickstart.yaml, a real 2-iteration I-SHEEP run on the tiny model) on the engine that
`engine: auto` picks here (vLLM's CPU build when installed). A retried stage fails this test: a
stage that only succeeds on its second attempt is a main job that fails for some users.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.timeout(2400)]


def test_make_demo_runs_the_quickstart_with_no_retried_stage(tmp_path, tiny_model):  # noqa: F811
    demo = tmp_path / "quickstart"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO={demo}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=2300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]

    report = json.loads((demo / "report.json").read_text())
    assert report["phase"] == "Succeeded", report
    # a short, readable terminal: one line per stage event, the stages' output in their logs,
    # and none of vLLM's per-weight dtype warnings (engines/vllm_logging.py)
    assert "Attempted to load weight" not in out
    assert len(out.splitlines()) < 80, out
    assert "Attempted to load weight" not in (demo / "i1" / "synthesize.log").read_text()
    # the evaluation panel has values for M_0 and both iterations, and the best model was chosen
    # by the quickstart's stopping metric, not just "the last one"
    metric = "ifeval-smoke.promptLoose"
    assert [r["iteration"] for r in report["iterations"]] == [0, 1, 2]
    assert all(isinstance(r["evaluation"][metric], float) for r in report["iterations"]), report["iterations"]
    assert report["bestBy"] == metric and report["bestIteration"] in (0, 1, 2)
    assert f"best: iteration {report['bestIteration']} by {metric}" in out
    assert [r["iteration"] for r in report["iterations"] if r["iteration"] > 0] == [1, 2]
    attempts = {p.relative_to(demo).as_posix(): json.loads(p.read_text())["attempts"]
                for p in sorted(demo.glob("i*/*.attempts.json"))}
    stages = {"synthesize", "curate", "train"}
    assert {k.split("/")[1].split(".")[0] for k in attempts} >= stages, attempts
    assert all(n == 1 for n in attempts.values()), f"a stage was retried: {attempts}"
    for record in report["iterations"]:
        if record["iteration"] == 0:
            continue
        synth = record["stages"]["synthesize"]["summary"]
        # vLLM's CPU build is installed here (scripts/setup-venv, as in CI): a silent fall-back
        # to transformers fails here
        assert synth["engine"] == "vllm", synth
        assert record["kept"] >= 1 and (demo / f"i{record['iteration']}" / "model" / "config.json").is_file()
        if record["iteration"] == 2:
            # iteration 2 generates with iteration 1's merged model: the trained model loads in the
            # engine `auto` picks (vLLM where installed, as in CI), not only in transformers
            assert record["generatorModel"] == "i1/model", record
