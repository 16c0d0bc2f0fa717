"""The operator's HTTPS /metrics against the real API server: the chart installed (metrics.secure,
its default), the operator run with the Deployment's arguments as the release's ServiceAccount
and serving the certificate of the Secret the chart generated. Who gets the metrics is what the
API server says: TokenReview authenticates the caller's token, SubjectAccessReview checks
`get /metrics`, which the chart's metrics-reader ClusterRole grants to metrics.readers.

The scrape of a real Prometheus with its token is tests/metrics/test_prometheus.py's.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

import yaml

from tests.chart.e2e import (
    RESTRICTED,
    apply_chart_crds,
    can_i,
    cluster_helm,
    create_namespace,
    create_token,
    delete_namespace,
    installed_release,
    run_operator_as,
    unique,
)
from tests.chart.helm import CHART

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured(cluster, tmp_path_factory):
    """Release `sdma`; namespace `mon-*` holds ServiceAccount `prometheus` (in metrics.readers)
    and `stranger` (not)."""
    tmp = tmp_path_factory.mktemp("metrics-auth")
    apply_chart_crds(cluster)
    mon = create_namespace(cluster, unique("mon"), RESTRICTED)
    for sa in ("prometheus", "stranger"):
        cluster.kubectl("create", "serviceaccount", sa, "-n", mon)
    values = {"metrics": {"readers": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": mon}]}}
    try:
        with installed_release(cluster, tmp, "sdma", values) as rel:
            op = run_operator_as(cluster, rel, tmp / "operator.log", namespaces=[])
            op.start()
            try:
                yield {"release": rel, "operator": op, "mon": mon}
            finally:
                op.stop()
    finally:
        delete_namespace(cluster, mon)


def test_the_chart_grants_get_metrics_to_its_readers_only(cluster, secured):
    mon, rel = secured["mon"], secured["release"]
    reader = f"system:serviceaccount:{mon}:prometheus"
    assert cluster.kubectl("auth", "can-i", "get", "/metrics", f"--as={reader}", check=False).stdout.strip() == "yes"
    for other in (f"system:serviceaccount:{mon}:stranger", rel.user):
        assert cluster.kubectl("auth", "can-i", "get", "/metrics", f"--as={other}", check=False).stdout.strip() == "no"
    # what the operator itself needs to ask the API server
    assert can_i(cluster, rel.user, "create", "tokenreviews.authentication.k8s.io")
    assert can_i(cluster, rel.user, "create", "subjectaccessreviews.authorization.k8s.io")


def test_a_scrape_without_a_token_is_refused(secured):
    code, body = secured["operator"].scrape(token=None)
    assert code == 401 and "sheepdog_" not in body, (code, body)


def test_a_token_the_api_server_does_not_know_is_refused(secured):
    code, body = secured["operator"].scrape(token="eyJhbGciOiJSUzI1NiJ9.forged.signature")
    assert code == 401 and "sheepdog_" not in body, (code, body)


def test_an_authenticated_caller_without_the_role_is_forbidden(cluster, secured):
    mon = secured["mon"]
    code, body = secured["operator"].scrape(token=create_token(cluster, mon, "stranger"))
    assert code == 403 and "sheepdog_" not in body, (code, body)
    assert f"system:serviceaccount:{mon}:stranger may not get /metrics" in body


def test_a_reader_gets_the_metrics(cluster, secured):
    code, body = secured["operator"].scrape(token=create_token(cluster, secured["mon"], "prometheus"))
    assert code == 200, (code, body)
    assert "sheepdog_runs{" in body and "sheepdog_reconcile_errors_total{" in body


def test_a_revoked_reader_is_refused_once_the_cache_expires(cluster, secured):
    """A binding removed later: the operator caches a decision for 60 s (metrics_auth), so a
    fresh token of a reader removed now is asked about anew and refused."""
    mon = secured["mon"]
    cluster.kubectl("create", "serviceaccount", "leaver", "-n", mon)
    binding = f"leaver-{mon}"
    cluster.kubectl("create", "clusterrolebinding", binding,
                    f"--clusterrole={secured['release'].name}-sheepdog-metrics-reader",
                    f"--serviceaccount={mon}:leaver")
    try:
        assert secured["operator"].scrape(token=create_token(cluster, mon, "leaver"))[0] == 200
    finally:
        cluster.kubectl("delete", "clusterrolebinding", binding)
    # RBAC's authorizer watches bindings: wait until the API server itself says no
    cluster.wait_for("binding removed", lambda: cluster.kubectl(
        "auth", "can-i", "get", "/metrics", f"--as=system:serviceaccount:{mon}:leaver",
        check=False).stdout.strip() == "no", timeout=30)
    assert secured["operator"].scrape(token=create_token(cluster, mon, "leaver"))[0] == 403


def test_the_certificate_is_the_secrets_and_plain_http_is_refused(secured):
    op = secured["operator"]
    # verified against the chart-generated CA for the metrics Service's DNS name (https_get)
    assert op.metrics_server_name == f"sdma-sheepdog-metrics.{secured['release'].namespace}.svc"
    assert op.scrape(token=None)[0] == 401  # the TLS handshake succeeded with that CA
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(f"https://127.0.0.1:{op.metrics_port}/metrics", timeout=10)  # system CAs
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=10).read()


def test_install_notes_say_how_metrics_are_served(secured):
    notes = secured["release"].install_output.split("NOTES:", 1)[1]
    assert "over HTTPS" in notes and "sdma-sheepdog-metrics-reader" in notes
    assert f"ServiceAccount {secured['mon']}/prometheus" in notes


def test_an_upgrade_keeps_the_generated_certificate(cluster, secured):
    """The chart generates the CA once: `helm upgrade` finds the Secret (lookup) and keeps it,
    so the CA Prometheus was given stays valid."""
    rel = secured["release"]
    name = f"{rel.name}-sheepdog-metrics-tls"
    before = cluster.get_json("secret", name, "-n", rel.namespace)["data"]
    cluster_helm(cluster, "upgrade", rel.name, str(CHART), "--namespace", rel.namespace, "--values", "-",
                 input=yaml.safe_dump(rel.values))
    after = cluster.get_json("secret", name, "-n", rel.namespace)["data"]
    assert after == before
    assert secured["operator"].scrape(token=create_token(cluster, secured["mon"], "prometheus"))[0] == 200
