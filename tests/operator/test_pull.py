"""`sheepdog pull` (sheepdog/kube/pull.py): the short-lived pod that reads a run's directory off
its claim, and the way back: its real shell script (tar | gzip | base64, run here by sh as the
pod runs it) decoded and unpacked into an identical directory. The API server's part (pods,
pods/log) is exercised on the real control plane in tests/operator/test_pull_cluster.py."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from sheepdog.kube.podsecurity import restricted_violations
from sheepdog.kube.pull import (DIR_ENV, EXCLUDE_ENV, MODEL_PATTERNS, MOUNT, PullError, decode, pull_pod, run_dir,
                                unpack)

RUN = {"metadata": {"name": "demo", "namespace": "team"},
       "spec": {"storage": {"claimName": "data"},
                "stages": {"curate": {"nodeSelector": {"pool": "cpu"},
                                      "tolerations": [{"key": "spot", "operator": "Exists"}]}}}}


def make_run_dir(root: Path) -> dict[str, bytes]:
    files = {
        "report.json": b'{"run": "demo"}',
        "i1/curate/kept.jsonl": b'{"instruction": "x"}\n' * 100,
        "i1/model/model.safetensors": os.urandom(4096),
        "i1/train/checkpoints/checkpoint-2/adapter.bin": os.urandom(512),
        "i1/train/train.log.jsonl": b'{"loss": 1.0}\n',
        "i1/synthesize.log": "übersetzt\n".encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def run_pod_script(pod: dict, root: Path) -> str:
    """The pod's container command, run by sh here with the claim's directory in place of /data."""
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    env[DIR_ENV] = str(root / env[DIR_ENV].removeprefix(MOUNT + "/"))
    proc = subprocess.run(container["command"], env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, check=True, timeout=60)
    return proc.stdout


def test_the_pod_mounts_the_runs_claim_read_only_where_its_stages_run():
    pod = pull_pod(RUN, "demo-pull-1", "busybox:1.37")
    spec = pod["spec"]
    assert spec["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": True}}]
    container = spec["containers"][0]
    assert container["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]
    assert {"name": DIR_ENV, "value": "/data/runs/demo"} in container["env"]
    assert spec["nodeSelector"] == {"pool": "cpu"} and spec["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    assert spec["restartPolicy"] == "Never"
    assert restricted_violations(spec) == []  # runs in a namespace that enforces restricted


def test_the_runs_directory_is_its_subpath_or_runs_name():
    assert run_dir(RUN) == ("data", "runs/demo")
    assert run_dir({"metadata": {"name": "x"}, "spec": {"storage": {"subPath": "/exp/x/"}}}) == ("sheepdog-data", "exp/x")
    with pytest.raises(PullError, match="leaves the claim"):
        run_dir({"metadata": {"name": "x"}, "spec": {"storage": {"subPath": "../other"}}})


def test_the_pods_output_unpacks_into_the_same_directory(tmp_path):
    claim = tmp_path / "claim"
    files = make_run_dir(claim / "runs" / "demo")
    text = run_pod_script(pull_pod(RUN, "p", "busybox:1.37"), claim)
    got = unpack(decode(text), tmp_path / "copy")
    assert got == sorted(files)
    for rel, data in files.items():
        assert (tmp_path / "copy" / rel).read_bytes() == data, rel


def test_no_models_leaves_the_models_and_checkpoints_on_the_claim(tmp_path):
    claim = tmp_path / "claim"
    files = make_run_dir(claim / "runs" / "demo")
    text = run_pod_script(pull_pod(RUN, "p", "busybox:1.37", MODEL_PATTERNS), claim)
    got = unpack(decode(text), tmp_path / "copy")
    assert got == sorted(f for f in files if "/model/" not in f and "/checkpoints/" not in f)
    assert {e["name"]: e["value"] for e in pull_pod(RUN, "p", "i", MODEL_PATTERNS)["spec"]["containers"][0]["env"]
            }[EXCLUDE_ENV] == "--exclude=./i*/model --exclude=./i*/train/checkpoints"


def test_a_cut_or_garbled_output_is_refused(tmp_path):
    claim = tmp_path / "claim"
    make_run_dir(claim / "runs" / "demo")
    text = run_pod_script(pull_pod(RUN, "p", "busybox:1.37"), claim)
    cut = "".join(text.split())[: len("".join(text.split())) // 2 // 4 * 4]
    with pytest.raises(PullError, match="the archive is incomplete"):
        decode(cut)
    with pytest.raises(PullError, match="not base64"):
        decode("Error from server: container not found")


def test_an_archive_that_leaves_the_destination_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"no"))
    with pytest.raises(PullError, match="refused"):
        unpack(buf.getvalue(), tmp_path / "dest")
    assert not (tmp_path / "escaped.txt").exists()
