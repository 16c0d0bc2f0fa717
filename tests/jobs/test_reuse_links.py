"""reuse_links: the stage cache's links are relative, idempotent, and never delete data."""

from __future__ import annotations

import os

import pytest

from sheepdog.reuse_links import LinkRefused, make_links


@pytest.fixture
def volume(tmp_path):
    producer = tmp_path / "runs" / "a" / "i1" / "synthesize"
    producer.mkdir(parents=True)
    (producer / "assessments.jsonl").write_text("{}\n")
    return tmp_path


def test_links_read_the_producers_files_and_are_relative(volume):
    path, target = volume / "runs/b/i1/synthesize", volume / "runs/a/i1/synthesize"
    assert make_links({str(path): str(target)}) == [str(path)]
    assert (path / "assessments.jsonl").read_text() == "{}\n"
    assert os.readlink(path) == "../../a/i1/synthesize"
    # the volume mounted elsewhere: the link still holds
    moved = volume.parent / "moved"
    volume.rename(moved)
    assert (moved / "runs/b/i1/synthesize/assessments.jsonl").is_file()


def test_idempotent_and_replaces_a_wrong_link_or_an_empty_dir(volume):
    path, target = volume / "runs/b/i1/synthesize", str(volume / "runs/a/i1/synthesize")
    make_links({str(path): target})
    assert make_links({str(path): target}) == []
    path.unlink()
    path.symlink_to(volume)
    assert make_links({str(path): target}) == [str(path)] and os.readlink(path) == "../../a/i1/synthesize"
    path.unlink()
    path.mkdir()
    assert make_links({str(path): target}) == [str(path)] and path.is_symlink()


def test_never_deletes_data(volume):
    path = volume / "runs/b/i1/synthesize"
    path.mkdir(parents=True)
    (path / "mine.jsonl").write_text("x")
    with pytest.raises(LinkRefused, match="holds files"):
        make_links({str(path): str(volume / "runs/a/i1/synthesize")})
    assert (path / "mine.jsonl").read_text() == "x"
