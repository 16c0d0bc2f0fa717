"""The NetworkPolicy of a run's stage pods: a pure builder (the operator creates it with each
stage Job when the chart's networkPolicy is on; docs/security.md).

A stage pod listens on ports nobody should reach from outside its run: the torchrun rendezvous
(a TCPStore on 29500, unauthenticated: whoever connects can write the store and join or stall
the job), NCCL's peer ports (chosen at random, so no port list could name them) and whatever a
user's program opens. So the run's pods accept connections only from pods of the same run in
the same namespace, on any port. A run's stages run one after the other, so in practice this is
"from the pods of the same Job": a second run's pods, another namespace's pods and every other
workload are refused.

Egress stays open unless the operator is given CIDRs (the chart's
networkPolicy.stageEgressCIDRs: the model hub, S3, a tracking server, the judge): then only
those, DNS (port 53 anywhere: the cluster's resolver is not at a fixed address) and the run's
own pods (the ranks of a multi-node train talk to each other).

One policy per run (`<run>-pods`), owned by the run: created before each stage's Job (a 409
means it exists), deleted with the run. A policy only takes effect where the cluster's network
plugin enforces NetworkPolicy (Calico, Cilium, ...); elsewhere it is stored and ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Mapping


class NetworkPolicyError(ValueError):
    pass


def policy_name(run: str) -> str:
    return f"{run}-pods"


def egress_cidrs(values: Iterable[Any]) -> tuple[str, ...]:
    """The CIDRs as given, each checked (a bare address is a /32 or /128)."""
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(str(v).strip(), strict=False)))
        except ValueError as exc:
            raise NetworkPolicyError(f"egressCIDRs: {v!r} is not an IP network: {exc}") from None
    return tuple(out)


def build_run_network_policy(run: str, namespace: str, run_label: str, owner: Mapping[str, Any],
                             labels: Mapping[str, str], cidrs: Iterable[str] = ()) -> dict[str, Any]:
    """The run's policy: its pods (`run_label` = run) accept ingress from the run's pods only;
    with `cidrs`, their egress goes only there, to DNS and to the run's pods."""
    own = {"podSelector": {"matchLabels": {run_label: run}}}
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": {run_label: run}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [own]}],
    }
    cidrs = tuple(cidrs)
    if cidrs:
        spec["policyTypes"].append("Egress")
        spec["egress"] = [
            {"to": [own]},
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"to": [{"ipBlock": {"cidr": c}} for c in cidrs]},
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": policy_name(run),
            "namespace": namespace,
            "labels": dict(labels),
            "ownerReferences": [dict(owner)],
        },
        "spec": spec,
    }
