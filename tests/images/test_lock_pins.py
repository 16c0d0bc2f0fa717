"""images/lock_pins.py: the locks' pins as the constraints every image installs under."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.chart.helm import ROOT

SCRIPT = ROOT / "images" / "lock_pins.py"
sys.path.insert(0, str(SCRIPT.parent))  # lock_pins imports pip_check beside it, as in the images
try:
    import lock_pins
finally:
    sys.path.remove(str(SCRIPT.parent))

LOCK = """# sheepdog lock of x; inputs sha256 00; made by scripts/lock (do not edit)
absl-py==2.5.1 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via
    #   rouge-score
typing_extensions==4.15.0 \\
    --hash=sha256:cc
    # via pydantic
zipp==3.23.0 \\
    --hash=sha256:dd
"""


def test_pins_are_the_name_version_of_each_entry():
    assert lock_pins.lock_pins([LOCK]) == ["absl-py==2.5.1", "typing_extensions==4.15.0", "zipp==3.23.0"]


def test_except_leaves_out_what_a_base_freeze_pins_whatever_its_spelling():
    freeze = "Typing-Extensions==4.12.0\nzipp @ file:///wheels/zipp.whl\nZIPP==3.20.0\n"
    assert lock_pins.lock_pins([LOCK], freeze) == ["absl-py==2.5.1"]


def test_two_locks_agreeing_give_one_line_and_disagreeing_fail():
    other = "absl_py==2.5.1 \\\n    --hash=sha256:aa\nboto3==1.44.5 \\\n    --hash=sha256:ee\n"
    assert lock_pins.lock_pins([LOCK, other])[-1] == "boto3==1.44.5"
    assert len(lock_pins.lock_pins([LOCK, other])) == 4
    with pytest.raises(lock_pins.ConflictingPins, match="zipp is locked at 3.23.0 and at 3.24.0"):
        lock_pins.lock_pins([LOCK, "zipp==3.24.0 \\\n    --hash=sha256:ff\n"])


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)


def test_the_script_on_the_real_locks_and_its_errors(tmp_path):
    res = run("requirements/locks/operator.txt")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "kopf==1.45.2" in lines and all("==" in line and " " not in line for line in lines)
    (tmp_path / "a.txt").write_text("zipp==1 \\\n")
    (tmp_path / "b.txt").write_text("zipp==2 \\\n")
    res = run(str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
    assert res.returncode == 2 and "zipp is locked at 1 and at 2" in res.stderr and res.stdout == ""
    (tmp_path / "empty.txt").write_text("# nothing\n")
    res = run(str(tmp_path / "empty.txt"))
    assert res.returncode == 2 and "no pins" in res.stderr
