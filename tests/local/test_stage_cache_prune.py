"""`sheepdog cache prune` (sheepdog/local/stage_cache_prune.py) with the fake stage program: the
objects no workdir links to go with their index entries, those still linked stay, a registered
workdir anywhere keeps its objects, a run working in a workdir makes prune refuse, and a
deleted workdir's rerun after a prune recomputes exactly the stages pruned."""

from __future__ import annotations

import io
import shutil

import pytest

from sheepdog.cli import main
from sheepdog.local import run_local
from sheepdog.local.stage_cache_prune import prune
from sheepdog.local.workdir_files import WorkdirBusy, WorkdirLock

THRESHOLD = "  filter:\n    threshold: {threshold}\n"


def run_at(project, workdir, cache, threshold):
    project.write_run(iterations=1, extra=THRESHOLD.format(threshold=threshold))
    result = run_local(project.run_file, workdir, out=io.StringIO(), plot=False, stage_cache=cache)
    assert result.status.phase == "Succeeded"
    return {s: r.cache_key for s, r in result.status.iterations[0].stages.items()}


def objects(cache):
    return {p.name for p in (cache / "objects").iterdir()}


def test_prune_removes_only_what_no_workdir_links_to(project):
    cache = project.root / "cache"
    a = run_at(project, project.root / "a", cache, 5)
    b = run_at(project, project.root / "b", cache, 8)  # reuses a's synthesize
    assert b["synthesize"] == a["synthesize"] and b["curate"] != a["curate"]
    assert objects(cache) == set(a.values()) | set(b.values())

    nothing = prune(cache)  # both workdirs link to everything
    assert nothing.removed == [] and nothing.dropped_entries == []

    shutil.rmtree(project.root / "a")
    dry = prune(cache, dry_run=True)
    assert set(dry.removed) == {a["curate"], a["train"]} and dry.removed_bytes > 0
    assert objects(cache) == set(a.values()) | set(b.values())  # a dry run removes nothing

    done = prune(cache)
    # a's curate and train go with their index entries; the synthesize b links to stays
    assert set(done.removed) == {a["curate"], a["train"]}
    assert set(done.dropped_entries) == {a["curate"], a["train"]}
    assert objects(cache) == set(b.values())
    assert not (cache / f"{a['curate']}.json").exists() and (cache / f"{a['synthesize']}.json").exists()
    assert (project.root / "b" / "i1" / "model" / "config.json").is_file()  # b still reads through its links

    # a rerun of the deleted workdir reuses what is left and recomputes what was pruned
    n = len(project.invocations())
    run_at(project, project.root / "a", cache, 5)
    assert project.invocations()[n:] == [(1, "curate"), (1, "train")]


def test_a_registered_workdir_elsewhere_keeps_its_objects(project):
    cache = project.root / "caches" / "shared"
    elsewhere = project.root / "far" / "away" / "run"  # not beside the cache
    keys = run_at(project, elsewhere, cache, 5)
    assert prune(cache).removed == []
    assert objects(cache) == set(keys.values())
    shutil.rmtree(elsewhere)
    gone = prune(cache)
    assert set(gone.removed) == set(keys.values()) and gone.forgotten == [str(elsewhere.resolve())]
    assert not list((cache / "workdirs").iterdir())  # the gone workdir is forgotten


def test_a_run_working_in_a_workdir_makes_prune_refuse(project):
    cache = project.root / "cache"
    run_at(project, project.root / "a", cache, 5)
    run_at(project, project.root / "b", cache, 8)
    shutil.rmtree(project.root / "a")
    before = objects(cache)
    with WorkdirLock(project.root / "b"):  # as an executor working in b holds it
        with pytest.raises(WorkdirBusy):
            prune(cache)
    assert objects(cache) == before


def test_cli_prune_by_workdir(project, capsys):
    cache = project.root / "runs" / ".stage-cache"  # the default, beside the workdir
    project.write_run(iterations=1)
    run_local(project.run_file, project.root / "runs" / "one", out=io.StringIO(), plot=False)
    stored = objects(cache)
    shutil.rmtree(project.root / "runs" / "one")
    argv = ["cache", "prune", "--workdir", str(project.root / "runs" / "one")]
    assert main(argv + ["--dry-run"]) == 0
    assert f"would remove {len(stored)} object(s)" in capsys.readouterr().out
    assert main(argv) == 0
    assert f"removed {len(stored)} object(s)" in capsys.readouterr().out
    assert objects(cache) == set() and not list(cache.glob("*.json"))
    assert main(["cache", "prune", "--stage-cache", str(project.root / "nowhere")]) == 2
    assert "no stage cache there" in capsys.readouterr().err
