#!/usr/bin/env bash
# Installs the Debian packages the venv, the tests and the demo need, only those missing, so that
# `make test` and `make demo` work on a fresh machine on their own (not only under .ci/run).
# The real node's packages (containerd, dockerd, CNI plugins, ...) are hack/node.sh's.
set -euo pipefail
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v git >/dev/null || missing+=(git)
command -v flock >/dev/null || missing+=(util-linux)
command -v ss >/dev/null || missing+=(iproute2)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# paddlepaddle's wheel links these from the system.
have_lib() { /sbin/ldconfig -p 2>/dev/null | grep -q "$1"; }
have_lib libgomp.so.1 || missing+=(libgomp1)
have_lib libstdc++.so.6 || missing+=(libstdc++6)
[ "${#missing[@]}" = 0 ] && exit 0
echo "[host-packages] installing Debian packages: ${missing[*]}" >&2
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
