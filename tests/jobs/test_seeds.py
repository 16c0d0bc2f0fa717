import json
from pathlib import Path

import pytest

from sheepdog_jobs.seeds import MAX_LINE_BYTES, SeedError, SeedTask, load_seed_tasks

from sheepdog_jobs.seeds import SELF_INSTRUCT_SEED_TASKS as SHARED_SEEDS


def write(tmp_path: Path, content: str | bytes, name: str = "seeds.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def self_instruct_line(i: int, instruction: str = "Do something useful.", inp: str = "",
                       out: str = "ok") -> str:
    return json.dumps({"id": f"seed_task_{i}", "name": f"t{i}", "instruction": instruction,
                       "instances": [{"input": inp, "output": out}], "is_classification": False})


def test_real_self_instruct_file_loads_175_tasks():
    assert SHARED_SEEDS.exists(), f"the shared Self-Instruct seed tasks are missing: {SHARED_SEEDS}"
    tasks = load_seed_tasks(SHARED_SEEDS)
    assert len(tasks) == 175
    assert all(isinstance(t, SeedTask) and t.instruction for t in tasks)
    assert tasks[0].id == "seed_task_0"
    assert tasks[1].instruction == "What is the relation between the given pairs?"
    assert tasks[1].input == "Night : Day :: Right : Left"
    assert tasks[1].output.startswith("The relation between the given pairs")
    assert len({t.id for t in tasks}) == 175
    assert sum(1 for t in tasks if t.input) > 0 and sum(1 for t in tasks if not t.input) > 0


def test_flat_form_blank_lines_and_default_ids(tmp_path):
    path = write(tmp_path, "\n".join([
        json.dumps({"instruction": "Name a color.", "output": "Blue"}),
        "",
        "   ",
        json.dumps({"instruction": "Add the numbers.", "input": "2 3", "output": "5", "id": 7}),
    ]) + "\n")
    tasks = load_seed_tasks(path)
    assert tasks == [SeedTask("Name a color.", "", "Blue", "line-1"),
                     SeedTask("Add the numbers.", "2 3", "5", "7")]


def test_first_instance_is_used_and_bom_tolerated(tmp_path):
    line = json.dumps({"id": "a", "instruction": "Translate.",
                       "instances": [{"input": "hola", "output": "hello"},
                                     {"input": "adios", "output": "bye"}]})
    path = write(tmp_path, "\ufeff" + line + "\r\n")
    assert load_seed_tasks(path) == [SeedTask("Translate.", "hola", "hello", "a")]


def test_seed_task_is_frozen():
    task = SeedTask("i", "", "o", "x")
    with pytest.raises(AttributeError):
        task.instruction = "changed"  # type: ignore[misc]


def test_missing_file(tmp_path):
    with pytest.raises(SeedError) as err:
        load_seed_tasks(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(err.value) and "not found" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_directory_is_an_error(tmp_path):
    with pytest.raises(SeedError, match="directory"):
        load_seed_tasks(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, content)
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    assert str(path) in str(err.value) and "no seed tasks" in str(err.value)


def test_invalid_json_names_file_and_line(tmp_path):
    path = write(tmp_path, self_instruct_line(0) + "\n" + "{not json\n")
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    message = str(err.value)
    assert str(path) in message and "line 2" in message and "invalid JSON" in message
    assert err.value.problems == [p for p in err.value.problems if "line 2" in p]


def test_not_utf8(tmp_path):
    path = write(tmp_path, self_instruct_line(0).encode() + b"\n" + b'{"instruction": "caf\xe9"}\n')
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    assert "line 2" in str(err.value) and "UTF-8" in str(err.value)


@pytest.mark.parametrize("line,expected", [
    ("[1, 2]", "expected a JSON object"),
    ('"just a string"', "expected a JSON object"),
    ('{"input": "x", "output": "y"}', 'missing or empty "instruction"'),
    ('{"instruction": "   "}', 'missing or empty "instruction"'),
    ('{"instruction": 5}', 'missing or empty "instruction"'),
    ('{"instruction": "Do.", "instances": []}', '"instances" must be a non-empty list'),
    ('{"instruction": "Do.", "input": 3}', '"input" must be a string'),
    ('{"instruction": "Do.", "instances": [{"output": ["x"]}]}', '"output" must be a string'),
    ('{"instruction": "Do.", "id": [1]}', '"id" must be'),
])
def test_bad_lines(tmp_path, line, expected):
    path = write(tmp_path, self_instruct_line(0) + "\n" + line + "\n")
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    assert expected in str(err.value)
    assert f"{path}: line 2" in str(err.value)


def test_line_longer_than_limit(tmp_path):
    long_line = json.dumps({"instruction": "x" * (MAX_LINE_BYTES + 10)})
    path = write(tmp_path, self_instruct_line(0) + "\n" + long_line + "\n" + "{bad\n")
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    problems = err.value.problems
    assert len(problems) == 2  # the long line is skipped whole, then line 3 is read normally
    assert "line 2" in problems[0] and "longer than" in problems[0]
    assert "line 3" in problems[1] and "invalid JSON" in problems[1]


def test_line_at_the_limit_is_fine(tmp_path):
    prefix, suffix = '{"instruction": "', '"}'
    line = prefix + "x" * (MAX_LINE_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(line) == MAX_LINE_BYTES
    tasks = load_seed_tasks(write(tmp_path, line))  # no trailing newline either
    assert len(tasks[0].instruction) == MAX_LINE_BYTES - len(prefix) - len(suffix)


def test_duplicate_ids(tmp_path):
    path = write(tmp_path, self_instruct_line(3) + "\n" + self_instruct_line(3) + "\n")
    with pytest.raises(SeedError, match=r"line 2: duplicate id 'seed_task_3' \(first on line 1\)"):
        load_seed_tasks(path)


def test_all_problems_collected_first_ten_reported(tmp_path):
    lines = [self_instruct_line(0)] + ["{bad"] * 12 + ["[]"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(SeedError) as err:
        load_seed_tasks(path)
    assert len(err.value.problems) == 13
    message = str(err.value)
    assert "13 problem(s)" in message
    assert "line 2:" in message and "line 11:" in message
    assert "line 12:" not in message and "line 14:" not in message
    assert "... and 3 more" in message
