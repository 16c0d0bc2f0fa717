"""kube/transport.py: the credentials a kubeconfig or a service account gives, the requests
over urllib3 against the real control plane (404/409 mapping, a rotated token), and the
operator process started against it without ever importing the `kubernetes` package."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from sheepdog.kube.client import ApiError, Kube, error_status
from sheepdog.kube.transport import ConfigError, Transport, in_cluster_credentials, kubeconfig_credentials
from tests.operator.conftest import OperatorProcess, run_manifest, stage_jobs

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def config(server: str, user: dict, cluster: dict | None = None, name: str = "c") -> dict:
    return {"clusters": [{"name": name, "cluster": {"server": server, **(cluster or {})}}],
            "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "team"}}],
            "current-context": name}


# --- credentials ----------------------------------------------------------------------------


def test_a_kubeconfig_relative_files_are_relative_to_it_and_data_is_decoded(tmp_path):
    (tmp_path / "conf").mkdir()
    path = write(tmp_path / "conf" / "kc", config(
        "https://api.example:6443/", {"client-certificate": "pki/me.crt", "client-key": "pki/me.key"},
        {"certificate-authority-data": base64.b64encode(PEM.encode()).decode(), "tls-server-name": "api"}))
    c = kubeconfig_credentials(str(path))
    assert c.server == "https://api.example:6443"  # a path prefix is kept, the trailing slash is not
    assert c.cert_file == str(tmp_path / "conf" / "pki" / "me.crt")
    assert c.key_file == str(tmp_path / "conf" / "pki" / "me.key")
    assert c.ca_data == PEM and c.tls_server_name == "api" and c.namespace == "team"


def test_kubeconfig_files_merge_first_wins_and_a_context_can_be_chosen(tmp_path):
    a = write(tmp_path / "a", config("https://a", {"token": "ta"}, name="a"))
    b = config("https://b", {"token": "tb"}, name="b")
    b["clusters"].append({"name": "a", "cluster": {"server": "https://not-this-one"}})
    b = write(tmp_path / "b", b)
    paths = os.pathsep.join([str(a), str(b)])
    assert kubeconfig_credentials(paths).server == "https://a"  # a's current-context
    assert kubeconfig_credentials(paths, "b").bearer()[0] == "tb"
    with pytest.raises(ConfigError, match="no context 'x'"):
        kubeconfig_credentials(paths, "x")


def test_what_a_kubeconfig_cannot_give_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="auth-provider"):
        kubeconfig_credentials(str(write(tmp_path / "k", config("https://a", {"auth-provider": {"name": "gcp"}}))))
    with pytest.raises(ConfigError, match="no current-context"):
        kubeconfig_credentials(str(write(tmp_path / "n", {**config("https://a", {}), "current-context": ""})))
    with pytest.raises(ConfigError, match="kubeconfig .*missing"):
        kubeconfig_credentials(str(tmp_path / "missing"))


def test_an_exec_plugin_is_run_once_until_its_token_expires(tmp_path):
    calls = tmp_path / "calls"
    plugin = tmp_path / "bin" / "get-token"
    plugin.parent.mkdir()
    plugin.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os
        info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
        with open({str(calls)!r}, "a") as f:
            f.write(info["kind"] + " " + os.environ["CLUSTER"] + "\\n")
        print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential",
                          "status": {{"token": "t-" + os.environ["CLUSTER"],
                                      "expirationTimestamp": "2999-01-01T00:00:00Z"}}}}))
        """))
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    c = kubeconfig_credentials(str(write(tmp_path / "kc", config("https://a", {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/get-token",
        "env": [{"name": "CLUSTER", "value": "prod"}]}}))))
    assert c.bearer()[0] == "t-prod" and c.bearer()[0] == "t-prod"
    assert calls.read_text() == "ExecCredential prod\n"  # once: its expiry is far
    c.forget_token()  # what a 401 does
    assert c.bearer()[0] == "t-prod" and calls.read_text().count("\n") == 2


def test_an_exec_plugin_that_fails_says_so(tmp_path):
    c = kubeconfig_credentials(str(write(tmp_path / "kc", config("https://a", {"exec": {
        "command": "false", "apiVersion": "client.authentication.k8s.io/v1"}}))))
    with pytest.raises(ConfigError, match="exec plugin false exited 1"):
        c.bearer()


def test_in_cluster_reads_the_service_account(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "namespace").write_text("sheepdog-system")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    c = in_cluster_credentials(str(tmp_path))
    assert (c.server, c.namespace, c.ca_file) == ("https://[fd00::1]:443", "sheepdog-system", str(tmp_path / "ca.crt"))
    assert c.bearer()[0] == "sa-token"
    (tmp_path / "token").write_text("rotated")  # the kubelet rewrites a projected token
    assert c.bearer()[0] == "rotated"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(ConfigError, match="not in a pod"):
        in_cluster_credentials(str(tmp_path))


# --- against the real control plane -----------------------------------------------------------


def test_kube_maps_404_409_and_errors_as_before(cluster, namespace):
    kube = Kube(kubeconfig_credentials(str(cluster.kubeconfig)))
    assert kube.get_run(namespace, "absent") is None  # 404
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": namespace}, "data": {}}
    assert kube.create(namespace, cm)["metadata"]["name"] == "x"
    assert kube.create(namespace, cm) is None  # 409: never a duplicate
    bad = {**cm, "metadata": {"name": "Not_A_Name", "namespace": namespace}}
    with pytest.raises(ApiError) as err:
        kube.create(namespace, bad)
    status, message = error_status(err.value)
    assert status == 422 and "Not_A_Name" in message


def test_a_token_file_rotated_after_a_401_is_read_again(cluster, namespace, tmp_path):
    from tests.chart.e2e import create_token

    cluster.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    token_file = tmp_path / "token"
    token_file.write_text("not-a-valid-token")
    admin = json.loads(Path(cluster.kubeconfig).read_text())
    c = kubeconfig_credentials(str(write(tmp_path / "kc", config(
        admin["clusters"][0]["cluster"]["server"], {"tokenFile": "token"},
        {"certificate-authority": admin["clusters"][0]["cluster"]["certificate-authority"]}))))
    transport = Transport(c)
    assert transport.request("GET", "/version").status == 401  # read again once, still wrong
    token_file.write_text(create_token(cluster, namespace, "reader"))
    # the token read before is still cached (it is re-read every minute): the 401 makes the
    # transport read the file again and the request goes through
    assert transport.request("GET", "/version").status == 200


PROBE = """
import atexit, json, sys
out = sys.argv[1]

def report():
    with open(out, "w") as f:
        json.dump({"kubernetes": sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "kubernetes" and v),
                   "kopf": "kopf" in sys.modules}, f)

atexit.register(report)
from sheepdog.cli import main
sys.exit(main(["operator", *sys.argv[2:]]))
"""


class ProbedOperator(OperatorProcess):
    """`sheepdog operator` that writes, at its exit, which `kubernetes` modules it loaded."""

    def __init__(self, *args, report: Path, **kwargs):
        super().__init__(*args, **kwargs)
        self.report = report

    def command(self) -> list[str]:
        cmd = super().command()
        return [sys.executable, "-c", PROBE, str(self.report), *cmd[cmd.index("operator") + 1:]]


def test_the_operator_process_never_imports_the_kubernetes_package(cluster, crd, namespace, tmp_path):
    import importlib.util

    assert importlib.util.find_spec("kubernetes") is not None, "installed here: the check means something"
    op = ProbedOperator(cluster, [namespace], tmp_path / "operator.log", report=tmp_path / "modules.json")
    op.start()
    try:
        cluster.apply(run_manifest("probe", namespace, iterations=1))
        # Kopf's watch (our login) saw the run and our client created its first Job
        cluster.wait_for("the run's first Job", lambda: stage_jobs(cluster, namespace, "probe"), timeout=90)
    finally:
        assert op.stop() == 0, op.log_tail()
    loaded = json.loads((tmp_path / "modules.json").read_text())
    assert loaded == {"kubernetes": [], "kopf": True}
