"""examples/paper-tiny.yaml: the authors' scripts' settings (examples/paper.yaml) on the tiny
model, two iterations with `sheepdog run` (issue 23's done-when). The run's own files show what
the model was asked and by whom: raw response prompts in iteration 1 and the scripts' ChatML
from iteration 2, judge prompts in the scripts' tail answered by the base model, the scripts'
parser, dedup window and rule set in the summaries, and ifeval-smoke and IFBench results for
M_0 and each iteration in the report.

The run as the file ships it (8 instructions an iteration, 4 + 4 evaluation prompts) is a bulk
repetition (make test-all); make test runs the same file cut further with --set (2 instructions,
1 + 1 evaluation prompts, shorter answers): the same stages and checks at the least cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sheepdog.api.load import load_run
from sheepdog.api.reproduction import CHATML, departures, is_scripts_reproduction
from tests.jobs.conftest import tiny_model  # noqa: F401  (session fixture: the converted SmolLM2)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "examples" / "paper-tiny.yaml"
PAPER = REPO / "examples" / "paper.yaml"
SAMPLES = "prompts.sample.jsonl"

# What paper-tiny.yaml gives up of the scripts' settings, each for size or for the 135M judge
# (its header says why): nothing else may depart.
DEPARTURES = {"synthesis.maxTokens", "assessment.scoring", "training.learningRate", "training.epochs",
              "training.cutoffLength"}

# make test's cut: the least that still runs every stage of both iterations and both suites
SMALL = ["synthesis.dataSize=2", "synthesis.maxRequests=8", "evaluation.limit=1", "evaluation.maxTokens=48"]


def test_paper_tiny_keeps_the_scripts_settings_but_for_its_documented_cuts():
    run = load_run(TINY)
    assert is_scripts_reproduction(run)
    departed = {line.split()[0].removeprefix("spec.") for line in departures(run.spec)}
    assert departed == DEPARTURES
    spec, paper = run.spec, load_run(PAPER).spec
    # what the paper's rows vary, as the main setting; evaluation with the two suites of the done-when
    assert spec.iterations == 2 and spec.training.strategy == paper.training.strategy == "one_base"
    assert spec.assessment.criteria == paper.assessment.criteria and spec.filter.method == paper.filter.method
    assert spec.training.lora == paper.training.lora and spec.training.merge is True
    assert spec.evaluation.enabled and spec.evaluation.suites == ["ifeval-smoke", "ifbench"]
    # the file is run as it is documented in its header
    header = TINY.read_text()
    assert "sheepdog run examples/paper-tiny.yaml --workdir runs/paper-tiny" in header
    assert yaml.safe_load(header)["metadata"]["name"] == "paper-tiny"


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def run_paper_tiny(work: Path, model: str, overrides: list[str]) -> tuple[dict, str]:
    (work / "models").mkdir(parents=True)
    os.symlink(model, work / "models" / "smollm2-135m-instruct")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    cmd = [sys.executable, "-m", "sheepdog.cli", "run", str(TINY), "--workdir", str(work), "--no-plot"]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=2300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return json.loads((work / "report.json").read_text()), out


def check_paper_tiny_run(work: Path, report: dict) -> None:
    assert report["phase"] == "Succeeded", report
    base = str(work / "models" / "smollm2-135m-instruct")
    records = report["iterations"]
    assert [r["iteration"] for r in records] == [0, 1, 2]
    # evaluation: ifeval-smoke and IFBench for M_0 and the model of each iteration
    for r in records:
        ev = r["evaluation"]
        for suite in ("ifeval-smoke", "ifbench"):
            for metric in ("promptStrict", "promptLoose"):
                assert isinstance(ev.get(f"{suite}.{metric}"), float), (r["iteration"], ev)
        assert not any(k.startswith("ifeval.") for k in ev), "the smoke set is never labelled IFEval"
    for it in (1, 2):
        synth = lines(work / f"i{it}" / "synthesize" / SAMPLES)
        by = {}
        for x in synth:
            by.setdefault(x["phase"], []).append(x)
        # the meta prompt is raw in every iteration; responses raw in 1, ChatML from 2
        assert by["instructions"][0]["prompt"].startswith("You are asked to come up with a set of")
        response = by["responses"][0]["prompt"]
        if it == 1:
            assert "<|im_start|>" not in response and response.endswith("\n")
        else:
            head, tail = CHATML.split("{instruction}{input}")
            assert response.startswith(head) and response.endswith(tail)
        # the judge is the base model in both iterations, asked in the scripts' prompt tail
        judged = [x for phase, xs in by.items() if phase.startswith("assessment:") for x in xs]
        assert {x["phase"] for x in judged} == {"assessment:quality", "assessment:following"}
        assert all(os.path.realpath(x["model"]) == os.path.realpath(base) for x in judged), judged[0]["model"]
        assert all(x["prompt"].endswith("your score is: ") for x in judged)
        # the scripts' parser, dedup window and rule set, named (with their counts) in the summaries
        record = records[it]
        s = record["stages"]["synthesize"]["summary"]
        assert s["instructionParser"] == "authors" and s["dedupScope"] == "window:100", s
        assert isinstance(s["parserDropped"], dict)
        c = record["stages"]["curate"]["summary"]
        assert c["ruleSet"] == "authors" and isinstance(c["ruleDropped"], dict), c
        assert record["kept"] >= 1
    # evaluation asks each model in the template it generates with: M_0 raw, M_1 ChatML
    for it, chatml in ((0, False), (1, True)):
        asked = lines(work / f"i{it}" / "evaluate" / SAMPLES)
        assert {x["phase"] for x in asked} == {"evaluate:ifeval-smoke", "evaluate:ifbench"}
        assert all(x["prompt"].startswith("<|im_start|>system") == chatml for x in asked)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_paper_tiny_two_iterations_small(tmp_path, tiny_model):  # noqa: F811
    report, _ = run_paper_tiny(tmp_path / "paper-tiny", tiny_model, SMALL)
    check_paper_tiny_run(tmp_path / "paper-tiny", report)


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.bulk
@pytest.mark.timeout(2400)
def test_paper_tiny_two_iterations_as_shipped(tmp_path, tiny_model):  # noqa: F811
    report, _ = run_paper_tiny(tmp_path / "paper-tiny", tiny_model, [])
    check_paper_tiny_run(tmp_path / "paper-tiny", report)
    assert all(r["evaluation"]["ifbench.unchecked"] == 0.0 for r in report["iterations"])
