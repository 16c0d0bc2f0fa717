"""A minimal Kubernetes API client over the standard library (TLS client certs or bearer token).

Used by the control plane's readiness checks and by the pod executor; the tests mostly use kubectl.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
import urllib.parse
from typing import Any, Iterator


class ApiError(Exception):
    def __init__(self, status: int, reason: str, body: str):
        super().__init__(f"HTTP {status} {reason}: {body[:500]}")
        self.status = status
        self.reason = reason
        self.body = body


class KubeClient:
    """Talks to one API server as the first (or current) user of a kubeconfig file."""

    def __init__(self, kubeconfig: str, timeout: float = 30.0):
        with open(kubeconfig) as f:
            text = f.read()
        try:  # the control plane writes JSON kubeconfigs: no YAML parser needed for those
            cfg = json.loads(text)
        except ValueError:
            import yaml

            cfg = yaml.safe_load(text)
        base = os.path.dirname(os.path.abspath(kubeconfig))
        ctx_name = cfg.get("current-context")
        ctx = next((c["context"] for c in cfg.get("contexts", []) if c["name"] == ctx_name), None)
        if ctx is None:
            ctx = cfg["contexts"][0]["context"]
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {})
        self._tmp: list[str] = []

        url = urllib.parse.urlsplit(cluster["server"])
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 443
        self.timeout = timeout
        self.ctx = ssl.create_default_context()
        ca = self._file(base, cluster, "certificate-authority")
        if ca:
            self.ctx.load_verify_locations(cafile=ca)
        if cluster.get("insecure-skip-tls-verify"):
            self.ctx.check_hostname = False
            self.ctx.verify_mode = ssl.CERT_NONE
        cert = self._file(base, user, "client-certificate")
        key = self._file(base, user, "client-key")
        if cert and key:
            self.ctx.load_cert_chain(cert, key)
        self.token = user.get("token")
        if not self.token and user.get("tokenFile"):
            with open(os.path.join(base, user["tokenFile"])) as f:
                self.token = f.read().strip()

    def _file(self, base: str, section: dict, key: str) -> str | None:
        if section.get(key):
            return os.path.join(base, section[key])
        data = section.get(key + "-data")
        if not data:
            return None
        fd, path = tempfile.mkstemp(prefix="kube-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(data))
        self._tmp.append(path)
        return path

    def close(self) -> None:
        for p in self._tmp:
            try:
                os.unlink(p)
            except OSError:
                pass
        self._tmp.clear()

    def _conn(self, timeout: float | None = None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.ctx, timeout=timeout or self.timeout
        )

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        if content_type:
            h["Content-Type"] = content_type
        return h

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any:
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        conn = self._conn()
        try:
            conn.request(method, path, body=data, headers=self._headers(content_type if data else None))
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if resp.status >= 400:
            raise ApiError(resp.status, resp.reason, text)
        if raw:
            return text
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def patch(self, path: str, body: Any, kind: str = "merge") -> Any:
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return self.request("PATCH", path, body, content_type=ctype)

    def delete(self, path: str, body: Any = None) -> Any:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str | None = None, timeout_seconds: int = 60) -> Iterator[dict]:
        """Yields watch events ({"type": ..., "object": ...}) until the server closes the stream."""
        sep = "&" if "?" in path else "?"
        q = f"{path}{sep}watch=true&allowWatchBookmarks=true&timeoutSeconds={timeout_seconds}"
        if resource_version:
            q += f"&resourceVersion={resource_version}"
        conn = self._conn(timeout=timeout_seconds + 30)
        try:
            conn.request("GET", q, headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.reason, resp.read().decode("utf-8", "replace"))
            while True:
                line = resp.readline()
                if not line:
                    return
                line = line.strip()
                if line:
                    yield json.loads(line)
        finally:
            conn.close()
