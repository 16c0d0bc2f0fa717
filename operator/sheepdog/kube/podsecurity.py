"""A pure check of a pod spec against the Pod Security Standards "restricted" profile.

The real PodSecurity admission plugin (namespace label
`pod-security.kubernetes.io/enforce: restricted`) is what guards a cluster; this is the same list
of checks written down so that every Job the operator builds is checked by unit tests, and so
`sheepdog render` can say why a hand-edited manifest would be refused. It covers the baseline
checks plus the restricted ones of the latest profile version.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# Volume types the restricted profile allows.
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
# Capabilities the baseline profile allows to add (restricted: only NET_BIND_SERVICE).
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
     "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset(
    {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
     "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
     "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
     "net.ipv4.tcp_keepalive_probes"}
)
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SECCOMP_ALLOWED = frozenset({"RuntimeDefault", "Localhost"})


def _containers(pod_spec: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod_spec.get(key) or ():
            yield f"{key}[{c.get('name', '?')}]", c


def restricted_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Why `pod_spec` (a PodSpec dict, e.g. a Job's spec.template.spec) would be refused by the
    restricted profile: one line per violation; [] when it passes."""
    out: list[str] = []
    psc = pod_spec.get("securityContext") or {}

    # --- baseline ---
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(flag):
            out.append(f"{flag} must not be true")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess must not be true")
    for i, sysctl in enumerate(psc.get("sysctls") or ()):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"securityContext.sysctls[{i}] {sysctl.get('name')!r} is not a safe sysctl")
    for i, vol in enumerate(pod_spec.get("volumes") or ()):
        kinds = [k for k in vol if k != "name"]
        if "hostPath" in kinds:
            out.append(f"volumes[{vol.get('name', i)}]: hostPath volumes are forbidden")
        for kind in kinds:
            if kind not in RESTRICTED_VOLUME_TYPES and kind != "hostPath":
                out.append(f"volumes[{vol.get('name', i)}]: volume type {kind} is not allowed")
    out += _selinux("securityContext", psc)
    out += _seccomp_not_unconfined("securityContext", psc)
    out += _apparmor("securityContext", psc)

    # --- restricted, pod level ---
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsUser") == 0:
        out.append("securityContext.runAsUser must not be 0")

    for where, c in _containers(pod_spec):
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{where}: privileged must not be true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}: windowsOptions.hostProcess must not be true")
        for port in c.get("ports") or ():
            if port.get("hostPort"):
                out.append(f"{where}: hostPort {port['hostPort']} is forbidden")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount must be Default")
        out += _selinux(where, sc)
        out += _seccomp_not_unconfined(where, sc)
        out += _apparmor(where, sc)
        caps = sc.get("capabilities") or {}
        for cap in caps.get("add") or ():
            if cap not in RESTRICTED_CAPABILITIES:
                out.append(f"{where}: capability {cap} may not be added (only NET_BIND_SERVICE)")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: allowPrivilegeEscalation must be false")
        if "ALL" not in (caps.get("drop") or ()):
            out.append(f"{where}: capabilities.drop must include ALL")
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"{where}: runAsNonRoot must be true (in the pod or the container securityContext)")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in SECCOMP_ALLOWED:
            out.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost "
                       f"(in the pod or the container securityContext)")
    return out


def _selinux(where: str, sc: Mapping[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"{where}: seLinuxOptions.type {opts.get('type')!r} is not allowed")
    for key in ("user", "role"):
        if opts.get(key):
            out.append(f"{where}: seLinuxOptions.{key} must not be set")
    return out


def _seccomp_not_unconfined(where: str, sc: Mapping[str, Any]) -> list[str]:
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        return [f"{where}: seccompProfile.type must not be Unconfined"]
    return []


def _apparmor(where: str, sc: Mapping[str, Any]) -> list[str]:
    profile = (sc.get("appArmorProfile") or {}).get("type")
    if profile is not None and profile not in ("RuntimeDefault", "Localhost"):
        return [f"{where}: appArmorProfile.type must be RuntimeDefault or Localhost"]
    return []
