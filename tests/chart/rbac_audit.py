"""What an identity did (the API server's audit log) against what the chart grants it (its
rendered Roles and ClusterRoles): the pure comparison behind test_install.py's RBAC audit test.

A permission is (verb, API group, resource[/subresource]), as RBAC spells it; a grant adds its
scope (the namespace of a Role, None for a ClusterRole bound cluster-wide). Requests without
a resource (discovery: /api, /apis, /version) are left out: every authenticated user has them
through the API server's default system:discovery role, not through the chart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, NamedTuple, Optional


class Permission(NamedTuple):
    verb: str
    group: str  # "" for the core group
    resource: str  # "pods", "selfalignmentruns/status"

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}{'.' + self.group if self.group else ''}"


class Use(NamedTuple):
    permission: Permission
    namespace: Optional[str]  # None: a cluster-scoped or all-namespaces request
    code: int  # the response's HTTP status (403: refused)


class Grant(NamedTuple):
    permission: Permission
    namespace: Optional[str]  # None: cluster-wide (a ClusterRole through a ClusterRoleBinding)


def read_uses(audit_lines: Iterable[str], user: str, skip_agents: tuple[str, ...] = ("kubectl/",)) -> list[Use]:
    """The resource requests of `user` in audit events (JSON lines), one per request: a watch
    logs ResponseStarted, and ResponseComplete only when it ends (maybe never while we read).
    Requests whose user agent starts with one of `skip_agents` are not the operator's: a test
    uses the operator's token with kubectl to show a refusal (a Secret read)."""
    uses, seen = [], set()
    for line in audit_lines:
        if not line.strip():
            continue
        ev = json.loads(line)
        if ev.get("user", {}).get("username") != user or ev.get("auditID") in seen:
            continue
        if str(ev.get("userAgent", "")).startswith(skip_agents):
            continue
        seen.add(ev.get("auditID"))
        ref = ev.get("objectRef")
        if not ref or not ref.get("resource"):
            continue  # a non-resource URL (discovery)
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        perm = Permission(ev["verb"], ref.get("apiGroup", ""), resource)
        uses.append(Use(perm, ref.get("namespace"), int(ev.get("responseStatus", {}).get("code", 0))))
    return uses


def read_audit_log(path: Path, user: str) -> list[Use]:
    with open(path, encoding="utf-8") as f:
        return read_uses(f, user)


def grants_of(manifests: Iterable[dict], namespace: str, service_account: str) -> list[Grant]:
    """Every permission the rendered manifests grant ServiceAccount namespace/service_account,
    through the bindings that name it. A wildcard is an error: it grants what nobody checked."""
    docs = list(manifests)
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d.get("kind") in ("Role", "ClusterRole")}
    grants = []
    for b in docs:
        if b.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == service_account
                   and s.get("namespace") == namespace for s in b.get("subjects") or ()):
            continue
        scope = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        ref = b["roleRef"]
        role_ns = scope if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{b['kind']} {b['metadata']['name']} binds {ref}, which the chart does not render"
        for rule in role.get("rules") or ():
            assert not rule.get("nonResourceURLs"), f"non-resource rule in {ref['name']}: {rule}"
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, ()), f"wildcard {field} in {ref['name']}: {rule}"
            assert not rule.get("resourceNames"), f"resourceNames are not compared: {rule}"
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        grants.append(Grant(Permission(v, g, r), scope))
    return grants


def covers(grant: Grant, use: Use) -> bool:
    return grant.permission == use.permission and (grant.namespace is None or grant.namespace == use.namespace)


def ungranted(uses: Iterable[Use], grants: Iterable[Grant]) -> list[Use]:
    """Uses no grant covers (refused with 403, or allowed by something other than the chart)."""
    grants = list(grants)
    return sorted({u for u in uses if not any(covers(g, u) for g in grants)}, key=_order)


def unused(grants: Iterable[Grant], uses: Iterable[Use], allowed: Iterable[Permission] = ()) -> list[Grant]:
    """Grants no use needed, except the `allowed` permissions (needed by code paths the audited
    run did not reach)."""
    uses, allowed = list(uses), set(allowed)
    return sorted({g for g in grants if g.permission not in allowed and not any(covers(g, u) for u in uses)},
                  key=_order)


def _order(item: Use | Grant) -> tuple:
    return (item.permission, item.namespace or "")  # None (cluster-wide) sorts with str
