"""Kubernetes gives a pod, unless its spec says enableServiceLinks: false, one set of variables
per Service of its namespace (`<NAME>_PORT=tcp://IP:PORT`, `<NAME>_SERVICE_HOST`, ...). With
the release named `sheepdog`, as the README installs it, the metrics Service is
`sheepdog-metrics` and its link variable SHEEPDOG_METRICS_PORT is the one the operator reads as
its metrics port: `make cluster-demo` found every operator restart after the Service existed
crashing on int('tcp://10.96.8.167:8080')."""

from __future__ import annotations

import re
from pathlib import Path

from tests.chart.helm import find, one, render

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "sheepdog"


def link_variables(service: str) -> set[str]:
    name = service.upper().replace("-", "_")
    return {f"{name}_PORT", f"{name}_SERVICE_HOST", f"{name}_SERVICE_PORT"}


def test_the_operator_pod_gets_no_service_links_that_shadow_its_settings():
    docs = render(release="sheepdog")
    read = set(re.findall(r"SHEEPDOG_[A-Z_]+", "\n".join(p.read_text() for p in OPERATOR.rglob("*.py"))))
    services = [s["metadata"]["name"] for s in find(docs, "Service")]
    assert "sheepdog-metrics" in services, services
    # what a link would shadow with this release name: the reason for the setting below
    assert link_variables("sheepdog-metrics") & read == {"SHEEPDOG_METRICS_PORT"}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod.get("enableServiceLinks") is False, pod
