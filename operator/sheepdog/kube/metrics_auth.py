"""The operator's /metrics over HTTPS, only for callers the cluster allows to read it.

The series carry every tenant's run names, namespaces and evaluation scores, so the endpoint
answers only a request whose bearer token the API server authenticates (a TokenReview) and
whose user may `get` the non-resource URL /metrics (a SubjectAccessReview): the model of
controller-runtime's secure metrics serving and of kube-rbac-proxy, written here for a
prometheus_client registry. RBAC decides who reads metrics; the chart ships a ClusterRole that
allows exactly that (`<release>-metrics-reader`) and binds it to the subjects it is given.

    no Authorization header, not a bearer token, token not authenticated   -> 401
    authenticated, `get /metrics` not allowed                               -> 403
    the reviews themselves failed (API server unreachable, refused)         -> 503
    allowed                                                                 -> 200, the exposition

Decisions are cached per token for `cache_seconds` (default 60): a Prometheus scraping every
15-30 s costs the API server two small POSTs a minute, and a revoked binding stops working
within that time. Tokens are kept only as SHA-256 digests.

TLS: the certificate and key come from files (`tls.crt`, `tls.key` in --metrics-cert-dir: a
kubernetes.io/tls Secret mounted as a volume, as cert-manager writes it or as the chart
generates it). They are re-read when their modification time changes, so a renewed Secret is
served without a restart (the kubelet updates a mounted Secret in place). There is no
self-signed fallback: the operator image carries no X.509 tooling, and a certificate whose CA
nobody holds could only be scraped with verification off.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

log = logging.getLogger("sheepdog.metrics")

METRICS_PATH = "/metrics"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

# (method, path, body) -> the response object; sheepdog.kube.client.Kube.request in the operator.
ApiRequest = Callable[[str, str, Any], dict]


@dataclass(frozen=True)
class Decision:
    status: int  # 200, 401, 403 or 503
    reason: str  # for the response body and the log: never the token
    user: str = ""


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an `Authorization: Bearer <token>` header; None for anything else (absent,
    another scheme, empty)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def token_review(token: str) -> dict:
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}


def subject_access_review(user_info: dict, path: str = METRICS_PATH, verb: str = "get") -> dict:
    """The SubjectAccessReview of `verb` on the non-resource URL `path` for an authenticated
    user (TokenReview's status.user: username, uid, groups, extra)."""
    spec: dict[str, Any] = {"user": user_info.get("username", ""), "nonResourceAttributes": {"path": path, "verb": verb}}
    if user_info.get("uid"):
        spec["uid"] = user_info["uid"]
    if user_info.get("groups"):
        spec["groups"] = list(user_info["groups"])
    if user_info.get("extra"):
        spec["extra"] = {k: list(v) for k, v in user_info["extra"].items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


def decide(token: Optional[str], api: ApiRequest, path: str = METRICS_PATH) -> Decision:
    """Authenticate the token and authorize `get path` through the API server."""
    if token is None:
        return Decision(401, "a bearer token is required")
    try:
        tr = api("POST", "/apis/authentication.k8s.io/v1/tokenreviews", token_review(token))
    except Exception as exc:  # noqa: BLE001 - any failure of the review is "cannot tell", not "no"
        return Decision(503, f"TokenReview failed: {type(exc).__name__}: {exc}")
    st = tr.get("status") or {}
    if not st.get("authenticated"):
        return Decision(401, "token not authenticated" + (f": {st['error']}" if st.get("error") else ""))
    user_info = st.get("user") or {}
    user = user_info.get("username", "")
    try:
        sar = api("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", subject_access_review(user_info, path))
    except Exception as exc:  # noqa: BLE001
        return Decision(503, f"SubjectAccessReview failed: {type(exc).__name__}: {exc}", user)
    sst = sar.get("status") or {}
    if sst.get("allowed") and not sst.get("denied"):
        return Decision(200, "allowed", user)
    why = sst.get("reason") or sst.get("evaluationError") or ""
    return Decision(403, f'{user} may not get {path}' + (f": {why}" if why else ""), user)


class Authorizer:
    """`decide` with a per-token cache (see the module docstring). A 503 (the reviews failed)
    is never cached: the next scrape asks again."""

    def __init__(self, api: ApiRequest, cache_seconds: float = 60.0, max_entries: int = 1024,
                 clock: Callable[[], float] = time.monotonic):
        self.api = api
        self.cache_seconds = cache_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._cache: dict[str, tuple[float, Decision]] = {}
        self._lock = threading.Lock()

    def __call__(self, authorization: Optional[str]) -> Decision:
        token = bearer_token(authorization)
        if token is None:
            return decide(None, self.api)
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        decision = decide(token, self.api)
        if decision.status != 503 and self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= self.max_entries:  # expired first, then the oldest
                    for k in [k for k, (exp, _) in self._cache.items() if exp <= now] or [next(iter(self._cache))]:
                        del self._cache[k]
                self._cache[key] = (now + self.cache_seconds, decision)
        return decision


class ReloadingTLS:
    """A server SSLContext from cert_dir/tls.crt and tls.key, rebuilt when either file changes."""

    def __init__(self, cert_dir: str | os.PathLike):
        self.cert = Path(cert_dir) / CERT_FILE
        self.key = Path(cert_dir) / KEY_FILE
        self._lock = threading.Lock()
        self._stamp: Optional[tuple] = None
        self._context: Optional[ssl.SSLContext] = None
        self.context()  # fail at start, with the file's name, not at the first scrape

    def _files_stamp(self) -> tuple:
        try:
            return tuple((p.stat().st_mtime_ns, p.stat().st_size, p.stat().st_ino) for p in (self.cert, self.key))
        except OSError as exc:
            raise FileNotFoundError(f"metrics TLS: {exc.filename}: {exc.strerror}") from None

    def context(self) -> ssl.SSLContext:
        stamp = self._files_stamp()
        with self._lock:
            if self._context is None or stamp != self._stamp:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                try:
                    ctx.load_cert_chain(self.cert, self.key)
                except (ssl.SSLError, OSError) as exc:
                    if self._context is None:
                        raise ValueError(f"metrics TLS: cannot load {self.cert} and {self.key}: {exc}") from None
                    # a Secret caught between its two files' updates: keep serving the old pair
                    log.warning("metrics TLS: keeping the previous certificate: %s", exc)
                    return self._context
                if self._context is not None:
                    log.info("metrics TLS: certificate %s reloaded", self.cert)
                self._context, self._stamp = ctx, stamp
            return self._context


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "MetricsServer"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path != METRICS_PATH:
            return self._send(404, b"not found\n")
        authorize = self.server.authorize
        if authorize is not None:
            decision = authorize(self.headers.get("Authorization"))
            if decision.status != 200:
                # DEBUG: anything on the network can knock; the caller gets the reason in the body
                log.debug("metrics: %d for %s: %s", decision.status, self.client_address[0], decision.reason)
                extra = {"WWW-Authenticate": 'Bearer realm="sheepdog-metrics"'} if decision.status == 401 else {}
                return self._send(decision.status, f"{decision.reason}\n".encode(), extra)
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, encoder(self.server.registry), {"Content-Type": content_type})

    def _send(self, code: int, body: bytes, headers: Optional[dict[str, str]] = None) -> None:
        self.send_response(code)
        for k, v in {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - every scrape: not logged
        pass


class MetricsServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """/metrics of `registry`: HTTPS when `tls` is given, checked by `authorize` when given.
    The TLS handshake happens in the request's own thread (a slow or silent client holds up
    nobody), each connection under a timeout."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], registry: Any, tls: Optional[ReloadingTLS] = None,
                 authorize: Optional[Callable[[Optional[str]], Decision]] = None, timeout: float = 30.0):
        self.registry = registry
        self.tls = tls
        self.authorize = authorize
        self.connection_timeout = timeout
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.connection_timeout)
        if self.tls is not None:
            try:
                request = self.tls.context().wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("metrics: TLS handshake with %s failed: %s", client_address[0], exc)
                return
        try:
            super().finish_request(request, client_address)
        finally:
            if self.tls is not None:
                try:
                    request.close()
                except OSError:
                    pass

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> "MetricsServer":
        threading.Thread(target=self.serve_forever, name="metrics", daemon=True).start()
        return self


def serve_metrics(registry: Any, address: str, port: int, cert_dir: Optional[str], api: Optional[ApiRequest],
                  cache_seconds: float = 60.0) -> MetricsServer:
    """Start /metrics: HTTPS with authentication and authorization when `cert_dir` is given
    (then `api` must be), plain HTTP for anyone otherwise."""
    if cert_dir is None:
        return MetricsServer((address, port), registry).start()
    if api is None:
        raise ValueError("secure metrics need the API server (TokenReview, SubjectAccessReview)")
    return MetricsServer((address, port), registry, tls=ReloadingTLS(cert_dir),
                         authorize=Authorizer(api, cache_seconds=cache_seconds)).start()
