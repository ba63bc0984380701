#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those missing, so that `make test` and
# `make demo` work on a fresh machine on their own (not only under .ci/run).
#   usage: hack/host-packages.sh          the venv, the tests and the demo
#          hack/host-packages.sh node     also the real node's (devenv/node.sh): runtimes, CNI, ...
set -euo pipefail
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }   # need COMMAND PACKAGE
need curl curl
need git git
need flock util-linux
need ss iproute2
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# paddlepaddle's wheel links these from the system.
have_lib() { /sbin/ldconfig -p 2>/dev/null | grep -q "$1"; }
have_lib libgomp.so.1 || missing+=(libgomp1)
have_lib libstdc++.so.6 || missing+=(libstdc++6)
if [ "${1:-}" = node ]; then
  need containerd containerd; need runc runc; need dockerd docker.io; need debootstrap debootstrap
  need iptables iptables; need socat socat; need conntrack conntrack; need unshare util-linux
  need ip iproute2; need openssl openssl
  # The devenv's Prometheus server (scrapes the operator's metrics; version noted in versions.env).
  need prometheus prometheus
  for plugin in bridge host-local loopback; do [ -x "/usr/lib/cni/$plugin" ] || { missing+=(containernetworking-plugins); break; }; done
fi
[ "${#missing[@]}" = 0 ] && exit 0
echo "[host-packages] installing Debian packages: ${missing[*]}" >&2
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
# No daemon (dockerd, containerd) may start on its own: policy-rc.d refuses it for the length of
# the install, and goes again however the install ends.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  $sudo sh -c "printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
