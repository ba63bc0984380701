"""The comparison `make devenv-down` uses to prove the real node left the host as it found it
(devenv/node/hoststate.py): every kind of leftover is named, and what moves by itself is not."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("hoststate", Path(__file__).resolve().parents[2] / "devenv/node/hoststate.py")
hoststate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hoststate)

pytestmark = pytest.mark.unit

BEFORE = {
    "sysctls": {"net/ipv4/ip_forward": "0", "vm/overcommit_memory": "0"},
    "iptables": {"ipv4:filter": ["-A INPUT -s 10.1.0.0/16 -j ACCEPT"]},
    "links": ["eth0", "lo"],
    "mounts": ["/", "/proc"],
    "cgroups": ["memory/user.slice"],
    "paths": [],
}


def changed(**kinds) -> dict:
    return {**BEFORE, **kinds}


@pytest.mark.parametrize("after, expected", [
    (BEFORE, []),
    (changed(sysctls={"net/ipv4/ip_forward": "1", "vm/overcommit_memory": "0"}), ["sysctl net.ipv4.ip_forward: 0 -> 1"]),
    # A sysctl that exists only on one side (an interface's) is not a change of the host's.
    (changed(sysctls={**BEFORE["sysctls"], "net/ipv4/conf/kubeslim0/forwarding": "1"}), []),
    (changed(iptables={"ipv4:filter": BEFORE["iptables"]["ipv4:filter"], "ipv4:nat": [":KUBE-SERVICES -"]}),
     ["iptables ipv4:nat: added :KUBE-SERVICES -"]),
    (changed(iptables={}), ["iptables ipv4:filter: removed -A INPUT -s 10.1.0.0/16 -j ACCEPT"]),
    (changed(links=["eth0", "kubeslim0", "lo"]), ["link added: kubeslim0"]),
    (changed(mounts=["/", "/proc", "/run/kubeslim/containerd/x/rootfs"]), ["mount added: /run/kubeslim/containerd/x/rootfs"]),
    (changed(cgroups=["memory/kubeslim-node", "memory/user.slice"]), ["cgroup added: memory/kubeslim-node"]),
    (changed(paths=["/var/log/containers"]), ["path added: /var/log/containers"]),
])
def test_compare_names_every_leftover(after, expected):
    assert hoststate.compare(BEFORE, after) == expected


@pytest.mark.parametrize("key, volatile", [
    ("kernel/random/entropy_avail", True),
    ("fs/file-nr", True),
    ("net/ipv4/conf/veth1234/forwarding", True),
    ("net/ipv4/conf/all/forwarding", False),
    ("net/ipv4/ip_forward", False),
    ("vm/overcommit_memory", False),
    ("kernel/panic", False),
])
def test_only_values_that_move_by_themselves_are_ignored(key, volatile):
    assert bool(hoststate.VOLATILE_SYSCTLS.match(key)) is volatile


def test_links_of_pods_are_transient():
    assert hoststate.TRANSIENT_LINK.match("veth3c9a1b2f")
    assert not hoststate.TRANSIENT_LINK.match("kubeslim0")
