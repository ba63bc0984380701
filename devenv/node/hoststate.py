"""The host state a real node can change, so `make devenv-down` can prove it left the host as found.

    hoststate.py snapshot OUT.json          what the host looks like now
    hoststate.py compare BEFORE.json        exit 1 and name every difference with the host now

A snapshot holds sysctls, iptables rules, network links, mount points, top-level cgroups and the
well-known runtime paths (/run/containerd, /var/lib/kubelet, ...). Values that move by themselves
(counters, random seeds) and links that come and go with pods are left out of the comparison.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

SYSCTL_ROOTS = ("kernel", "vm", "net/ipv4", "net/ipv6/conf/all", "net/ipv6/conf/default", "net/bridge", "net/netfilter", "net/core", "fs")
# Values the kernel changes on its own.
VOLATILE_SYSCTLS = re.compile(
    r"^(kernel/random/|kernel/ns_last_pid|kernel/pty/nr|kernel/tainted|kernel/sched_domain/|kernel/usermodehelper/|"
    r"fs/dentry-state|fs/inode-|fs/file-nr|fs/quota/|fs/binfmt_misc/|vm/stat_refresh|vm/drop_caches|vm/compact_memory|"
    r"net/netfilter/nf_conntrack_count|net/ipv4/tcp_mem|net/ipv4/udp_mem|net/ipv4/route/flush|net/ipv4/neigh/(?!default/)|"
    r"net/ipv4/conf/(?!all/|default/)|net/core/netdev_rss_key|kernel/perf_event_max_sample_rate|"
    r"net/ipv4/tcp_fastopen_key|kernel/keys/persistent_keyring_expiry|fs/mqueue/|kernel/hung_task)"
)
RUNTIME_PATHS = (
    "/run/containerd", "/run/docker", "/run/netns", "/var/run/netns", "/var/lib/cni", "/var/lib/kubelet",
    "/var/log/pods", "/var/log/containers", "/etc/cni", "/opt/cni", "/opt/containerd", "/var/lib/containerd",
    "/var/lib/docker", "/run/docker.sock", "/usr/libexec/kubernetes",
)
# Links that exist only while pods run, named by CNI's bridge plugin.
TRANSIENT_LINK = re.compile(r"^veth")


def _sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    for root in SYSCTL_ROOTS:
        for dirpath, _, files in os.walk(f"/proc/sys/{root}"):
            for name in files:
                path = os.path.join(dirpath, name)
                key = path[len("/proc/sys/"):]
                if VOLATILE_SYSCTLS.match(key) or not os.access(path, os.R_OK):
                    continue
                try:
                    out[key] = " ".join(Path(path).read_text().split())
                except OSError:
                    continue
    return out


def _iptables() -> dict[str, list[str]]:
    """{'ipv4:filter': [rules and non-empty chains]}; a table holding only empty ACCEPT built-ins
    counts as absent, since iptables-nft creates such tables merely by being asked."""
    tables: dict[str, list[str]] = {}
    for family, cmd in (("ipv4", "iptables-save"), ("ipv6", "ip6tables-save")):
        try:
            text = subprocess.run([cmd], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            continue
        table = None
        for line in text.splitlines():
            if line.startswith("*"):
                table = f"{family}:{line[1:]}"
                tables[table] = []
            elif table and (line.startswith("-A ") or (line.startswith(":") and not re.match(r"^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ACCEPT", line))):
                tables[table].append(re.sub(r"\s*\[\d+:\d+\]$", "", line))
    return {t: sorted(rules) for t, rules in tables.items() if rules}


def _links() -> list[str]:
    text = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    names = (re.match(r"\d+: ([^:@]+)", line) for line in text.splitlines())
    return sorted(m.group(1) for m in names if m and not TRANSIENT_LINK.match(m.group(1)))


def _mounts() -> list[str]:
    return sorted({line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()})


def _cgroups() -> list[str]:
    base = Path("/sys/fs/cgroup")
    return sorted(str(p.relative_to(base)) for ctrl in base.iterdir() if ctrl.is_dir() for p in ctrl.iterdir() if p.is_dir())


def snapshot() -> dict:
    return {"sysctls": _sysctls(), "iptables": _iptables(), "links": _links(), "mounts": _mounts(),
            "cgroups": _cgroups(), "paths": sorted(p for p in RUNTIME_PATHS if os.path.lexists(p))}


def compare(before: dict, after: dict) -> list[str]:
    """Every way ``after`` differs from ``before``, one readable line each."""
    diffs = []
    for key in sorted(before["sysctls"].keys() & after["sysctls"].keys()):
        if before["sysctls"][key] != after["sysctls"][key]:
            diffs.append(f"sysctl {key.replace('/', '.')}: {before['sysctls'][key]} -> {after['sysctls'][key]}")
    for table in sorted(before["iptables"].keys() | after["iptables"].keys()):
        old, new = set(before["iptables"].get(table, [])), set(after["iptables"].get(table, []))
        diffs += [f"iptables {table}: added {rule}" for rule in sorted(new - old)]
        diffs += [f"iptables {table}: removed {rule}" for rule in sorted(old - new)]
    for kind in ("links", "mounts", "cgroups", "paths"):
        old, new = set(before[kind]), set(after[kind])
        diffs += [f"{kind[:-1]} added: {x}" for x in sorted(new - old)]
        diffs += [f"{kind[:-1]} removed: {x}" for x in sorted(old - new)]
    return diffs


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "snapshot":
        Path(argv[1]).write_text(json.dumps(snapshot(), indent=1))
        return 0
    if len(argv) == 2 and argv[0] == "compare":
        diffs = compare(json.loads(Path(argv[1]).read_text()), snapshot())
        for d in diffs:
            print(d)
        return 1 if diffs else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
