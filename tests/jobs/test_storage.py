"""storage: atomic writes, JSONL, _SUCCESS manifests and when a finished output is trusted."""

from __future__ import annotations

import json
import os

import pytest

from sheepdog_jobs import storage


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.json"
    storage.atomic_write_json(target, {"a": 1})
    storage.atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    storage.atomic_write_text(target, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        storage.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # the temp file is removed


def test_jsonl_round_trip_and_bad_line(tmp_path):
    path = tmp_path / "r.jsonl"
    records = [{"id": 1, "text": "héllo\nworld"}, {"id": 2, "text": ""}]
    assert storage.write_jsonl(path, records) == 2
    assert storage.read_jsonl(path) == records
    assert len(path.read_text().splitlines()) == 2  # newlines inside values are escaped
    path.write_text('{"ok": 1}\n{broken\n')
    with pytest.raises(ValueError, match=r"line 2"):
        storage.read_jsonl(path)


def test_fingerprint_depends_on_config_and_file_bytes(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text("a\n")
    fp = storage.fingerprint({"x": 1, "y": [1, 2]}, [f])
    assert fp == storage.fingerprint({"y": [1, 2], "x": 1}, [f])  # key order does not matter
    assert fp != storage.fingerprint({"x": 2, "y": [1, 2]}, [f])
    f.write_text("b\n")
    assert fp != storage.fingerprint({"x": 1, "y": [1, 2]}, [f])


def _finished(tmp_path, fp="fp1"):
    out = tmp_path / "stage"
    storage.write_jsonl(out / "kept.jsonl", [{"i": i} for i in range(5)])
    storage.atomic_write_text(out / "notes.txt", "hello")
    storage.write_manifest(out, ["kept.jsonl", out / "notes.txt"], fp, counts={"kept": 5}, summary={"kept": 5})
    return out


def test_manifest_records_counts_checksums_and_fingerprint(tmp_path):
    out = _finished(tmp_path)
    manifest = storage.read_manifest(out)
    assert manifest["fingerprint"] == "fp1"
    assert manifest["counts"] == {"kept": 5}
    assert set(manifest["files"]) == {"kept.jsonl", "notes.txt"}
    assert manifest["files"]["kept.jsonl"]["sha256"] == storage.sha256_file(out / "kept.jsonl")
    assert storage.is_done(out, "fp1")
    assert storage.verify_manifest(out, "fp1")["summary"] == {"kept": 5}


def test_not_done_when_inputs_changed(tmp_path):
    out = _finished(tmp_path)
    assert not storage.is_done(out, "fp2")
    assert storage.verify_manifest(out, None) is not None  # files intact, whatever made them


def test_truncated_output_with_stale_manifest_is_not_trusted(tmp_path):
    out = _finished(tmp_path)
    data = (out / "kept.jsonl").read_bytes()
    (out / "kept.jsonl").write_bytes(data[: len(data) // 2])  # a crash mid-write, old-style
    assert not storage.is_done(out, "fp1")
    assert storage.verify_manifest(out, None) is None


def test_same_size_corruption_is_caught_by_checksum(tmp_path):
    out = _finished(tmp_path)
    data = bytearray((out / "notes.txt").read_bytes())
    data[0] ^= 0x01
    (out / "notes.txt").write_bytes(bytes(data))
    assert not storage.is_done(out, "fp1")


def test_missing_output_or_garbled_manifest_is_not_done(tmp_path):
    out = _finished(tmp_path)
    (out / "notes.txt").unlink()
    assert not storage.is_done(out, "fp1")
    out = _finished(tmp_path / "b")
    (out / storage.MANIFEST).write_text('{"version": 1, "fingerprint": "fp1", "files"')
    assert not storage.is_done(out, "fp1")
    assert not storage.is_done(tmp_path / "nowhere", "fp1")


def test_named_phase_manifests_are_independent(tmp_path):
    out = tmp_path / "s"
    storage.write_jsonl(out / "a.jsonl", [{"a": 1}])
    storage.write_manifest(out, ["a.jsonl"], "fa", name="_SUCCESS.a")
    assert storage.is_done(out, "fa", "_SUCCESS.a")
    assert not storage.is_done(out, "fa")  # the stage's own _SUCCESS is not there
    storage.remove_manifest(out, "_SUCCESS.a")
    assert not storage.is_done(out, "fa", "_SUCCESS.a")
    storage.remove_manifest(out, "_SUCCESS.a")  # idempotent


def test_manifest_paths_outside_out_dir_are_relative(tmp_path):
    out, model = tmp_path / "i1" / "train", tmp_path / "i1" / "model"
    storage.atomic_write_text(model / "weights.bin", "w")
    storage.write_manifest(out, [model / "weights.bin"], "fp")
    assert list(storage.read_manifest(out)["files"]) == ["../model/weights.bin"]
    assert storage.is_done(out, "fp")
    (model / "weights.bin").write_text("x")
    assert not storage.is_done(out, "fp")


def test_model_identity_changes_with_small_files_and_sizes(tmp_path):
    m = tmp_path / "m"
    storage.atomic_write_text(m / "config.json", '{"a": 1}')
    first = storage.model_identity(str(m))
    storage.atomic_write_text(m / "config.json", '{"a": 2}')
    assert storage.model_identity(str(m)) != first
    assert storage.model_identity("org/name") == "org/name"  # hub ids stay ids
