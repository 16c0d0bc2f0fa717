"""HTTP to the API server on urllib3, with the credentials of a kubeconfig or of the pod's
service account: the one transport of the operator (`Kube`, and Kopf's login) and of the CLI.

Why not the `kubernetes` package: the operator used its ApiClient only to send raw paths, and
importing it loads every generated model class, about 67 MB of the operator's ~87 MB resident
floor (docs/benchmarks.md). This module reads what a kubeconfig can say to a client (server,
CA, client certificate, bearer token or token file, basic auth, exec credential plugins,
tls-server-name, proxy-url, insecure-skip-tls-verify) and refuses the rest with a clear error.

Credentials follow the operator's rule: $KUBECONFIG or --kubeconfig when given, else the
in-cluster service account when running in a pod, else ~/.kube/config.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

import urllib3
import yaml

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Projected service-account tokens rotate (the kubelet rewrites the file): re-read this often.
TOKEN_FILE_REREAD_S = 60.0
# An exec plugin's token is renewed this long before the expiry it states.
EXEC_EXPIRY_MARGIN_S = 60.0


class ConfigError(Exception):
    """The kubeconfig or the service account cannot give credentials (says why)."""


@dataclass
class Response:
    status: int
    reason: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@dataclass
class Credentials:
    """Where the API server is and how to prove who we are. PEM data is kept as text; files are
    read by the TLS layer (client certificates) or at each refresh (tokens)."""

    server: str
    ca_file: Optional[str] = None
    ca_data: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    cert_data: Optional[str] = None
    key_data: Optional[str] = None
    token: Optional[str] = None
    token_file: Optional[str] = None
    username: Optional[str] = None
    password: Optional[str] = None
    exec: Optional[dict] = None
    exec_dir: str = "."
    insecure: bool = False
    tls_server_name: Optional[str] = None
    proxy_url: Optional[str] = None
    namespace: Optional[str] = None
    _exec_until: float = field(default=0.0, repr=False)
    _exec_status: dict = field(default_factory=dict, repr=False)

    def bearer(self) -> tuple[Optional[str], float]:
        """(the bearer token now, the monotonic time until which it may be reused)."""
        now = time.monotonic()
        if self.exec:
            status = self.exec_status()
            return status.get("token"), self._exec_until
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    return f.read().strip() or None, now + TOKEN_FILE_REREAD_S
            except OSError as exc:
                raise ConfigError(f"token file {self.token_file}: {exc}") from None
        return self.token, float("inf")

    def exec_status(self, renew: bool = False) -> dict:
        """The exec plugin's ExecCredential status (token, or client certificate and key), run
        again when it has expired or `renew` (after a 401)."""
        if renew or not self._exec_status or time.monotonic() >= self._exec_until:
            self._exec_status, self._exec_until = run_exec_plugin(self.exec or {}, self.exec_dir)
        return self._exec_status

    def forget_token(self) -> None:
        """After a 401: the next bearer() reads the file or runs the plugin again."""
        self._exec_until = 0.0

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        cert, key = self.cert_data, self.key_data
        if self.exec and not (self.cert_file or cert):
            status = self.exec_status()
            cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        if self.cert_file or cert:
            # ssl loads a certificate chain from files only: PEM data goes through a private
            # temporary directory, removed once loaded
            with tempfile.TemporaryDirectory(prefix="sheepdog-tls-") as tmp:
                cert_file = self.cert_file or _write(tmp, "tls.crt", cert or "")
                key_file = self.key_file or (_write(tmp, "tls.key", key) if key else None)
                ctx.load_cert_chain(cert_file, key_file)
        return ctx

    def connection_info(self) -> Any:
        """The same credentials as Kopf's ConnectionInfo (the operator's @kopf.on.login), with a
        fresh token: Kopf calls its login again after a 401."""
        import kopf

        token, until = self.bearer()
        expiration = None
        if self.exec and until != float("inf"):
            expiration = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                seconds=max(0.0, until - time.monotonic()))
        cert, key = self.cert_data, self.key_data
        if self.exec and not (self.cert_file or cert):
            status = self.exec_status()
            cert, key = status.get("clientCertificateData"), status.get("clientKeyData")
        return kopf.ConnectionInfo(
            server=self.server, ca_path=self.ca_file, ca_data=self.ca_data, insecure=self.insecure or None,
            certificate_path=self.cert_file, certificate_data=None if self.cert_file else cert,
            private_key_path=self.key_file, private_key_data=None if self.key_file else key,
            username=self.username, password=self.password, token=token, proxy_url=self.proxy_url,
            default_namespace=self.namespace, expiration=expiration,
        )


def _write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _pem(data: Optional[str]) -> Optional[str]:
    """kubeconfig's *-data fields are base64 of PEM."""
    if not data:
        return None
    if data.lstrip().startswith("-----BEGIN "):
        return data
    try:
        return base64.b64decode(data).decode("ascii")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not base64 PEM data: {exc}") from None


def load_credentials(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> Credentials:
    """KUBECONFIG (or --kubeconfig) when set, else the in-cluster service account when in a pod,
    else ~/.kube/config."""
    paths = kubeconfig or os.environ.get("KUBECONFIG")
    if not paths and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster_credentials()
    return kubeconfig_credentials(paths or os.path.expanduser("~/.kube/config"), context)


def in_cluster_credentials(directory: str = SERVICE_ACCOUNT_DIR) -> Credentials:
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token_file = os.path.join(directory, "token")
    if not host or not os.path.exists(token_file):
        raise ConfigError(f"not in a pod with a service account (KUBERNETES_SERVICE_HOST, {token_file})")
    host = f"[{host}]" if ":" in host else host  # an IPv6 service address
    ns_file = os.path.join(directory, "namespace")
    namespace = open(ns_file, encoding="utf-8").read().strip() if os.path.exists(ns_file) else None
    return Credentials(server=f"https://{host}:{port}", ca_file=os.path.join(directory, "ca.crt"),
                       token_file=token_file, namespace=namespace)


def kubeconfig_credentials(paths: str, context: Optional[str] = None) -> Credentials:
    """The credentials of `context` (default: current-context) in the kubeconfig files `paths`
    (os.pathsep-separated, merged as kubectl does: the first file to name an entry wins).
    Relative file names in a file are relative to that file's directory."""
    contexts: dict[str, dict] = {}
    clusters: dict[str, tuple[dict, str]] = {}
    users: dict[str, tuple[dict, str]] = {}
    current = None
    for path in [os.path.expanduser(p) for p in paths.split(os.pathsep) if p.strip()]:
        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"kubeconfig {path}: {exc}") from None
        base = os.path.dirname(os.path.abspath(path))
        current = current or doc.get("current-context")
        for item in doc.get("contexts") or []:
            contexts.setdefault(item.get("name"), item.get("context") or {})
        for item in doc.get("clusters") or []:
            clusters.setdefault(item.get("name"), (item.get("cluster") or {}, base))
        for item in doc.get("users") or []:
            users.setdefault(item.get("name"), (item.get("user") or {}, base))
    name = context or current
    if not name:
        raise ConfigError(f"kubeconfig {paths}: no current-context and no context given")
    if name not in contexts:
        raise ConfigError(f"kubeconfig {paths}: no context {name!r}")
    ctx = contexts[name]
    if ctx.get("cluster") not in clusters:
        raise ConfigError(f"kubeconfig {paths}: context {name!r} names no known cluster")
    cluster, cbase = clusters[ctx["cluster"]]
    user, ubase = users.get(ctx.get("user"), ({}, "."))
    if not cluster.get("server"):
        raise ConfigError(f"kubeconfig {paths}: cluster {ctx['cluster']!r} has no server")
    if user.get("auth-provider"):
        raise ConfigError(f"kubeconfig {paths}: user {ctx.get('user')!r} uses an auth-provider, which "
                          "Kubernetes removed in 1.26; use its exec credential plugin instead")

    def rel(value: Optional[str], base: str) -> Optional[str]:
        return os.path.join(base, os.path.expanduser(value)) if value else None

    return Credentials(
        server=cluster["server"].rstrip("/"),
        ca_file=rel(cluster.get("certificate-authority"), cbase),
        ca_data=_pem(cluster.get("certificate-authority-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        proxy_url=cluster.get("proxy-url"),
        cert_file=rel(user.get("client-certificate"), ubase),
        key_file=rel(user.get("client-key"), ubase),
        cert_data=_pem(user.get("client-certificate-data")),
        key_data=_pem(user.get("client-key-data")),
        token=user.get("token"),
        token_file=rel(user.get("tokenFile"), ubase) if not user.get("token") else None,
        username=user.get("username"), password=user.get("password"),
        exec=user.get("exec"), exec_dir=ubase,
        namespace=ctx.get("namespace"),
    )


def run_exec_plugin(spec: dict, base: str) -> tuple[dict, float]:
    """Run a kubeconfig exec credential plugin (client.authentication.k8s.io): its status and
    the monotonic time until which it holds (forever without an expirationTimestamp)."""
    command = spec.get("command")
    if not command:
        raise ConfigError("kubeconfig exec plugin without a command")
    if os.sep in command and not os.path.isabs(command):
        command = os.path.join(base, command)
    env = dict(os.environ)
    env.update({e["name"]: e["value"] for e in spec.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps({"apiVersion": spec.get("apiVersion"), "kind": "ExecCredential",
                                              "spec": {"interactive": False}})
    try:
        proc = subprocess.run([command, *(spec.get("args") or [])], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        hint = spec.get("installHint") or ""
        raise ConfigError(f"exec plugin {command}: {exc} {hint}".strip()) from None
    if proc.returncode != 0:
        raise ConfigError(f"exec plugin {command} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    try:
        status = (json.loads(proc.stdout) or {}).get("status") or {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"exec plugin {command}: not an ExecCredential: {exc}") from None
    if not status.get("token") and not status.get("clientCertificateData"):
        raise ConfigError(f"exec plugin {command}: its ExecCredential has no token and no client certificate")
    until = float("inf")
    if status.get("expirationTimestamp"):
        expires = datetime.datetime.fromisoformat(status["expirationTimestamp"].replace("Z", "+00:00"))
        left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
        until = time.monotonic() + max(0.0, left - EXEC_EXPIRY_MARGIN_S)
    return status, until


class Transport:
    """Requests to one API server over a pool of `pool_size` connections, each bounded by
    `timeout` seconds (None: no limit, for a followed log). Thread-safe (urllib3's pool is);
    connection errors are retried as urllib3 does by default, nothing is retried on an answer
    except once after a 401 with a renewed token. A client certificate (from the kubeconfig or
    an exec plugin) is loaded once, here: a new one needs a new Transport."""

    def __init__(self, credentials: Credentials, pool_size: int = 32, timeout: Optional[float] = 30.0,
                 user_agent: str = "sheepdog"):
        self.credentials = credentials
        self.timeout = timeout
        self.user_agent = user_agent
        pool: dict[str, Any] = {"maxsize": pool_size}
        if credentials.server.startswith("https:"):
            pool["ssl_context"] = credentials.ssl_context()
            if credentials.tls_server_name:
                pool["server_hostname"] = credentials.tls_server_name
            if credentials.insecure:
                pool["cert_reqs"] = "CERT_NONE"
        self.pool = (urllib3.ProxyManager(credentials.proxy_url, **pool) if credentials.proxy_url
                     else urllib3.PoolManager(**pool))
        self._lock = threading.Lock()
        self._token: Optional[str] = None
        self._until = 0.0

    def _authorization(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() >= self._until:
                self._token, self._until = self.credentials.bearer()
            token = self._token
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.credentials.username and self.credentials.password:
            return urllib3.make_headers(basic_auth=f"{self.credentials.username}:{self.credentials.password}")
        return {}

    def request(self, method: str, path: str, query: Optional[list[tuple[str, str]]] = None,
                body: Optional[bytes] = None, headers: Optional[dict[str, str]] = None,
                timeout: Any = "default") -> Response:
        url = self.credentials.server + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        limit = self.timeout if timeout == "default" else timeout
        for attempt in (1, 2):
            sent = {"User-Agent": self.user_agent, **(headers or {}), **self._authorization()}
            resp = self.pool.request(method, url, body=body, headers=sent, preload_content=True,
                                     timeout=urllib3.Timeout(total=limit), redirect=False)
            if resp.status == 401 and attempt == 1 and (self.credentials.token_file or self.credentials.exec):
                with self._lock:  # a rotated token: read or renew it once
                    self.credentials.forget_token()
                    self._until = 0.0
                continue
            return Response(resp.status, resp.reason or "", resp.data or b"")
        raise AssertionError("unreachable")
