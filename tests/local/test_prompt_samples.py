"""`sheepdog status --prompts` prints the prompt samples of a local run (issue 23): every
iN/<stage>/prompts.sample.jsonl in iteration and stage order, each prompt exactly as sent
(JSON-quoted, so a trailing space or a ChatML token shows), with the model that answered."""

from __future__ import annotations

import json

from sheepdog.cli import main
from sheepdog.local.report import format_prompt_samples, prompt_samples
from sheepdog.stage_config import PROMPT_SAMPLES


def write(path, lines):
    path.mkdir(parents=True, exist_ok=True)
    (path / PROMPT_SAMPLES).write_text("".join(json.dumps(x) + "\n" for x in lines) + "not json\n")


def sample(phase, iteration, model, prompt, output="ok"):
    return {"phase": phase, "iteration": iteration, "model": model, "prompt": prompt, "output": output}


def test_status_prompts_prints_every_sample_in_order(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"run": "r", "phase": "Succeeded", "iterations": []}))
    write(tmp_path / "i2" / "synthesize", [sample("responses", 2, "i1/model", "<|im_start|>user\nHi<|im_end|>\n")])
    write(tmp_path / "i1" / "synthesize", [sample("responses", 1, "base", "Hi\n"),
                                           sample("assessment:quality", 1, "base", "your score is: ", "9||ok")])
    write(tmp_path / "i1" / "evaluate", [sample("evaluate:ifeval-smoke", 1, "i1/model", "Write.\n")])
    write(tmp_path / "i10" / "synthesize", [sample("responses", 10, "i9/model", "x")])
    found = prompt_samples(tmp_path)
    assert [d for d, _ in found] == ["i1/synthesize", "i1/evaluate", "i2/synthesize", "i10/synthesize"]
    assert len(found[0][1]) == 2  # the damaged line is skipped
    assert main(["status", str(tmp_path), "--prompts"]) == 0
    out = capsys.readouterr().out
    assert out.index("phase responses  iteration 1  model base") < out.index("phase evaluate:ifeval-smoke") \
        < out.index("iteration 2  model i1/model")
    assert '--- prompt "your score is: "' in out  # the trailing space is visible
    assert '--- prompt "<|im_start|>user\\nHi<|im_end|>\\n"' in out
    assert '--- output "9||ok"' in out


def test_status_prompts_without_samples_says_so(tmp_path, capsys):
    (tmp_path / "report.json").write_text(json.dumps({"run": "r", "phase": "Running", "iterations": []}))
    assert main(["status", str(tmp_path), "--prompts"]) == 0
    assert "no prompts.sample.jsonl yet" in capsys.readouterr().out
    assert format_prompt_samples([]).startswith("no ")
