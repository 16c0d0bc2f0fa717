"""What the real test node changes on the host, recorded before and undone after.

A kubelet and containerd are not contained: they set up mounts, network namespaces, a bridge,
iptables chains, cgroups and files in fixed host paths, and the kubelet wants three kernel
settings. `snapshot()` records the host's state of all of these; `restore(before)` removes what
is new since `before` (only in the places the node uses, so that other work on the machine is
left alone) and writes the recorded kernel settings back. `leftovers(before)` lists what would
still differ: the teardown check.

The snapshot is plain JSON, so tests/cluster/realnode.py keeps it in a file: a crashed test or
`up` leaves the record behind and the next `up` restores from it before starting again.

The pure parts (iptables-save parsing and diffing, mount ordering) are unit-tested in
tests/cluster/test_hoststate.py; the rest is checked by tests/cluster/test_real_node.py.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

# The kubelet's container manager refuses to start unless these hold (protectKernelDefaults:
# true makes it check instead of writing them itself; its setupKernelTunables). The last three
# are the kernel's defaults, already so on the test machines: set only where they differ.
KUBELET_SYSCTLS = {"vm.overcommit_memory": "1", "kernel.panic": "10", "kernel.panic_on_oops": "1",
                   "vm.panic_on_oom": "0", "kernel.keys.root_maxkeys": "1000000",
                   "kernel.keys.root_maxbytes": "25000000"}
# Not set by us but changed by the CNI bridge plugin (a gateway bridge turns forwarding on):
# recorded and written back too.
RECORDED_SYSCTLS = [*KUBELET_SYSCTLS, "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"]

# Fixed host paths the kubelet, containerd, its shims and the CNI plugins write to whatever
# their configured directories are (the kubelet's device-plugin socket ignores --root-dir,
# shim sockets go to /run/containerd/s, network namespaces to /run/netns, container log links
# to /var/log/containers, libcni's cache to /var/lib/cni).
WATCHED_PATHS = [
    "/var/lib/kubelet", "/var/lib/cni", "/var/lib/containerd", "/var/log/containers", "/var/log/pods",
    "/run/containerd", "/run/netns", "/run/nri", "/etc/cni", "/opt/cni", "/etc/containerd",
]
WATCH_DEPTH = 4
CGROUP_ROOT = Path("/sys/fs/cgroup")
IPTABLES = ("iptables", "ip6tables")


# ---- kernel settings ---------------------------------------------------------------------------
def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls(keys: list[str]) -> dict[str, str]:
    out = {}
    for k in keys:
        try:
            out[k] = _sysctl_path(k).read_text().strip()
        except FileNotFoundError:  # no IPv6 on this host, for example
            pass
    return out


def write_sysctls(values: dict[str, str]) -> None:
    for k, v in values.items():
        p = _sysctl_path(k)
        if p.read_text().strip() != v:
            p.write_text(v + "\n")


# ---- iptables ------------------------------------------------------------------------------------
def parse_iptables_save(text: str) -> dict[str, dict]:
    """{table: {"chains": {name: policy}, "rules": [rule line, ...]}} of `iptables-save` output
    (rules in order, e.g. "-A INPUT -j KUBE-FIREWALL"; counters and comments dropped)."""
    tables: dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {"chains": {}, "rules": []})
        elif line == "COMMIT":
            cur = None
        elif cur is None:
            raise ValueError(f"iptables-save line outside a table: {line!r}")
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            cur["chains"][name] = policy
        elif line.startswith("-A "):
            cur["rules"].append(line)
        else:
            raise ValueError(f"unexpected iptables-save line: {line!r}")
    return tables


def significant(tables: dict[str, dict]) -> dict[str, dict]:
    """The part of a parsed iptables-save that matters when comparing: tables with rules or
    user chains, or a built-in chain whose policy is not ACCEPT. With the nf_tables backend a
    table, once created, stays (iptables cannot delete one), empty, with ACCEPT policies."""
    out = {}
    for name, t in tables.items():
        user = {c: p for c, p in t["chains"].items() if p == "-"}
        policies = {c: p for c, p in t["chains"].items() if p not in ("-", "ACCEPT")}
        if user or policies or t["rules"]:
            out[name] = {"chains": {**user, **policies}, "rules": list(t["rules"])}
    return out


def iptables_undo(before: dict[str, dict], after: dict[str, dict]) -> list[list[str]]:
    """Argument lists (without the iptables binary) that take `after` back to `before`: delete
    the rules added to chains that existed before, then flush every chain that is new, then
    delete those chains (a chain can only be deleted once nothing jumps to it)."""
    deletes, flushes, removes = [], [], []
    for table, t in after.items():
        old = before.get(table, {"chains": {}, "rules": []})
        # Only user chains (policy "-"): the built-in ones of a table created meanwhile stay.
        new_chains = [c for c, policy in t["chains"].items() if policy == "-" and c not in old["chains"]]
        have = Counter(old["rules"])
        for rule in t["rules"]:
            if have[rule] > 0:
                have[rule] -= 1
                continue
            chain = shlex.split(rule)[1]
            if chain in new_chains:
                continue  # goes with the flush
            # shlex: iptables-save quotes comments ("block incoming localnet connections").
            deletes.append(["-t", table, "-D", *shlex.split(rule)[1:]])
        for c in new_chains:
            flushes.append(["-t", table, "-F", c])
            removes.append(["-t", table, "-X", c])
    return deletes + flushes + removes


def iptables_save(binary: str) -> dict[str, dict] | None:
    """The parsed ruleset of `binary` (iptables or ip6tables), or None when it is not installed."""
    if shutil.which(f"{binary}-save") is None:
        return None
    res = subprocess.run([f"{binary}-save"], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"{binary}-save failed: {res.stderr.strip()}")
    return parse_iptables_save(res.stdout)


# ---- mounts --------------------------------------------------------------------------------------
def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return (field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
            .replace("\\134", "\\"))


def mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [_unescape(line.split()[4]) for line in f]


def under(path: str, prefixes: list[str]) -> bool:
    return any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def unmount_order(points: list[str]) -> list[str]:
    """Deepest first (a mount on top of another goes first); a point mounted twice is listed
    twice, once per unmount it needs."""
    return sorted(points, key=lambda p: (p.count("/"), p), reverse=True)


# ---- cgroups -------------------------------------------------------------------------------------
def cgroup_dirs(name_prefix: str = "kubepods") -> list[str]:
    """Every cgroup directory under a top-level `name_prefix*` cgroup, in every hierarchy."""
    out = []
    if not CGROUP_ROOT.is_dir():
        return out
    if (CGROUP_ROOT / "cgroup.procs").exists():  # cgroup v2 mounted right on /sys/fs/cgroup
        tops = [CGROUP_ROOT]
    else:  # v1 (or hybrid): one hierarchy per directory, the unified one among them
        tops = [h for h in CGROUP_ROOT.iterdir() if (h / "cgroup.procs").exists()]
    for top in tops:
        try:
            entries = list(top.iterdir())
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(name_prefix) and e.is_dir():
                for dirpath, _dirs, _files in os.walk(e):
                    out.append(dirpath)
    return sorted(out)


def kill_cgroup(path: str) -> None:
    try:
        pids = Path(path, "cgroup.procs").read_text().split()
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def remove_cgroups(dirs: list[str], timeout: float = 20.0) -> list[str]:
    """Kill what runs in `dirs` and remove them, deepest first; returns those that remain."""
    deadline = time.monotonic() + timeout
    left = sorted(dirs, key=lambda p: p.count("/"), reverse=True)
    while left and time.monotonic() < deadline:
        for d in left:
            kill_cgroup(d)
        remaining = []
        for d in left:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                remaining.append(d)
        left = remaining
        if left:
            time.sleep(0.2)
    return left


# ---- files ---------------------------------------------------------------------------------------
def list_paths(roots: list[str], depth: int = WATCH_DEPTH) -> list[str]:
    """Every path under `roots` (the roots included) down to `depth` levels, not following links."""
    out = []
    for root in roots:
        if not os.path.lexists(root):
            continue
        out.append(root)
        stack = [(root, 0)]
        while stack:
            d, level = stack.pop()
            if level >= depth or os.path.islink(d) or not os.path.isdir(d):
                continue
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for n in names:
                p = os.path.join(d, n)
                out.append(p)
                stack.append((p, level + 1))
    return sorted(out)


def remove_new_paths(before: list[str], roots: list[str]) -> None:
    """Remove every path under `roots` that is not in `before`, the shallowest first (a new
    directory goes with its contents)."""
    old = set(before)
    for p in list_paths(roots):
        if p in old or not os.path.lexists(p):
            continue
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


# ---- network interfaces --------------------------------------------------------------------------
def links() -> list[str]:
    return sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else []


# ---- the whole host ------------------------------------------------------------------------------
def snapshot() -> dict:
    """The host's state in every place the real node touches (JSON-serialisable)."""
    return {
        "sysctls": read_sysctls(RECORDED_SYSCTLS),
        "iptables": {b: iptables_save(b) for b in IPTABLES},
        "mounts": mount_points(),
        "cgroups": cgroup_dirs(),
        "paths": list_paths(WATCHED_PATHS),
        "links": links(),
    }


def restore(before: dict, own_dirs: list[str], bridge: str) -> list[str]:
    """Undo what changed since `before` in the places the node uses (its own directories
    `own_dirs`, the fixed host paths, its `bridge`, kubepods cgroups, iptables, the recorded
    sysctls). Call with the node's processes stopped. Returns what could not be undone, each
    as a line (empty when clean)."""
    problems: list[str] = []
    mount_roots = [*own_dirs, *WATCHED_PATHS]
    # 1. Containers still running (their shims and runc are gone): kill via their cgroups, so
    #    no process keeps a mount or a network namespace alive.
    new_cgroups = [d for d in cgroup_dirs() if d not in set(before.get("cgroups", []))]
    for d in new_cgroups:
        kill_cgroup(d)
    # 2. Mounts: deepest first; a busy one is detached lazily.
    old = Counter(before.get("mounts", []))
    now = Counter(p for p in mount_points() if under(p, mount_roots))
    extra = [p for p, n in now.items() for _ in range(n - old.get(p, 0))]
    for p in unmount_order(extra):
        res = subprocess.run(["umount", p], capture_output=True, text=True)
        if res.returncode != 0:
            res = subprocess.run(["umount", "-l", p], capture_output=True, text=True)
            if res.returncode != 0:
                problems.append(f"mount {p}: {res.stderr.strip()}")
    # 3. cgroups, deepest first.
    for d in remove_cgroups(new_cgroups):
        problems.append(f"cgroup {d} could not be removed")
    # 4. The bridge (a pod's veth goes with its network namespace).
    if bridge in links() and bridge not in before.get("links", []):
        res = subprocess.run(["ip", "link", "delete", bridge], capture_output=True, text=True)
        if res.returncode != 0:
            problems.append(f"link {bridge}: {res.stderr.strip()}")
    # 5. iptables: what the kubelet and the CNI plugins added.
    for binary in IPTABLES:
        old_rules = (before.get("iptables") or {}).get(binary)
        cur = iptables_save(binary)
        if cur is None:
            continue
        for args in iptables_undo(old_rules or {}, cur):
            res = subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True)
            if res.returncode != 0:
                problems.append(f"{binary} {' '.join(args)}: {res.stderr.strip()}")
    # 6. Files and directories in the fixed host paths.
    remove_new_paths(before.get("paths", []), WATCHED_PATHS)
    # 7. Kernel settings.
    try:
        write_sysctls(before.get("sysctls", {}))
    except OSError as e:
        problems.append(f"sysctls: {e}")
    return problems + leftovers(before, own_dirs, bridge)


def leftovers(before: dict, own_dirs: list[str], bridge: str) -> list[str]:
    """How the host differs from `before` in the places the node uses (empty when restored)."""
    out = []
    old_mounts = Counter(before.get("mounts", []))
    now = Counter(p for p in mount_points() if under(p, [*own_dirs, *WATCHED_PATHS]))
    for p, n in now.items():
        if n > old_mounts.get(p, 0):
            out.append(f"mount {p}")
    out += [f"cgroup {d}" for d in cgroup_dirs() if d not in set(before.get("cgroups", []))]
    if bridge in links() and bridge not in before.get("links", []):
        out.append(f"link {bridge}")
    for binary in IPTABLES:
        cur = iptables_save(binary)
        if cur is None:
            continue
        old = significant((before.get("iptables") or {}).get(binary) or {})
        for args in iptables_undo(old, significant(cur)):
            out.append(f"{binary} {' '.join(args)}")
    out += [f"path {p}" for p in list_paths(WATCHED_PATHS) if p not in set(before.get("paths", []))]
    now_sysctls = read_sysctls(list(before.get("sysctls", {})))
    out += [f"sysctl {k}={now_sysctls.get(k)} (was {v})" for k, v in before.get("sysctls", {}).items()
            if now_sysctls.get(k) != v]
    return out
