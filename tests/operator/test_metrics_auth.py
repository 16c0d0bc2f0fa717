"""sheepdog.kube.metrics_auth without a cluster: the reviews it sends and what it makes of their
answers, its cache, and the HTTPS server (real TLS, certificates from files, reloaded when they
change). The API server's real answers are tests/chart/test_metrics_auth.py's."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from sheepdog.kube.metrics_auth import (
    Authorizer,
    Decision,
    MetricsServer,
    ReloadingTLS,
    bearer_token,
    decide,
    serve_metrics,
)
from tests.operator.tls_certs import write_tls_dir

ALICE = {"username": "system:serviceaccount:monitoring:prometheus", "uid": "u-1",
         "groups": ["system:serviceaccounts", "system:authenticated"], "extra": {"authentication.kubernetes.io/pod-name": ["p"]}}


class ApiServer:
    """Answers TokenReviews from a token table and SubjectAccessReviews from a set of allowed
    users, recording every request body."""

    def __init__(self, tokens: dict[str, dict], allowed: set[str], fail: bool = False):
        self.tokens, self.allowed, self.fail = tokens, allowed, fail
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, method: str, path: str, body: dict) -> dict:
        assert method == "POST"
        self.calls.append((path, body))
        if self.fail:
            raise ConnectionError("API server unreachable")
        if path.endswith("/tokenreviews"):
            user = self.tokens.get(body["spec"]["token"])
            return {"status": {"authenticated": True, "user": user}} if user else {
                "status": {"authenticated": False, "error": "invalid bearer token"}}
        assert path == "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        ok = body["spec"]["user"] in self.allowed
        return {"status": {"allowed": ok, **({} if ok else {"reason": "no RBAC policy matched"})}}


@pytest.mark.parametrize("header,token", [
    (None, None), ("", None), ("Basic abc", None), ("Bearer", None), ("Bearer ", None),
    ("Bearer a b", None), ("Bearer tok", "tok"), ("bearer  tok ", "tok"),
])
def test_bearer_token(header, token):
    assert bearer_token(header) == token


def test_decisions_and_the_reviews_sent():
    api = ApiServer({"good": ALICE, "other": {"username": "bob"}}, allowed={ALICE["username"]})
    assert decide(None, api).status == 401 and not api.calls  # no token: the API server is not asked
    d = decide("forged", api)
    assert d.status == 401 and "invalid bearer token" in d.reason
    assert len(api.calls) == 1  # not authenticated: no SubjectAccessReview
    d = decide("other", api)
    assert d == Decision(403, "bob may not get /metrics: no RBAC policy matched", "bob")
    api.calls.clear()
    assert decide("good", api) == Decision(200, "allowed", ALICE["username"])
    (tr_path, tr), (_, sar) = api.calls
    assert tr_path == "/apis/authentication.k8s.io/v1/tokenreviews" and tr["spec"] == {"token": "good"}
    assert sar["kind"] == "SubjectAccessReview"
    assert sar["spec"] == {"user": ALICE["username"], "uid": "u-1", "groups": ALICE["groups"],
                           "extra": ALICE["extra"], "nonResourceAttributes": {"path": "/metrics", "verb": "get"}}


def test_a_failed_review_is_503_and_never_cached():
    api = ApiServer({"good": ALICE}, allowed={ALICE["username"]}, fail=True)
    auth = Authorizer(api)
    assert auth("Bearer good").status == 503
    api.fail = False
    assert auth("Bearer good").status == 200


def test_decisions_are_cached_per_token_until_they_expire():
    now = [1000.0]
    api = ApiServer({"good": ALICE, "other": {"username": "bob"}}, allowed={ALICE["username"]})
    auth = Authorizer(api, cache_seconds=60, clock=lambda: now[0])
    assert auth("Bearer good").status == 200 and auth("Bearer other").status == 403
    n = len(api.calls)
    assert auth("Bearer good").status == 200 and auth("Bearer other").status == 403
    assert len(api.calls) == n  # both answered from the cache
    assert not any("good" in k for k in auth._cache)  # noqa: SLF001 - only digests are kept
    api.allowed = set()  # the binding is removed: refused once the entry expires
    now[0] += 61
    assert auth("Bearer good").status == 403 and len(api.calls) == n + 2


def test_the_cache_is_bounded():
    api = ApiServer({f"t{i}": {"username": f"u{i}"} for i in range(10)}, allowed=set())
    auth = Authorizer(api, max_entries=4)
    for i in range(10):
        auth(f"Bearer t{i}")
    assert len(auth._cache) <= 4  # noqa: SLF001


# ---- the HTTPS server ----------------------------------------------------------------------


@pytest.fixture
def registry():
    r = CollectorRegistry()
    Counter("sheepdog_test_total", "A test series.", registry=r).inc()
    return r


def get(url: str, token: str | None = None, ca: Path | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return r.status, r.read().decode(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


def test_https_metrics_only_for_authorized_tokens(tmp_path, registry):
    tls = write_tls_dir(tmp_path / "tls")
    api = ApiServer({"good": ALICE, "other": {"username": "bob"}}, allowed={ALICE["username"]})
    srv = serve_metrics(registry, "127.0.0.1", 0, str(tls), api)
    try:
        url = f"https://localhost:{srv.port}/metrics"
        code, body, headers = get(url, ca=tls / "ca.crt")
        assert code == 401 and "sheepdog_test_total" not in body
        assert headers["WWW-Authenticate"].startswith("Bearer")
        code, body, _ = get(url, "forged", ca=tls / "ca.crt")
        assert code == 401 and "sheepdog_test_total" not in body
        code, body, _ = get(url, "other", ca=tls / "ca.crt")
        assert code == 403 and "bob may not get /metrics" in body
        code, body, headers = get(url, "good", ca=tls / "ca.crt")
        assert code == 200 and "sheepdog_test_total 1.0" in body
        assert headers["Content-Type"].startswith("text/plain; version=")
        assert get(f"https://localhost:{srv.port}/", "good", ca=tls / "ca.crt")[0] == 404
        # the certificate is verified against the CA (hostname included); plain HTTP is refused
        with pytest.raises(urllib.error.URLError):
            get(url, "good")  # the system's CAs do not know ours
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/metrics", timeout=10).read()
    finally:
        srv.shutdown()
        srv.server_close()


def test_plain_http_without_a_cert_dir(registry):
    srv = serve_metrics(registry, "127.0.0.1", 0, None, None)
    try:
        code, body, _ = get(f"http://127.0.0.1:{srv.port}/metrics")
        assert code == 200 and "sheepdog_test_total 1.0" in body
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path, registry):
    tls = write_tls_dir(tmp_path / "tls")
    srv = MetricsServer(("127.0.0.1", 0), registry, tls=ReloadingTLS(tls)).start()
    try:
        url = f"https://localhost:{srv.port}/metrics"
        assert get(url, ca=tls / "ca.crt")[0] == 200
        old_ca = (tls / "ca.crt").read_bytes()
        write_tls_dir(tls)  # a new CA and certificate in place, as a renewed Secret
        assert (tls / "ca.crt").read_bytes() != old_ca
        assert get(url, ca=tls / "ca.crt")[0] == 200  # the new CA verifies what is served now
        old = tmp_path / "old-ca.crt"
        old.write_bytes(old_ca)
        with pytest.raises(urllib.error.URLError):
            get(url, ca=old)
    finally:
        srv.shutdown()
        srv.server_close()


def test_missing_or_bad_certificate_files_fail_at_start(tmp_path, registry):
    with pytest.raises(FileNotFoundError, match="tls.crt"):
        ReloadingTLS(tmp_path)
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    with pytest.raises(ValueError, match="cannot load"):
        ReloadingTLS(tmp_path)
    with pytest.raises(ValueError, match="need the API server"):
        serve_metrics(registry, "127.0.0.1", 0, str(write_tls_dir(tmp_path / "ok")), None)
