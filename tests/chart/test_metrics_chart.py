"""The chart's secure metrics (metrics.secure, metrics.tls, metrics.readers), rendered by the real
helm: the Deployment's flag and Secret volume, the generated certificate (verified with its CA
for the metrics Service's names), cert-manager's Certificate, a Secret of one's own, the
ServiceMonitor's https endpoint, the two ClusterRoles, and plain HTTP when asked.
The API server's answers are tests/chart/test_metrics_auth.py's."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509

from tests.chart.helm import find, one, render

NS = "sheepdog-system"
SM = {"serviceMonitor": {"enabled": True}}
NAMES = ["sd-sheepdog-metrics", f"sd-sheepdog-metrics.{NS}", f"sd-sheepdog-metrics.{NS}.svc",
         f"sd-sheepdog-metrics.{NS}.svc.cluster.local"]


def container(docs):
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def tls_volume(docs):
    vols = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    return next((v for v in vols if v["name"] == "metrics-tls"), None)


def test_secure_by_default_with_a_generated_certificate():
    docs = render(SM)
    c = container(docs)
    assert "--metrics-cert-dir=/etc/sheepdog/metrics-tls" in c["args"]
    assert {"name": "metrics-tls", "mountPath": "/etc/sheepdog/metrics-tls", "readOnly": True} in c["volumeMounts"]
    assert tls_volume(docs)["secret"]["secretName"] == "sd-sheepdog-metrics-tls"
    secret = one(docs, "Secret", "sd-sheepdog-metrics-tls")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert.verify_directly_issued_by(ca)  # raises unless the CA signed it
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == NAMES
    days = (cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).days
    assert 1090 <= days <= 1095
    assert b"PRIVATE KEY" in data["tls.key"]


def test_the_service_monitor_scrapes_https_with_a_token_and_the_ca():
    (ep,) = one(render(SM), "ServiceMonitor")["spec"]["endpoints"]
    assert ep["scheme"] == "https"
    assert ep["bearerTokenFile"] == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert ep["tlsConfig"] == {"serverName": f"sd-sheepdog-metrics.{NS}.svc",
                               "ca": {"secret": {"name": "sd-sheepdog-metrics-tls", "key": "ca.crt"}}}
    own = {"insecureSkipVerify": False, "ca": {"configMap": {"name": "ca", "key": "ca.crt"}}}
    (ep,) = one(render({**SM, "serviceMonitor": {"enabled": True, "tlsConfig": own}}), "ServiceMonitor")["spec"]["endpoints"]
    assert ep["tlsConfig"] == own


def test_the_roles_and_the_readers_binding():
    readers = [{"kind": "ServiceAccount", "name": "prom", "namespace": "monitoring"}, {"kind": "Group", "name": "sre"}]
    docs = render({"metrics": {"readers": readers}})
    reader = one(docs, "ClusterRole", "sd-sheepdog-metrics-reader")
    assert reader["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    binding = one(docs, "ClusterRoleBinding", "sd-sheepdog-metrics-reader")
    assert binding["roleRef"]["name"] == "sd-sheepdog-metrics-reader"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prom", "namespace": "monitoring"},
                                   {"kind": "Group", "name": "sre", "apiGroup": "rbac.authorization.k8s.io"}]
    auth = one(docs, "ClusterRole", "sd-sheepdog-metrics-auth")
    assert auth["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]
    auth_binding = one(docs, "ClusterRoleBinding", "sd-sheepdog-metrics-auth")
    assert auth_binding["subjects"] == [{"kind": "ServiceAccount", "name": "sd-sheepdog", "namespace": NS}]
    # no readers: the role exists, nobody is bound to it by the chart
    assert not find(render(), "ClusterRoleBinding", "sd-sheepdog-metrics-reader")


def test_cert_manager_or_an_own_secret_instead():
    docs = render({"metrics": {"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}}})
    assert not find(docs, "Secret")
    cert = one(docs, "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["secretName"] == "sd-sheepdog-metrics-tls" and cert["spec"]["dnsNames"] == NAMES
    assert cert["spec"]["issuerRef"] == {"name": "ca", "kind": "ClusterIssuer"}
    assert tls_volume(docs)["secret"]["secretName"] == "sd-sheepdog-metrics-tls"
    docs = render({**SM, "metrics": {"tls": {"secretName": "my-metrics-cert"}}})
    assert not find(docs, "Secret") and not find(docs, "Certificate")
    assert tls_volume(docs)["secret"]["secretName"] == "my-metrics-cert"
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["tlsConfig"]["ca"]["secret"]["name"] == "my-metrics-cert"


def test_cert_manager_needs_an_issuer():
    from tests.chart.helm import template

    res = template({"metrics": {"tls": {"certManager": {"enabled": True}}}}, check=False)
    assert res.returncode != 0 and "needs metrics.tls.certManager.issuerRef.name" in res.stderr


def test_plain_http_when_asked():
    docs = render({**SM, "metrics": {"secure": False}})
    assert not any(a.startswith("--metrics-cert-dir") for a in container(docs)["args"])
    assert tls_volume(docs) is None and not find(docs, "Secret")
    assert not [r for r in find(docs, "ClusterRole") if "metrics" in r["metadata"]["name"]]
    (ep,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert "scheme" not in ep and "tlsConfig" not in ep and "bearerTokenFile" not in ep


@pytest.mark.parametrize("bad", [
    {"metrics": {"readers": [{"kind": "Robot", "name": "x"}]}},
    {"metrics": {"tls": {"validityDays": 0}}},
    {"metrics": {"secure": "yes"}},
])
def test_schema_refuses_bad_values(bad):
    from tests.chart.helm import template

    res = template(bad, check=False)
    assert res.returncode != 0 and "metrics" in res.stderr, res.stderr
