"""NetworkPolicy ingress semantics, evaluated in Python (networking.k8s.io/v1 as the API
documents it), for tests that check what rendered or built policies allow where no network
plugin enforces them (the test node's bridge CNI does not): which pods a policy selects, and
whether a connection from a peer pod to a port is allowed by the policies that select the
target. A pod no policy of type Ingress selects accepts everything."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Union


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # container port name -> number

    def ns_labels(self) -> Mapping[str, str]:
        # the API server labels every namespace with its name
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def matches(selector: Optional[Mapping[str, Any]], labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: {} selects everything; None (absent) is the caller's to read."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": lambda: labels.get(key) in values,
              "NotIn": lambda: key not in labels or labels[key] not in values,
              "Exists": lambda: key in labels,
              "DoesNotExist": lambda: key not in labels}[op]()
        if not ok:
            return False
    return True


def selects(policy: Mapping[str, Any], pod: Pod) -> bool:
    return policy["metadata"]["namespace"] == pod.namespace and matches(policy["spec"]["podSelector"], pod.labels)


def _peer_allows(peer: Mapping[str, Any], policy_ns: str, src: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # pods are matched by selectors here, not by address
    ns_sel, pod_sel = peer.get("namespaceSelector"), peer.get("podSelector")
    in_ns = src.namespace == policy_ns if ns_sel is None else matches(ns_sel, src.ns_labels())
    return in_ns and (pod_sel is None or matches(pod_sel, src.labels))


def _port_allows(ports: Optional[Iterable[Mapping[str, Any]]], dst: Pod, port: Union[int, str], protocol: str) -> bool:
    if not ports:
        return True  # no ports: every port
    number = dst.ports.get(port) if isinstance(port, str) else port
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        want = p.get("port")
        if want is None:
            return True
        want_number = dst.ports.get(want) if isinstance(want, str) else want
        end = p.get("endPort", want_number)
        if want_number is not None and number is not None and want_number <= number <= end:
            return True
    return False


def ingress_allowed(policies: Iterable[Mapping[str, Any]], src: Pod, dst: Pod, port: Union[int, str],
                    protocol: str = "TCP") -> bool:
    """Whether `src` may connect to `dst`'s port under `policies`."""
    relevant = [p for p in policies if selects(p, dst) and "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
    if not relevant:
        return True
    for policy in relevant:
        for rule in policy["spec"].get("ingress") or ():
            peers = rule.get("from")
            peer_ok = not peers or any(_peer_allows(peer, policy["metadata"]["namespace"], src) for peer in peers)
            if peer_ok and _port_allows(rule.get("ports"), dst, port, protocol):
                return True
    return False
