"""A run directory's owner (sheepdog_jobs.run_marker): every stage of a Kubernetes run claims its
directory by the run's uid and refuses one another run claimed; the cleanup Job of a deleted run
removes only a directory marked as that run's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sheepdog_jobs.constants import EXIT_UNFIXABLE
from sheepdog_jobs.run_marker import MARKER, RunDirTaken, claim, delete_run_dir, read_marker

UID_A = "0b5ad7e4-1111-4c3e-9a52-000000000001"
UID_B = "0b5ad7e4-2222-4c3e-9a52-000000000002"


def test_the_first_stage_claims_and_later_stages_find_their_own_marker(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    assert claim(run_dir, "r", UID_A) == "claimed"
    assert read_marker(run_dir) == {"run": "r", "uid": UID_A}
    assert claim(run_dir, "r", UID_A) == "ours"


def test_a_directory_of_another_run_is_refused_and_left_unchanged(tmp_path):
    run_dir = tmp_path / "r"
    claim(run_dir, "r", UID_A)
    (run_dir / "i1").mkdir()
    with pytest.raises(RunDirTaken, match=rf"another run \(r, uid {UID_A}\).*adoptExistingData"):
        claim(run_dir, "r", UID_B)
    assert read_marker(run_dir)["uid"] == UID_A and (run_dir / "i1").is_dir()


def test_adopt_takes_the_directory_over(tmp_path):
    claim(tmp_path, "old", UID_A)
    assert claim(tmp_path, "new", UID_B, adopt=True) == "adopted"
    assert read_marker(tmp_path) == {"run": "new", "uid": UID_B}


def test_a_local_run_without_uid_claims_nothing(tmp_path):
    assert claim(tmp_path / "w", "r", None) == "unchecked"
    assert not (tmp_path / "w").exists()


def test_an_unreadable_marker_is_never_guessed_at(tmp_path):
    (tmp_path / MARKER).write_text("{not json")
    with pytest.raises(RunDirTaken, match="unreadable marker"):
        claim(tmp_path, "r", UID_A)
    (tmp_path / MARKER).write_text('{"run": "r"}')
    with pytest.raises(RunDirTaken, match="without a uid"):
        delete_run_dir(tmp_path, UID_A)


def test_delete_removes_only_the_runs_own_directory(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    claim(run_dir, "r", UID_A)
    (run_dir / "i1" / "train").mkdir(parents=True)
    (run_dir / "i1" / "train" / "weights.bin").write_bytes(b"x" * 10)
    (run_dir / "events.jsonl").write_text("{}\n")
    with pytest.raises(RunDirTaken, match="belongs to run r"):
        delete_run_dir(run_dir, UID_B)
    assert (run_dir / "i1" / "train" / "weights.bin").exists()
    assert delete_run_dir(run_dir, UID_A) == "deleted"
    assert not run_dir.exists() and (tmp_path / "runs").is_dir()
    assert delete_run_dir(run_dir, UID_A) == "absent"  # a retried Job finds nothing to do


def test_delete_leaves_a_directory_without_marker(tmp_path):
    (tmp_path / "old-data.jsonl").write_text("{}\n")
    with pytest.raises(RunDirTaken, match="no .sheepdog-run.json"):
        delete_run_dir(tmp_path, UID_A)
    assert (tmp_path / "old-data.jsonl").exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sheepdog_jobs", *args], capture_output=True, text=True, timeout=60)


def test_the_cleanup_command(tmp_path):
    run_dir = tmp_path / "r"
    claim(run_dir, "r", UID_A)
    proc = _cli("delete-run-data", "--run-dir", str(run_dir), "--uid", UID_B)
    assert proc.returncode == EXIT_UNFIXABLE and "refused" in proc.stderr and run_dir.exists(), proc.stderr
    proc = _cli("delete-run-data", "--run-dir", str(run_dir), "--uid", UID_A)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"runDir": str(run_dir), "outcome": "deleted"}
    assert not run_dir.exists()


def test_a_stage_refuses_another_runs_directory_before_it_writes(tmp_path, make_config, run_cli):
    """The stage command: EXIT_UNFIXABLE (no retry spent), one clear line, nothing written."""
    run_dir = tmp_path / "run"
    claim(run_dir, "t", UID_A)
    cfg = make_config(run_dir, "curate", run_uid=UID_B)
    proc, summary = run_cli(cfg)
    assert proc.returncode == EXIT_UNFIXABLE, proc.stderr
    assert "belongs to another run" in summary["error"] and "Traceback" not in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [MARKER]
    # the run's own uid gets past the claim (and on to curate's own error: no synthesize output)
    proc, summary = run_cli(make_config(run_dir, "curate", run_uid=UID_A))
    assert proc.returncode == 1 and "synthesize output" in summary["error"], summary
