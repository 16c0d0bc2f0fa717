"""The pod executor's stand-in for cluster DNS: peers behind a pod's headless Service are local."""

from __future__ import annotations

from tests.cluster.pod_executor import LOCAL_ADDRESS, local_dns_of


def test_names_behind_the_pods_subdomain_are_local() -> None:
    dns = local_dns_of("r-i1-train-rdzv", "ns1")
    assert dns("--rdzv-endpoint=r-i1-train-0.r-i1-train-rdzv:29500") == f"--rdzv-endpoint={LOCAL_ADDRESS}:29500"
    for name in ("r-i1-train-1.r-i1-train-rdzv", "r-i1-train-0.r-i1-train-rdzv.ns1",
                 "r-i1-train-0.r-i1-train-rdzv.ns1.svc", "r-i1-train-0.r-i1-train-rdzv.ns1.svc.cluster.local"):
        assert dns(name) == LOCAL_ADDRESS, name


def test_other_names_stay() -> None:
    dns = local_dns_of("r-i1-train-rdzv", "ns1")
    for text in ("r-i1-train-rdzv", "x.r-i1-train-rdzv.elsewhere", "x.r-i1-train-rdzv-2", "/data/r-i1-train-rdzv",
                 "x.other-rdzv:29500", '{"run": "r"}'):
        assert dns(text) == text, text
    assert local_dns_of(None, "ns1")("a.b.c:1") == "a.b.c:1"  # no subdomain: no rewriting
