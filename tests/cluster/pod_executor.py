"""A tiny kubelet stand-in: runs the pods bound to its own Node as local processes.

There is no container runtime on the test machines. End-to-end tests that need a stage to run
for real register a node with this executor and steer pods to it (nodeSelector
kubernetes.io/hostname=<node>, and a toleration of the node's taint
`sheepdog.dev/pod-executor=true:NoSchedule`, which keeps every other test's pods off it: a
CPU-only stage pod of a kwok test once landed here and really ran); kwok leaves this node
alone (it carries no kwok annotation).

    python -m tests.cluster.pod_executor --kubeconfig K --node NAME --volume-root DIR \\
        [--label k=v ...] [--capacity nvidia.com/gpu=8 ...] [--clean-env]

What a pod gets (single container; others are ignored and reported as never started):
- command + args run as a local process (an image's entrypoint is unknown: command is required);
- env: the executor's own environment (only PATH/HOME/LANG with --clean-env), then the pod's
  `value` entries, `valueFrom.fieldRef` (metadata.name/namespace/uid, spec.nodeName,
  spec.serviceAccountName, metadata.annotations['..'] e.g. batch.kubernetes.io/job-completion-index,
  metadata.labels['..']), `secretKeyRef` / `configMapKeyRef` (read through the API) and envFrom;
- volumes: persistentVolumeClaim -> <volume-root>/<claimName>, emptyDir -> a temp dir,
  hostPath -> its path, configMap/secret -> a temp dir with their keys as files;
- volumeMounts: an arg or env value that starts with a mountPath (or `--opt=<mountPath>...`) is
  rewritten to the local directory; workingDir likewise (default: a per-pod temp dir); an arg or
  env value that is a JSON object or array (starts with `{`/`[` and parses) has every string
  value that is a path under a mount rewritten the same way, and so has a mounted ConfigMap's
  file that is one (the stage programs' config file, kube/stage_config_map.py);
- terminationMessagePath (default /dev/termination-log) is mapped to a local file (under a mount
  when the path is, else a per-pod file) and rewritten in args/env the same way; after exit its
  contents become the termination message; with terminationMessagePolicy FallbackToLogsOnError
  an empty message on failure falls back to the last 4 KB of output;
- DNS: every pod here runs on this machine, so a pod with `subdomain` (the headless Service of
  an Indexed Job, e.g. a multi-node train's rendezvous) finds its peers at a local address: a
  name `<host>.<subdomain>[.<namespace>[.svc[.cluster.local]]]` in an arg or env value is
  rewritten to 127.0.0.1 (there is no resolver to teach);
- status (Running, then Succeeded/Failed with exit code) is written through pods/status;
- pods with a deletionTimestamp: the process is terminated and the pod deleted;
- logs: an HTTPS endpoint on the node's `daemonEndpoints.kubeletEndpoint` port serves
  `GET /containerLogs/<ns>/<pod>/<container>?tailLines=N&limitBytes=M` from the process'
  output (stdout and stderr together), as a kubelet does, so `kubectl logs` and the API
  server's pods/log proxy reach it (the control plane prefers the node's InternalIP,
  127.0.0.1; --kubelet-preferred-address-types). Its certificate is self-signed and it asks
  for no client certificate: the API server does not verify a kubelet without
  --kubelet-certificate-authority, and only this machine can connect.
restartPolicy OnFailure is treated like Never (the Job controller creates a new pod).
"""

from __future__ import annotations

import argparse
import base64
import http.server
import ssl
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cluster.kube import ApiError, KubeClient  # noqa: E402

log = logging.getLogger("pod_executor")
# Only pods that tolerate it are scheduled here (see the module docstring).
TAINT = {"key": "sheepdog.dev/pod-executor", "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": "sheepdog.dev/pod-executor", "operator": "Exists", "effect": "NoSchedule"}

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
LOCAL_ADDRESS = "127.0.0.1"  # where every pod of this executor is reached
MAX_MESSAGE = 4096
LEASE_SECONDS = 40


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_kv(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"bad {what} {item!r}: want key=value")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _field_path(pod: dict, path: str) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod.get("spec", {}).get("nodeName"),
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName"),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }
    if path in simple:
        return simple[path] or ""
    for prefix, source in (("metadata.annotations", "annotations"), ("metadata.labels", "labels")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return (meta.get(source) or {}).get(path[len(prefix) + 2 : -2], "")
    raise ValueError(f"unsupported fieldRef {path}")


def local_dns_of(subdomain: str | None, namespace: str):
    """A rewrite of strings: names of pods behind `subdomain` (a headless Service) ->
    LOCAL_ADDRESS, in any of their DNS forms; the identity for a pod without a subdomain."""
    if not subdomain:
        return lambda s: s
    suffix = rf"\.{re.escape(subdomain)}(?:\.{re.escape(namespace)}(?:\.svc(?:\.cluster\.local)?)?)?"
    name = re.compile(rf"(?<![\w.-])[a-z0-9](?:[-a-z0-9]*[a-z0-9])?{suffix}(?![\w-]|\.[\w-])")
    return lambda s: name.sub(LOCAL_ADDRESS, s)


class PodRun:
    """One pod's local process."""

    def __init__(self, executor: "PodExecutor", pod: dict):
        self.ex = executor
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.ns}.{self.name}.", dir=executor.work_dir))
        self.proc: subprocess.Popen | None = None
        self.deleting = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.ns}/{self.name}", daemon=True)

    # -- preparing the process -----------------------------------------------------------------
    def _volumes(self) -> dict[str, Path]:
        vols: dict[str, Path] = {}
        self.config_dirs: list[Path] = []
        for v in self.pod["spec"].get("volumes") or []:
            name = v["name"]
            if "persistentVolumeClaim" in v:
                path = self.ex.volume_root / v["persistentVolumeClaim"]["claimName"]
            elif "emptyDir" in v:
                path = self.dir / "volumes" / name
            elif "hostPath" in v:
                path = Path(v["hostPath"]["path"])
            elif "configMap" in v or "secret" in v:
                path = self.dir / "volumes" / name
                path.mkdir(parents=True, exist_ok=True)
                self._materialize(v, path)
                if "configMap" in v:
                    self.config_dirs.append(path)
            else:
                log.warning("%s/%s: volume %s of an unsupported type is an empty dir", self.ns, self.name, name)
                path = self.dir / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            vols[name] = path
        return vols

    def _materialize(self, v: dict, path: Path) -> None:
        if "configMap" in v:
            src = v["configMap"]
            obj = self.ex.client.get(f"/api/v1/namespaces/{self.ns}/configmaps/{src['name']}")
            data = {k: s.encode() for k, s in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(s) for k, s in (obj.get("binaryData") or {}).items()})
        else:
            src = v["secret"]
            obj = self.ex.client.get(f"/api/v1/namespaces/{self.ns}/secrets/{src['secretName']}")
            data = {k: base64.b64decode(s) for k, s in (obj.get("data") or {}).items()}
        items = src.get("items")
        pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, rel in pairs:
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data[key])

    def _read_key(self, kind: str, ref: dict) -> str | None:
        try:
            obj = self.ex.client.get(f"/api/v1/namespaces/{self.ns}/{kind}/{ref['name']}")
        except ApiError as e:
            if e.status == 404 and ref.get("optional"):
                return None
            raise
        if kind == "secrets":
            raw = (obj.get("data") or {}).get(ref["key"])
            value = base64.b64decode(raw).decode() if raw is not None else None
        else:
            value = (obj.get("data") or {}).get(ref["key"])
        if value is None and not ref.get("optional"):
            raise KeyError(f"key {ref['key']} not in {kind[:-1]} {ref['name']}")
        return value

    def _env(self, container: dict) -> dict[str, str]:
        if self.ex.clean_env:
            env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL") if k in os.environ}
        else:
            env = dict(os.environ)
            env.pop("KUBECONFIG", None)
        env["HOME"] = str(self.dir)
        env["HOSTNAME"] = self.name
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                obj = self.ex.client.get(f"/api/v1/namespaces/{self.ns}/configmaps/{src['configMapRef']['name']}")
                env.update({prefix + k: v for k, v in (obj.get("data") or {}).items()})
            elif "secretRef" in src:
                obj = self.ex.client.get(f"/api/v1/namespaces/{self.ns}/secrets/{src['secretRef']['name']}")
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()})
        for e in container.get("env") or []:
            name = e["name"]
            if "valueFrom" not in e:
                env[name] = self._expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[name] = _field_path(self.pod, vf["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in vf:
                v = self._read_key("secrets", vf["secretKeyRef"])
                if v is not None:
                    env[name] = v
            elif "configMapKeyRef" in vf:
                v = self._read_key("configmaps", vf["configMapKeyRef"])
                if v is not None:
                    env[name] = v
            else:
                raise ValueError(f"unsupported valueFrom for env {name}: {sorted(vf)}")
        return env

    @staticmethod
    def _expand(value: str, env: dict[str, str]) -> str:
        # Kubernetes' $(VAR) expansion ($$ escapes).
        out, i = [], 0
        while i < len(value):
            if value.startswith("$$", i):
                out.append("$")
                i += 2
            elif value.startswith("$(", i) and ")" in value[i:]:
                j = value.index(")", i)
                var = value[i + 2 : j]
                out.append(env[var] if var in env else value[i : j + 1])
                i = j + 1
            else:
                out.append(value[i])
                i += 1
        return "".join(out)

    def _mapper(self, mounts: list[tuple[str, Path]]):
        mounts = sorted(mounts, key=lambda m: len(m[0]), reverse=True)

        def map_path(s: str) -> str:
            for mount, local in mounts:
                m = mount.rstrip("/") or "/"
                if s == m or s.startswith(m + "/"):
                    return str(local) + s[len(m):]
            return s

        def map_json(value: Any) -> Any:
            if isinstance(value, str):
                return map_path(value)
            if isinstance(value, list):
                return [map_json(v) for v in value]
            if isinstance(value, dict):
                return {k: map_json(v) for k, v in value.items()}
            return value

        def map_string(s: str) -> str:
            mapped = map_path(s)
            if mapped != s:
                return mapped
            if s[:1] in ("{", "["):
                # A JSON document in one argument (e.g. a stage's `--config '{"root": "/data", ...}'`):
                # every string value that is a path under a mount is mapped; keys and other values
                # stay, and an argument that is not valid JSON is left alone.
                try:
                    doc = json.loads(s)
                except ValueError:
                    return s
                mapped_doc = map_json(doc)
                return s if mapped_doc == doc else json.dumps(mapped_doc, separators=(",", ":"))
            if s.startswith("-") and "=" in s:
                opt, val = s.split("=", 1)
                mv = map_path(val)
                if mv != val:
                    return f"{opt}={mv}"
            return s

        return map_path, map_string

    # -- the run -------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._run_inner()
        except Exception as e:  # noqa: BLE001 - reported on the pod
            log.exception("%s/%s: failed to run", self.ns, self.name)
            if not self.deleting.is_set():
                self._report_terminated(128, "StartError", f"pod executor: {e}"[:MAX_MESSAGE], now())
        finally:
            self.done.set()

    def _run_inner(self) -> None:
        spec = self.pod["spec"]
        container = spec["containers"][0]
        argv = list(container.get("command") or [])
        if not argv:
            raise ValueError("the pod executor needs an explicit container command (no images here)")
        vols = self._volumes()
        mounts: list[tuple[str, Path]] = []
        for vm in container.get("volumeMounts") or []:
            local = vols.get(vm["name"])
            if local is None:
                raise ValueError(f"volumeMount {vm['name']} names no volume")
            if vm.get("subPath"):
                local = local / vm["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            mounts.append((vm["mountPath"], local))
        map_path, map_string = self._mapper(mounts)
        for directory in self.config_dirs:  # this pod's own copies: rewritten like an arg
            for f in directory.rglob("*"):
                if f.is_file():
                    text = f.read_text(errors="replace")
                    mapped = map_string(text)
                    if mapped != text:
                        f.write_text(mapped)
        tpath = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        term_file = Path(map_path(tpath))
        if str(term_file) == tpath:  # not under a mount: a per-pod file
            term_file = self.dir / "termination-log"
            mounts.append((tpath, term_file))
            map_path, map_string = self._mapper(mounts)
        term_file.parent.mkdir(parents=True, exist_ok=True)
        term_file.write_text("")

        env = self._env(container)
        local_dns = local_dns_of(self.pod["spec"].get("subdomain"), self.ns)
        env = {k: local_dns(map_string(v)) for k, v in env.items()}
        # No images here: the image's `python` is stood in for by this executor's own
        # interpreter (the project's venv), whatever PATH the executor was started with.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        argv += list(container.get("args") or [])
        argv = [local_dns(map_string(self._expand(a, env))) for a in argv]
        wd = container.get("workingDir")
        cwd = Path(map_path(wd)) if wd else self.dir / "work"
        cwd.mkdir(parents=True, exist_ok=True)
        out_path = self.dir / "output.log"

        started = now()
        if self.deleting.is_set():
            return
        log.info("%s/%s: running %s in %s", self.ns, self.name, argv, cwd)
        with open(out_path, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=cwd, env=env, start_new_session=True,
            )
            self._report_running(started)
            code = self.proc.wait()
        finished = now()
        if self.deleting.is_set():
            return
        if code < 0:  # killed by a signal: report as a shell would
            code = 128 - code
        message = term_file.read_text(errors="replace")[:MAX_MESSAGE] if term_file.exists() else ""
        if not message and code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            with open(out_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - MAX_MESSAGE))
                message = f.read().decode("utf-8", "replace")
        log.info("%s/%s: exited %d", self.ns, self.name, code)
        self._report_terminated(code, "Completed" if code == 0 else "Error", message, finished, started)

    def _container_statuses(self, state: dict, ready: bool) -> list[dict]:
        containers = self.pod["spec"]["containers"]
        out = []
        for i, c in enumerate(containers):
            st = state if i == 0 else {"waiting": {"reason": "NotSupportedByPodExecutor"}}
            out.append({
                "name": c["name"], "image": c.get("image", ""), "imageID": "",
                "ready": ready and i == 0, "started": "running" in st, "restartCount": 0, "state": st,
            })
        return out

    def _patch_status(self, status: dict) -> None:
        path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status"
        body = {"metadata": {"uid": self.uid}, "status": status}
        for attempt in range(20):
            try:
                self.ex.client.patch(path, body, kind="strategic")
                return
            except ApiError as e:
                if e.status in (404, 409, 422):
                    log.warning("%s/%s: status not written: %s", self.ns, self.name, e)
                    return
                err = e
            except OSError as e:  # API server restarting
                err = e
            time.sleep(min(0.2 * (attempt + 1), 3))
        log.error("%s/%s: giving up writing status: %s", self.ns, self.name, err)

    def _report_running(self, started: str) -> None:
        self._patch_status({
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": started,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": started}
                for t in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": self._container_statuses({"running": {"startedAt": started}}, True),
        })

    def _report_terminated(self, code: int, reason: str, message: str, finished: str, started: str | None = None) -> None:
        term = {"exitCode": code, "reason": reason, "startedAt": started or finished, "finishedAt": finished}
        if message:
            term["message"] = message
        self._patch_status({
            "phase": "Succeeded" if code == 0 else "Failed",
            "startTime": started or finished,
            "conditions": [
                {"type": t, "status": "False", "reason": "PodCompleted" if code == 0 else "PodFailed",
                 "lastTransitionTime": finished}
                for t in ("ContainersReady", "Ready")
            ],
            "containerStatuses": self._container_statuses({"terminated": term}, False),
        })

    def terminate(self, grace: float) -> None:
        self.deleting.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, tail_lines: int | None, limit_bytes: int | None) -> bytes:
        """The output as a kubelet's containerLogs returns it: the last `tail_lines` lines,
        then at most `limit_bytes` bytes of those."""
        try:
            data = (self.dir / "output.log").read_bytes()
        except OSError:
            data = b""
        if tail_lines is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-tail_lines:]) if tail_lines > 0 else b""
        if limit_bytes is not None:
            data = data[:limit_bytes]
        return data


class LogServer:
    """The kubelet's containerLogs endpoint over HTTPS (see the module docstring)."""

    def __init__(self, executor: "PodExecutor"):
        self.executor = executor
        cert, key = executor.work_dir / "kubelet.crt", executor.work_dir / "kubelet.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={executor.node}",
             "-addext", f"subjectAltName=IP:{LOCAL_ADDRESS},DNS:{executor.node}"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd = http.server.ThreadingHTTPServer((LOCAL_ADDRESS, 0), self._handler())
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]

    def _handler(self):
        executor = self.executor

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                url = urllib.parse.urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._answer(404, b"not found\n")
                _, ns, name, container = parts
                run = executor.find_run(ns, name)
                if run is None or run.pod["spec"]["containers"][0]["name"] != container:
                    return self._answer(404, f"container {container} of pod {ns}/{name} is not here\n".encode())
                query = urllib.parse.parse_qs(url.query)

                def number(key: str) -> int | None:
                    return int(query[key][0]) if key in query else None

                try:
                    body = run.log_tail(number("tailLines"), number("limitBytes"))
                except ValueError:
                    return self._answer(400, b"bad tailLines or limitBytes\n")
                self._answer(200, body)

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("log server: " + fmt, *args)

        return Handler

    def start(self) -> None:
        threading.Thread(target=self.httpd.serve_forever, name="log-server", daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class PodExecutor:
    def __init__(
        self,
        kubeconfig: str,
        node: str,
        volume_root: str | os.PathLike,
        labels: dict[str, str] | None = None,
        capacity: dict[str, str] | None = None,
        clean_env: bool = False,
        heartbeat_seconds: float = 10.0,
        keep_work: bool = False,
        work_dir: str | os.PathLike | None = None,
    ):
        self.client = KubeClient(kubeconfig)
        self.node = node
        self.volume_root = Path(volume_root).resolve()
        self.volume_root.mkdir(parents=True, exist_ok=True)
        self.labels = {
            "kubernetes.io/hostname": node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "sheepdog.dev/pod-executor": "true",
            **(labels or {}),
        }
        self.capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi", **(capacity or {})}
        self.clean_env = clean_env
        self.heartbeat_seconds = heartbeat_seconds
        self.keep_work = keep_work
        if work_dir:
            self.work_dir = Path(work_dir).resolve()
            self.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix=f"pod-executor-{node}-"))
        self.runs: dict[str, PodRun] = {}
        self.logs = LogServer(self)
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- node ----------------------------------------------------------------------------------
    def _conditions(self) -> list[dict]:
        t = now()
        return [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "pod executor is posting ready status", "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
             "message": "", "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
             "message": "", "lastHeartbeatTime": t, "lastTransitionTime": t},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
             "message": "", "lastHeartbeatTime": t, "lastTransitionTime": t},
        ]

    def _node_status(self) -> dict:
        return {
            "capacity": dict(self.capacity),
            "allocatable": dict(self.capacity),
            "conditions": self._conditions(),
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": self.node}],
            "nodeInfo": {
                "architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "sheepdog-pod-executor",
                "containerRuntimeVersion": "local-process://", "kernelVersion": os.uname().release,
                "kubeProxyVersion": "", "osImage": "", "machineID": "", "systemUUID": "", "bootID": "",
            },
            "phase": "Running",
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.logs.port}},
        }

    def find_run(self, namespace: str, name: str) -> PodRun | None:
        """The newest run of that pod (a pod name is reused only after the old pod is gone)."""
        with self._lock:
            found = [r for r in self.runs.values() if (r.ns, r.name) == (namespace, name)]
        return found[-1] if found else None

    def register(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": self.labels,
                         "annotations": {"sheepdog.dev/pod-executor": "true"}},
            "spec": {"taints": [TAINT]},
            "status": self._node_status(),
        }
        try:
            self.client.post("/api/v1/nodes", body)
        except ApiError as e:
            if e.status != 409:
                raise
            self.client.patch(f"/api/v1/nodes/{self.node}", {"metadata": {"labels": self.labels},
                                                              "spec": {"taints": [TAINT]}})
        self.client.patch(f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()}, kind="strategic")
        self._renew_lease()
        log.info("node %s registered", self.node)

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
        try:
            self.client.patch(path, {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.client.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": self.node, "namespace": "kube-node-lease"}, "spec": spec},
            )

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(self.heartbeat_seconds):
            try:
                self._renew_lease()
                self.client.patch(
                    f"/api/v1/nodes/{self.node}/status", {"status": {"conditions": self._conditions()}},
                    kind="strategic",
                )
            except Exception as e:  # noqa: BLE001 - the API server may be restarting
                log.warning("heartbeat failed: %s", e)

    # -- pods ----------------------------------------------------------------------------------
    def _handle(self, pod: dict) -> None:
        meta, status = pod["metadata"], pod.get("status", {})
        uid = meta["uid"]
        with self._lock:
            run = self.runs.get(uid)
            if meta.get("deletionTimestamp"):
                if run is None:
                    run = self.runs[uid] = PodRun(self, pod)
                    run.deleting.set()
                    run.done.set()
                if not getattr(run, "delete_started", False):
                    run.delete_started = True
                    grace = meta.get("deletionGracePeriodSeconds") or 0
                    t = threading.Thread(target=self._delete, args=(run, min(grace, 30)), daemon=True)
                    t.start()
                return
            if run is not None:
                return
            phase = status.get("phase", "Pending")
            if phase in ("Succeeded", "Failed"):
                return
            run = self.runs[uid] = PodRun(self, pod)
            if phase == "Running":
                # Running in the API but unknown here: this executor restarted under it.
                run.done.set()
                threading.Thread(
                    target=run._report_terminated,
                    args=(137, "ExecutorRestarted", "the pod executor restarted while the pod ran", now()),
                    daemon=True,
                ).start()
                return
            run.thread.start()

    def _delete(self, run: PodRun, grace: float) -> None:
        run.terminate(grace)
        run.done.wait(timeout=grace + 10)
        path = f"/api/v1/namespaces/{run.ns}/pods/{urllib.parse.quote(run.name)}"
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": run.uid}}
        for attempt in range(20):
            try:
                self.client.delete(path, body)
                break
            except ApiError as e:
                if e.status in (404, 409):
                    break
            except OSError:
                pass
            time.sleep(min(0.2 * (attempt + 1), 3))
        if not self.keep_work:
            run.cleanup()

    def _watch_loop(self) -> None:
        selector = urllib.parse.quote(f"spec.nodeName={self.node}")
        path = f"/api/v1/pods?fieldSelector={selector}"
        rv = None
        while not self.stopping.is_set():
            try:
                if rv is None:
                    listing = self.client.get(path)
                    rv = listing["metadata"]["resourceVersion"]
                    for pod in listing["items"]:
                        self._handle(pod)
                for ev in self.client.watch(path, resource_version=rv, timeout_seconds=30):
                    if self.stopping.is_set():
                        return
                    obj = ev.get("object", {})
                    if ev["type"] == "ERROR":
                        rv = None  # e.g. 410 Gone: relist
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._handle(obj)
                    elif ev["type"] == "DELETED":
                        with self._lock:
                            run = self.runs.get(obj["metadata"]["uid"])
                        if run is not None:
                            run.terminate(0)
            except Exception as e:  # noqa: BLE001 - API server restarts, timeouts: relist
                if self.stopping.is_set():
                    return
                log.warning("watch failed (%s); relisting", e)
                rv = None
                time.sleep(1)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.logs.start()
        self.register()
        for target in (self._heartbeat_loop, self._watch_loop):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, delete_node: bool = False) -> None:
        self.stopping.set()
        self.logs.stop()
        for run in list(self.runs.values()):
            run.terminate(5)
        if delete_node:
            try:
                self.client.delete(f"/api/v1/nodes/{self.node}")
            except (ApiError, OSError) as e:
                log.warning("node %s not deleted: %s", self.node, e)
        if not self.keep_work:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def run_forever(self) -> None:
        self.start()
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        done.wait()
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.cluster.pod_executor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--volume-root", required=True, help="persistentVolumeClaim X is <volume-root>/X")
    ap.add_argument("--label", action="append", default=[], help="node label k=v (repeatable)")
    ap.add_argument("--capacity", action="append", default=[], help="node capacity k=v, e.g. nvidia.com/gpu=8")
    ap.add_argument("--clean-env", action="store_true", help="pods get only PATH/LANG, not this process' env")
    ap.add_argument("--heartbeat-seconds", type=float, default=10.0)
    ap.add_argument("--keep-work", action="store_true", help="keep per-pod work dirs (output.log) for debugging")
    ap.add_argument("--work-dir", help="where per-pod dirs go (default: a fresh temp dir)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s pod_executor %(levelname)s %(message)s", stream=sys.stderr)
    PodExecutor(
        args.kubeconfig, args.node, args.volume_root,
        labels=parse_kv(args.label, "label"), capacity=parse_kv(args.capacity, "capacity"),
        clean_env=args.clean_env, heartbeat_seconds=args.heartbeat_seconds, keep_work=args.keep_work,
        work_dir=args.work_dir,
    ).run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
