"""A SelfAlignmentRun end to end in containers: the chart's operator (operator image) on the real
node creates the stage Jobs, whose pods run the real stage programs on the tiny model in the CPU
worker image on the real node (containerd, runc), with the run's storage a real claim (a
hostPath PersistentVolume the node mounts: tests/chart/real_run.py). Nothing of the developer's
venv runs a stage: what users deploy is what runs.

Asserts: the run Succeeded; every stage Job's one pod ran on the real node, in a container of
the worker image (its imageID is the archive's manifest digest), as the image's non-root user
(its files on the volume belong to that uid), and exited 0; every stage record in the status
names that node and that imageID (provenance, docs/operator.md); the operator pod is Ready in
the operator image; its metrics, through its Service, show the run's Jobs and its end.

The run is tests/operator/test_end_to_end.py's one-iteration run (M_0's evaluate, then
synthesize, curate, train, evaluate on the tiny model with tiny data, engine transformers).
bulk (make test-all): the CPU worker image's cold build alone is about 18 minutes and its
archive several GB; measured figures in docs/testing.md.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.chart import real_run
from tests.chart.e2e import RESTRICTED, create_namespace, delete_namespace, installed_release, unique, wait_phase
from tests.chart.test_real_node_install import print_operator_logs, ready
from tests.cluster import realnode
from tests.operator.conftest import metric, metric_samples
from tests.operator.test_end_to_end import STAGES, e2e_manifest, tiny_model  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.model, pytest.mark.slow, pytest.mark.bulk,
              pytest.mark.timeout(4800)]

RUN = "real"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """(operator archive, worker archive, keep it): the operator's kept in the image cache, the
    worker's in a temporary directory (deleted once imported) unless
    SHEEPDOG_WORKER_ARCHIVE_DIR names one to keep it in (real_run.py)."""
    if os.geteuid() != 0:
        pytest.skip("the real node and buildah's storage need root")
    missing = [t for t in ("buildah", "debootstrap") if not shutil.which(t)]
    if missing:
        pytest.fail(f"needs {' '.join(missing)}: run scripts/setup-debian", pytrace=False)
    operator = real_run.build_image("operator", real_run.IMAGE_CACHE)
    tmp = tmp_path_factory.mktemp("worker-image")
    out, keep = real_run.worker_archive_dir(tmp)
    worker = real_run.build_image("worker-cpu", out)
    yield operator, worker, keep
    shutil.rmtree(tmp, ignore_errors=True)


def test_a_run_succeeds_in_worker_containers_on_the_real_node(cluster, tmp_path, images, tiny_model):  # noqa: F811
    operator_archive, worker_archive, keep = images
    op_digest, _ = real_run.archive_facts(operator_archive)
    w_digest, w_user = real_run.archive_facts(worker_archive)
    w_uid, _, w_gid = w_user.partition(":")
    worker_id = f"{real_run.WORKER_REPOSITORY}@{w_digest}"
    claim = real_run.fill_claim(tmp_path / "volume", w_user, model=Path(tiny_model).resolve())
    timings: dict[str, float] = {}
    with real_run.real_node_up(cluster, [operator_archive, worker_archive], timings):
        if not keep:
            worker_archive.unlink()  # several GB, in containerd's store now
        t1 = time.monotonic()
        with installed_release(cluster, tmp_path, "sdrun", real_run.chart_values(replicas=1)) as rel:
            timings["helm install --wait"] = time.monotonic() - t1
            selector = ",".join(f"{k}={v}" for k, v in
                                rel.get("Deployment")["spec"]["selector"]["matchLabels"].items())
            ns = create_namespace(cluster, unique("realrun"), RESTRICTED)
            try:
                for obj in real_run.storage_objects(ns, claim):
                    cluster.apply(obj)
                cluster.wait_for("the run's claim Bound", lambda: cluster.get_json(
                    "pvc", real_run.CLAIM, "-n", ns).get("status", {}).get("phase") == "Bound", timeout=60)
                t2 = time.monotonic()
                cluster.apply(real_run.on_real_node(e2e_manifest(RUN, ns, dict(realnode.NODE_SELECTOR))))
                status = wait_phase(cluster, ns, RUN, ("Succeeded", "Failed"), timeout=3000)
                timings["run applied -> " + status["phase"]] = time.monotonic() - t2
                check_run(cluster, rel, ns, selector, status, claim, worker_id, w_uid, w_gid,
                          f"{real_run.OPERATOR_REPOSITORY}@{op_digest}")
            except BaseException:
                real_run.print_stage_logs(cluster, ns, RUN)
                print_operator_logs(cluster, rel.namespace, selector)
                raise
            finally:
                delete_namespace(cluster, ns)


def check_run(cluster, rel, ns, selector, status, claim, worker_id, uid, gid, operator_id) -> None:
    assert status["phase"] == "Succeeded", status
    # The stage Jobs' pods: one per Job (no retry), on the real node, in the worker image.
    jobs = cluster.get_json("jobs", "-n", ns, "-l", f"sheepdog.dev/run={RUN}")["items"]
    expected = [f"{RUN}-i0-evaluate"] + [f"{RUN}-i1-{s}" for s in STAGES]
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted(expected)
    pods = real_run.run_pods(cluster, ns, RUN)
    assert len(pods) == len(jobs), [p["metadata"]["name"] for p in pods]
    for p in pods:
        spec, st = p["spec"], p["status"]
        assert spec["nodeName"] == realnode.NODE_NAME, p["metadata"]["name"]
        assert st["phase"] == "Succeeded", st
        (cs,) = st["containerStatuses"]
        assert cs["imageID"] == worker_id, cs
        assert cs["state"]["terminated"]["exitCode"] == 0, cs
        # the image's non-root user, as the pod runs it
        assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    # ... and what the stages wrote on the claim is that user's
    model = claim / "runs" / RUN / "i1" / "model"
    assert (model / "config.json").is_file(), sorted(p.name for p in model.parent.iterdir())
    assert (model / "config.json").stat().st_uid == int(uid)
    for stage in STAGES:
        assert (claim / "runs" / RUN / "i1" / stage / "_SUCCESS").is_file(), stage

    # Provenance: every stage record names the node and the image its pod ran with.
    records = [(r["iteration"], s, rec) for r in status["iterations"] for s, rec in r["stages"].items()]
    assert sorted((i, s) for i, s, _ in records) == sorted([(0, "evaluate")] + [(1, s) for s in STAGES])
    for i, s, rec in records:
        assert rec["phase"] == "Succeeded" and rec["attempts"] == 1, (i, s, rec)
        assert (rec.get("node"), rec.get("imageID")) == (realnode.NODE_NAME, worker_id), (i, s, rec)

    # The operator: Ready, in the operator image, on the real node.
    (op,) = cluster.get_json("pods", "-n", rel.namespace, "-l", selector)["items"]
    assert ready(op) and op["spec"]["nodeName"] == realnode.NODE_NAME
    assert op["status"]["containerStatuses"][0]["imageID"] == operator_id
    assert op["status"]["containerStatuses"][0]["restartCount"] == 0
    # Its metrics through its Service: the run's Jobs created, its phase Succeeded.
    service = rel.get("Service")["metadata"]["name"]
    metrics = cluster.kubectl("get", "--raw",
                              f"/api/v1/namespaces/{rel.namespace}/services/http:{service}:metrics/proxy/metrics").stdout
    samples = metric_samples(metrics)
    for stage in STAGES:
        created = metric(samples, "sheepdog_jobs_created_total", namespace=ns, stage=stage)
        assert created == [2.0 if stage == "evaluate" else 1.0], (stage, created)
    assert metric(samples, "sheepdog_run_phase", namespace=ns, run=RUN, phase="Succeeded") == [1.0], \
        metric(samples, "sheepdog_run_phase", namespace=ns, run=RUN)
