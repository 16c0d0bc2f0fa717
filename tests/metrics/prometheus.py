"""A real Prometheus (Debian's `prometheus` binary) on a free loopback port, with a generated
config: scrape targets (from the chart's ServiceMonitor, see scrape_config_from_service_monitor)
and rule files (the chart's PrometheusRule)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusError(AssertionError):
    pass


def scrape_config_from_service_monitor(
    service_monitor: Mapping[str, Any], service: Mapping[str, Any], target: str, interval: str = "1s",
    files: Optional[Mapping[str, Path]] = None,
) -> dict[str, Any]:
    """What the Prometheus Operator makes of the chart's ServiceMonitor, for one endpoint whose
    address is `target` (the operator runs as a local process, not behind the Service): job =
    the Service's name, the endpoint's path and honorLabels, and the target labels the
    operator adds (namespace, service, endpoint). An HTTPS endpoint's scheme, bearerTokenFile and
    tlsConfig (serverName, the CA from a Secret) become the scrape's scheme, authorization and
    tls_config; `files` says where this machine has what they name: the token file's path in
    Prometheus's pod -> a local file, "secret:<name>/<key>" -> a local file."""
    (ep,) = service_monitor["spec"]["endpoints"]
    files = dict(files or {})

    def local(ref: str) -> str:
        assert ref in files, f"the ServiceMonitor names {ref}: give its local copy in files"
        return str(files[ref])

    extra: dict[str, Any] = {}
    if ep.get("scheme"):
        extra["scheme"] = ep["scheme"]
    if ep.get("bearerTokenFile"):
        extra["authorization"] = {"type": "Bearer", "credentials_file": local(ep["bearerTokenFile"])}
    tls = ep.get("tlsConfig")
    if tls:
        tls_config: dict[str, Any] = {}
        if tls.get("serverName"):
            tls_config["server_name"] = tls["serverName"]
        if tls.get("ca", {}).get("secret"):
            ref = tls["ca"]["secret"]
            tls_config["ca_file"] = local(f"secret:{ref['name']}/{ref['key']}")
        if tls.get("insecureSkipVerify"):
            tls_config["insecure_skip_verify"] = True
        extra["tls_config"] = tls_config
    return {
        "job_name": service["metadata"]["name"],
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "metrics_path": ep.get("path", "/metrics"),
        "honor_labels": bool(ep.get("honorLabels", False)),
        "static_configs": [{
            "targets": [target],
            "labels": {
                "namespace": service["metadata"]["namespace"],
                "service": service["metadata"]["name"],
                "endpoint": ep["port"],
            },
        }],
        **extra,
    }


class Prometheus:
    def __init__(self, workdir: Path, scrape_configs: Sequence[Mapping[str, Any]],
                 rule_files: Sequence[Path] = (), evaluation_interval: str = "1s"):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": evaluation_interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [dict(c) for c in scrape_configs],
        }, sort_keys=False))
        self.log_path = self.workdir / "prometheus.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60) -> "Prometheus":
        exe = shutil.which("prometheus")
        if exe is None:
            raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [exe, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d",
             "--web.enable-lifecycle", "--log.level=info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.3)
        raise PrometheusError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ---- HTTP API ----------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the `data` of a success, PrometheusError (with Prometheus's own
        error type and message) otherwise."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: Optional[float] = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return self.api("query", **params)["result"]

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return self.api("query_range", query=expr, start=start, end=end, step=step)["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]
