"""examples/quickstart.yaml as shipped, end to end in containers: what `make cluster-demo` runs.
The chart's operator (operator image) on the real node creates the stage Jobs, whose pods run
the real stage programs on the tiny model in the CPU worker image on the real node (containerd,
runc), with the run's storage a real claim (a hostPath PersistentVolume the node mounts:
tests/chart/real_run.py). Nothing of the developer's venv runs a stage.

Asserts what the small run in make test asserts (tests/chart/test_real_node_install.py,
real_run.check_run and check_metrics), for both iterations of the quickstart: Succeeded; every
kept stage Job's one pod on the real node, in the worker image (imageID), as the image's
non-root user, exit 0; synthesize on vLLM; every stage record's node and imageID; the operator
pod Ready; its metrics, scraped through its Service, showing the run's transitions.
bulk (make test-all): the full quickstart in containers took 1064 s on the loaded machine
(docs/testing.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chart import real_run
from tests.chart.e2e import RESTRICTED, create_namespace, delete_namespace, installed_release, unique, wait_phase
from tests.chart.test_real_node_install import archives, print_operator_logs, ready  # noqa: F401 (a fixture)
from tests.cluster import realnode
from tests.operator.test_end_to_end import tiny_model  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cluster, pytest.mark.model, pytest.mark.slow, pytest.mark.bulk,
              pytest.mark.timeout(5400)]


def test_the_quickstart_succeeds_in_worker_containers_on_the_real_node(cluster, tmp_path, archives, tiny_model):  # noqa: F811
    operator_archive, worker_archive, keep, facts = archives
    w_digest, w_user = facts["worker"]
    worker_id = f"{real_run.WORKER_REPOSITORY}@{w_digest}"
    manifest = real_run.on_real_node(real_run.quickstart())
    run, iterations = manifest["metadata"]["name"], manifest["spec"]["iterations"]
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
            fullname = rel.get("Deployment")["metadata"]["name"]
            ns = create_namespace(cluster, unique("realrun"), RESTRICTED)
            try:
                for obj in real_run.storage_objects(ns, claim):
                    cluster.apply(obj)
                t2 = time.monotonic()
                cluster.apply(manifest, namespace=ns)
                status = wait_phase(cluster, ns, run, ("Succeeded", "Failed"), timeout=4800)
                timings["run applied -> " + status["phase"]] = time.monotonic() - t2
                real_run.check_run(cluster, ns, run, iterations, status, claim, worker_id, w_user)
                (op,) = cluster.get_json("pods", "-n", rel.namespace, "-l", selector)["items"]
                assert ready(op) and op["spec"]["nodeName"] == realnode.NODE_NAME
                (cs,) = op["status"]["containerStatuses"]
                assert (cs["imageID"], cs["restartCount"]) == \
                    (f"{real_run.OPERATOR_REPOSITORY}@{facts['operator'][0]}", 0), cs
                texts = real_run.scrape_metrics(cluster, rel.namespace, rel.get("Service")["metadata"]["name"],
                                                real_run.metrics_ca(cluster, rel.namespace, fullname),
                                                real_run.metrics_reader_token(cluster, rel.namespace, fullname))
                real_run.check_metrics(texts, ns, run, iterations)
            except BaseException:
                real_run.print_stage_logs(cluster, ns, run)
                print_operator_logs(cluster, rel.namespace, selector)
                raise
            finally:
                delete_namespace(cluster, ns)
                cluster.kubectl("delete", "clusterrolebinding", f"{rel.namespace}-scraper", "--ignore-not-found",
                                check=False)
