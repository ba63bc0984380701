# Where the devenv's real node keeps its state; sourced by devenv/node.sh, devenv/images.sh,
# devenv/kueue.sh and devenv/devenv.sh. Sets REPO, CACHE and DEVENV too, and reads the pinned versions.
#   persistent (survives make devenv-down, like the tool cache): $CACHE/node/{containerd,docker}
#     hold the imported and built images, so a warm start neither rebuilds nor re-imports them;
#   per devenv: $DEVENV/node (configs, certs, kubelet root, pod logs, CNI), $NODE_RUN (sockets,
#     runtime state, network namespaces).
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source-path=SCRIPTDIR/../..
source "$REPO/hack/versions.env"
CACHE="${KUBESLIM_CACHE:-$HOME/.cache/kubeslim}"
DEVENV="${KUBESLIM_DEVENV_DIR:-$REPO/.devenv}"
NODE_NAME="${KUBESLIM_NODE_NAME:-kubeslim-node-0}"
# The node's own address lives on a bridge this project creates: pods reach the apiserver and S3
# through it, and nothing on it routes anywhere but this machine.
NODE_BRIDGE="${KUBESLIM_NODE_BRIDGE:-kubeslim0}"
NODE_IP="${KUBESLIM_NODE_IP:-10.77.0.1}"
POD_CIDR="${KUBESLIM_POD_CIDR:-10.77.0.0/24}"
NODE_GPUS="${KUBESLIM_NODE_GPUS:-4}"
# The devenv's registry (devenv/devenv.sh): plain http on the node address. make images pushes there,
# the node's containerd pulls from there (hosts.toml under REGISTRY_HOSTS_DIR), helm pushes charts.
REGISTRY_PORT="${KUBESLIM_REGISTRY_PORT:-16500}"
REGISTRY="$NODE_IP:$REGISTRY_PORT"
KUBELET_PORT="${KUBESLIM_KUBELET_PORT:-16250}"
KUBELET_HEALTHZ_PORT="${KUBESLIM_KUBELET_HEALTHZ_PORT:-16248}"
KUBE_PROXY_HEALTHZ_PORT="${KUBESLIM_KUBE_PROXY_HEALTHZ_PORT:-16256}"
KUBE_PROXY_METRICS_PORT="${KUBESLIM_KUBE_PROXY_METRICS_PORT:-16249}"
NODE_CACHE="$CACHE/node"
NODE_DIR="$DEVENV/node"
NODE_RUN="${KUBESLIM_NODE_RUN:-/run/kubeslim}"
# containerd's registry host configuration (certs.d layout), ours and not the host's /etc/containerd.
REGISTRY_HOSTS_DIR="$NODE_DIR/certs.d"
CONTAINERD_SOCK="$NODE_RUN/containerd/containerd.sock"
DOCKER_SOCK="$NODE_RUN/docker.sock"
# Debian's docker client (20.10) speaks the API of Debian's dockerd; another docker on PATH may not.
DOCKER_CLI="${KUBESLIM_DOCKER_CLI:-/usr/bin/docker}"
IMAGE_PREFIX=kubeslim.local
# The sandbox image is named by its source, so containerd's config can name it before it is built.
PAUSE_REF="$IMAGE_PREFIX/pause:$(cat "$REPO/devenv/node/pause/main.go" "$REPO/devenv/node/pause/go.mod" | sha256sum | cut -c1-12)"
