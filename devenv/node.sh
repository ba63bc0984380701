#!/usr/bin/env bash
# The devenv's real node: containerd + runc and dockerd from Debian, kubelet and kube-proxy built
# from the pinned K8S_VERSION, CNI bridge networking, the node advertising nvidia.com/gpu with the
# taint a GPU-operator node carries. Called by devenv/devenv.sh once the control plane answers:
#   devenv/node.sh up      start (idempotent), build/import the images (devenv/images.sh), wait Ready
#   devenv/node.sh runtime only the bridge, containerd and dockerd (enough for devenv/images.sh)
#   devenv/node.sh down    stop everything, restore the host, and fail if anything is left behind
# Needs root and cgroup v1 or v2; installs its Debian packages when they are missing.
#
# Host state, and how it is kept: the kubelet and kube-proxy run in a private mount namespace in
# which the sysctls they would rewrite host-wide are bind-mounted stand-in files; the kubelet root
# is a shared mount so its volume mounts still reach containerd. dockerd runs without iptables,
# ip forwarding or a bridge (builds use --network none). CNI uses a bridge of ours with no NAT.
# The host is snapshotted before the first start ($NODE_DIR/host-before.json) and compared after
# `down` (devenv/node/hoststate.py): any sysctl, iptables rule, link, mount, cgroup or runtime path
# that differs is named and `down` exits 1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR
source "$here/node/paths.sh"
K8S_BIN="$CACHE/kubernetes-$K8S_VERSION/bin"
APISERVER_PORT="${KUBESLIM_APISERVER_PORT:-16443}"
PKI="$DEVENV/kwok/clusters/kubeslim/pki"
KUBELET_ROOT="$NODE_DIR/kubelet"
CGROUP_ROOT=kubeslim-node
DOCKER_CGROUP=kubeslim-docker
# What the kubelet writes at start (pkg/kubelet/cm: setupKernelTunables) and kube-proxy may touch.
STANDIN_SYSCTLS="vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/conf/all/route_localnet net/netfilter/nf_conntrack_max net/netfilter/nf_conntrack_tcp_timeout_established net/netfilter/nf_conntrack_tcp_timeout_close_wait net/bridge/bridge-nf-call-iptables"

log() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[node] ERROR: %s\n  retry with: %s\n' "$1" "${2:-make devenv-down && make devenv}" >&2; exit 1; }
k() { "$K8S_BIN/kubectl" --kubeconfig "$DEVENV/kubeconfig" "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" "$@"; }
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# sandboxed NAME CMD...: exec CMD (in a session of its own) in a mount namespace of its own where
# the STANDIN_SYSCTLS are files of NAME's (copies of the host's values), so what CMD writes there
# never reaches the host. Run it in a subshell: it replaces the calling process.
sandboxed() {
  local dir="$NODE_DIR/sysctl-standins/$1"; shift
  # shellcheck disable=SC2016  # the script expands its own arguments, in the new namespace
  exec setsid unshare --mount --propagation unchanged -- bash -c '
    set -e
    dir="$1"; keys="$2"; shift 2
    # Private here, whatever propagation the host gives /proc: the stand-ins stay in this namespace.
    mount --make-rprivate /proc
    for key in $keys; do
      [ -e "/proc/sys/$key" ] || continue
      mkdir -p "$dir/$(dirname "$key")"
      cat "/proc/sys/$key" >"$dir/$key"
      mount --bind "$dir/$key" "/proc/sys/$key"
    done
    exec "$@"' _ "$dir" "$STANDIN_SYSCTLS" "$@"
}

make_bridge() {
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 || ip link add "$NODE_BRIDGE" type bridge
  local addrs; addrs="$(ip -o addr show dev "$NODE_BRIDGE")"
  grep -qF " $NODE_IP/" <<<"$addrs" || ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
}

write_cni() {
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/ipam"
  # No isGateway/ipMasq: the bridge already carries the node address, pods route through it to
  # this machine's own services, and no NAT or forwarding rule is ever written.
  cat >"$NODE_DIR/cni/net.d/10-kubeslim.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kubeslim",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0", "gw": "$NODE_IP"}]}},
    {"type": "loopback"}
  ]
}
EOF
}

# The devenv registry speaks plain http: containerd's CRI plugin reads this per pull (config_path),
# so kubelet pulls of $REGISTRY/... work with imagePullPolicy IfNotPresent and no import step.
write_registry_hosts() {
  mkdir -p "$REGISTRY_HOSTS_DIR/$REGISTRY"
  cat >"$REGISTRY_HOSTS_DIR/$REGISTRY/hosts.toml" <<EOF
# Written by devenv/node.sh: the devenv registry (devenv/devenv.sh), plain http on the node address.
server = "http://$REGISTRY"
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
}

containerd_config() {
  cat <<EOF
version = 2
root = "$NODE_CACHE/containerd"
state = "$NODE_RUN/containerd"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = "$NODE_RUN/containerd/debug.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_RUN/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_REF"
  # Without CAP_SYS_RESOURCE a container may not lower its oom_score_adj below ours.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$REGISTRY_HOSTS_DIR"
EOF
}

# Started once; a running one whose configuration differs from what this checkout writes (a
# devenv older than the registry) is restarted: containers keep running in their shims, and the
# kubelet and dockerd reconnect. The image build lock keeps a build from losing its containerd.
start_containerd() {
  write_registry_hosts
  if pid_alive "$NODE_DIR/containerd.pid"; then
    [ "$(containerd_config)" = "$(cat "$NODE_DIR/containerd.toml" 2>/dev/null)" ] && return
    log "containerd's configuration changed (registry hosts at $REGISTRY_HOSTS_DIR): restarting it; containers keep running"
    exec 7>"$DEVENV/images.lock"
    flock 7
    stop_pidfile "$NODE_DIR/containerd.pid" 10
  fi
  mkdir -p "$NODE_CACHE/containerd" "$NODE_RUN/containerd" "$NODE_DIR/logs"
  containerd_config >"$NODE_DIR/containerd.toml"
  setsid nohup containerd --config "$NODE_DIR/containerd.toml" >>"$NODE_DIR/logs/containerd.log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
  echo $! >"$NODE_DIR/containerd.pid"
  local _; for _ in $(seq 1 100); do ctr version >/dev/null 2>&1 && { exec 7>&-; return; }; sleep 0.1; done
  die "containerd did not answer on $CONTAINERD_SOCK (log: $NODE_DIR/logs/containerd.log)"
}

start_dockerd() {
  # Its own config file: the host's /etc/docker/daemon.json is not ours to read or write. It only
  # lets devenv/images.sh push to the devenv registry over plain http, an option dockerd reloads on
  # SIGHUP, so a running dockerd takes it without a restart.
  local config; config="{\"insecure-registries\": [\"$REGISTRY\"]}"
  if pid_alive "$NODE_DIR/dockerd.pid"; then
    [ "$config" = "$(cat "$NODE_DIR/dockerd.json" 2>/dev/null)" ] && return
    echo "$config" >"$NODE_DIR/dockerd.json"
    kill -HUP "$(cat "$NODE_DIR/dockerd.pid")"
    log "dockerd reloaded $NODE_DIR/dockerd.json (insecure registry $REGISTRY)"
    return
  fi
  mkdir -p "$NODE_CACHE/docker" "$NODE_RUN/docker"
  echo "$config" >"$NODE_DIR/dockerd.json"
  setsid nohup dockerd --data-root "$NODE_CACHE/docker" --exec-root "$NODE_RUN/docker" --pidfile "$NODE_RUN/docker/dockerd.pid" \
    -H "unix://$DOCKER_SOCK" --containerd "$CONTAINERD_SOCK" --iptables=false --ip-forward=false --ip-masq=false \
    --bridge=none --cgroup-parent "/$DOCKER_CGROUP" --storage-driver overlay2 --config-file "$NODE_DIR/dockerd.json" \
    >>"$NODE_DIR/logs/dockerd.log" 2>&1 </dev/null 7>&- 8>&- 9>&- &
  echo $! >"$NODE_DIR/dockerd.pid"
  local _; for _ in $(seq 1 150); do DOCKER_HOST="unix://$DOCKER_SOCK" "$DOCKER_CLI" version >/dev/null 2>&1 && return; sleep 0.2; done
  die "dockerd did not answer on $DOCKER_SOCK (log: $NODE_DIR/logs/dockerd.log)"
}

# client_cert NAME SUBJECT: a client certificate signed by the cluster CA kwokctl made.
client_cert() {
  local out="$NODE_DIR/pki/$1"
  # A certificate of an earlier cluster (another CA) would be Unauthorized: only this CA's counts.
  [ -f "$out.crt" ] && openssl verify -CAfile "$PKI/ca.crt" "$out.crt" >/dev/null 2>&1 && return
  mkdir -p "$NODE_DIR/pki"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$out.key" -subj "$2" -out "$out.csr" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -CAserial "$NODE_DIR/pki/ca.srl" \
    -days 365 -out "$out.crt" 2>/dev/null
  chmod 600 "$out.key"
}

# kubeconfig NAME: for the kubelet or kube-proxy, with the client cert of that name.
kubeconfig() {
  cat >"$NODE_DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: devenv, cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}}]
users: [{name: $1, user: {client-certificate: "$NODE_DIR/pki/$1.crt", client-key: "$NODE_DIR/pki/$1.key"}}]
contexts: [{name: $1, context: {cluster: devenv, user: $1}}]
current-context: $1
EOF
}

start_kubelet() {
  pid_alive "$NODE_DIR/kubelet.pid" && return
  mkdir -p "$KUBELET_ROOT" "$NODE_DIR/pod-logs" "$NODE_DIR/volume-plugins"
  # Shared, so the secret and token tmpfs mounts the kubelet makes in its namespace reach containerd.
  if ! grep -qF " $KUBELET_ROOT " /proc/self/mountinfo; then
    mount --bind "$KUBELET_ROOT" "$KUBELET_ROOT"
    mount --make-rshared "$KUBELET_ROOT"
  fi
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
# Only the apiserver holds a certificate of the cluster CA that reaches this port.
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
podLogsDir: $NODE_DIR/pod-logs
volumePluginDir: $NODE_DIR/volume-plugins
registerWithTaints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]
maxPods: 40
serializeImagePulls: false
# The host disk is shared with everything else on it: never evict or collect images for it.
evictionHard: {memory.available: 200Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
shutdownGracePeriod: 0s
EOF
  # The kubelet insists that its cgroup root exists in every hierarchy (cgroup v1).
  local ctrl
  for ctrl in /sys/fs/cgroup/*/; do
    [ -f "$ctrl/cgroup.procs" ] && mkdir -p "$ctrl$CGROUP_ROOT"
  done
  local labels="nvidia.com/gpu.present=true,nvidia.com/gpu.count=$NODE_GPUS,node.kubernetes.io/instance-type=kubeslim-devenv,kubeslim.io/node=real"
  (sandboxed kubelet "$K8S_BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" --kubeconfig "$NODE_DIR/kubelet.kubeconfig" \
    --root-dir "$KUBELET_ROOT" --cert-dir "$NODE_DIR/pki/kubelet-serving" --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" --node-labels "$labels") >"$NODE_DIR/logs/kubelet.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$NODE_DIR/kubelet.pid"
}

start_kube_proxy() {
  pid_alive "$NODE_DIR/kube-proxy.pid" && return
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$NODE_DIR/kube-proxy.kubeconfig"}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
# Zeros leave the host's conntrack sysctls alone; no localhost NodePorts, so no route_localnet.
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  (sandboxed kube-proxy "$K8S_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml") \
    >"$NODE_DIR/logs/kube-proxy.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$NODE_DIR/kube-proxy.pid"
}

# Pods reach the apiserver through the kubernetes Service, whose endpoint is the node address the
# apiserver advertises; the apiserver itself listens on loopback, so a forwarder bridges the two.
start_apiserver_forwarder() {
  pid_alive "$NODE_DIR/apiserver-forwarder.pid" && return
  setsid nohup socat "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,fork,reuseaddr" "TCP:127.0.0.1:$APISERVER_PORT" \
    >"$NODE_DIR/logs/apiserver-forwarder.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$NODE_DIR/apiserver-forwarder.pid"
  # socat exits at once when the address is taken (a forwarder that outlived its node did, in a CI
  # run): said here, not later as a devenv that turns unhealthy and is torn down mid-test.
  sleep 0.3
  pid_alive "$NODE_DIR/apiserver-forwarder.pid" || \
    die "the apiserver forwarder on $NODE_IP:$APISERVER_PORT exited: $(tail -1 "$NODE_DIR/logs/apiserver-forwarder.log")" \
      "stop what listens on $NODE_IP:$APISERVER_PORT (ss -ltnp), then make devenv"
}

# The documented way to advertise an extended resource: a JSON patch on the node's status.
advertise_gpus() {
  k patch node "$NODE_NAME" --subresource=status --type=json \
    -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$NODE_GPUS\"}]" >/dev/null
}

# A node whose processes were killed without its teardown (a session that ended, a machine whose
# processes went while its kernel state stayed) leaves our bridge, cgroups, mounts and kube-proxy's
# chains behind. A first snapshot taken over them would have this node's `down` report them as
# "removed" and fail (a CI run did). They carry this project's names and nothing runs in them, so
# they go before that snapshot; a node that is still running belongs to another devenv and stops it.
clear_dead_node_leftovers() {
  local left=() ctrl
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && left+=("link $NODE_BRIDGE")
  for ctrl in /sys/fs/cgroup/*; do
    [ -d "$ctrl/$CGROUP_ROOT" ] || [ -d "$ctrl/$DOCKER_CGROUP" ] && { left+=("cgroups $CGROUP_ROOT, $DOCKER_CGROUP"); break; }
  done
  awk -v r="$NODE_RUN" -v c="$NODE_CACHE" '$5 == r || index($5, r "/") == 1 || $5 == c || index($5, c "/") == 1 {found=1} END {exit !found}' \
    /proc/self/mountinfo && left+=("mounts under $NODE_RUN, $NODE_CACHE")
  local forwarders; forwarders="$(pgrep -f -- "TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP," | tr '\n' ' ' || true)"
  [ -n "$forwarders" ] && left+=("apiserver forwarder ${forwarders% }")
  [ "${#left[@]}" -eq 0 ] && return 0
  local what; what="$(printf '%s; ' "${left[@]}")"; what="${what%; }"
  if ctr version >/dev/null 2>&1 || pgrep -f -- "--exec-root $NODE_RUN/docker" >/dev/null; then
    die "another devenv's real node is running on this host ($what)" "make devenv-down in the checkout that started it, then make devenv"
  fi
  log "clearing what a node killed without its teardown left on this host: $what"
  # shellcheck disable=SC2086  # one pid per word
  [ -n "$forwarders" ] && { kill $forwarders 2>/dev/null || true; }
  unmount_under "$NODE_RUN" "$NODE_CACHE"
  remove_iptables
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && ip link del "$NODE_BRIDGE"
  remove_cgroups
}

# The container runtimes alone (enough to build and import images).
runtime() {
  [ "$(id -u)" = 0 ] || die "the real node needs root (kubelet, containerd, mounts, cgroups)" "sudo make devenv"
  "$REPO/hack/host-packages.sh" node || die "installing the real node's Debian packages failed (root needed: sudo make devenv)"
  mkdir -p "$NODE_DIR/logs"
  if [ ! -f "$NODE_DIR/host-before.json" ]; then
    clear_dead_node_leftovers
    python3 "$here/node/hoststate.py" snapshot "$NODE_DIR/host-before.json"
  fi
  make_bridge
  write_cni
  start_containerd
  start_dockerd
}

up() {
  local t0; t0=$(date +%s.%N)
  runtime
  local t_daemons; t_daemons=$(python3 -c "print(round($(date +%s.%N) - $t0, 2))")
  "$here/images.sh"
  local t1; t1=$(date +%s.%N)
  client_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  client_cert kube-proxy "/CN=system:kube-proxy"
  kubeconfig kubelet; kubeconfig kube-proxy
  start_apiserver_forwarder
  start_kubelet
  start_kube_proxy
  local _
  for _ in $(seq 1 300); do
    k get node "$NODE_NAME" >/dev/null 2>&1 && break
    pid_alive "$NODE_DIR/kubelet.pid" || break
    sleep 0.2
  done
  k get node "$NODE_NAME" >/dev/null 2>&1 || { tail -20 "$NODE_DIR/logs/kubelet.log" >&2; die "the kubelet never registered node $NODE_NAME (log: $NODE_DIR/logs/kubelet.log)"; }
  local t_registered; t_registered=$(python3 -c "print(round($(date +%s.%N) - $t1, 2))")
  advertise_gpus
  k wait --for=condition=Ready "node/$NODE_NAME" --timeout=120s >/dev/null \
    || { tail -20 "$NODE_DIR/logs/kubelet.log" >&2; die "node $NODE_NAME did not become Ready (log: $NODE_DIR/logs/kubelet.log)"; }
  python3 - "$NODE_DIR/timings.json" "$t_daemons" "$t_registered" "$(python3 -c "print(round($(date +%s.%N) - $t1, 2))")" <<'PY'
import json, sys
json.dump({"daemons_seconds": float(sys.argv[2]), "kubelet_registered_seconds": float(sys.argv[3]),
           "node_ready_seconds": float(sys.argv[4])}, open(sys.argv[1], "w"), indent=2)
PY
  log "node $NODE_NAME Ready at $NODE_IP (nvidia.com/gpu: $NODE_GPUS); logs in $NODE_DIR/logs"
}

stop_pidfile() {   # stop_pidfile FILE [SECONDS]: TERM, then KILL after SECONDS
  local f="$1" pid _
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $(( ${2:-10} * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$f"
}

# Every container of every pod, and every container of a docker build: killed and deleted, so
# their mounts, network namespaces and cgroups go with them.
remove_containers() {
  ctr version >/dev/null 2>&1 || return 0
  local ns id
  for ns in $(ctr namespaces ls -q); do
    for id in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do ctr -n "$ns" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr -n "$ns" tasks ls -q 2>/dev/null); do
      for _ in 1 2 3 4 5 6 7 8 9 10; do ctr -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 && break; sleep 0.2; done
    done
    for id in $(ctr -n "$ns" containers ls -q 2>/dev/null); do ctr -n "$ns" containers delete "$id" >/dev/null 2>&1 || true; done
  done
}

unmount_under() {   # unmount_under DIR...: every mount at or below each DIR, deepest first
  local d m
  for d in "$@"; do
    awk -v d="$d" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
}

remove_iptables() {
  # kube-proxy's own cleanup first; then any chain of ours it did not know about.
  [ -x "$K8S_BIN/kube-proxy" ] && [ -f "$NODE_DIR/kube-proxy.yaml" ] && \
    (sandboxed kube-proxy-cleanup "$K8S_BIN/kube-proxy" --cleanup --config "$NODE_DIR/kube-proxy.yaml") >"$NODE_DIR/logs/kube-proxy-cleanup.log" 2>&1 || true
  local save table chain
  for save in iptables ip6tables; do
    command -v "$save" >/dev/null || continue
    for table in filter nat mangle raw; do
      { "$save" -t "$table" -S 2>/dev/null || true; } | sed -n 's/^-A \(.*-j \(KUBE\|CNI\)-.*\)$/-D \1/p' | while read -r rule; do
        # -S prints rules shell-quoted (--comment "kubernetes service portals"): eval, not word splitting.
        eval "\"\$save\" -t \"\$table\" $rule" 2>/dev/null || true
      done
      for chain in $("$save" -t "$table" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p'); do
        "$save" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$save" -t "$table" -S 2>/dev/null | sed -n 's/^-N \(\(KUBE\|CNI\)-[^ ]*\)$/\1/p'); do
        "$save" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
}

remove_cgroups() {
  local ctrl dir
  for ctrl in /sys/fs/cgroup/*; do
    for dir in "$ctrl/$CGROUP_ROOT" "$ctrl/$DOCKER_CGROUP"; do
      [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
  done
}

down() {
  mkdir -p "$NODE_DIR"
  # Pods first, while the kubelet can still tear their sandboxes down through CNI.
  if [ -f "$DEVENV/kubeconfig" ] && pid_alive "$NODE_DIR/kubelet.pid" && k get node "$NODE_NAME" >/dev/null 2>&1; then
    k delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local _; for _ in $(seq 1 50); do
      [ -z "$(ctr -n k8s.io tasks ls -q 2>/dev/null)" ] && break; sleep 0.2
    done
    k delete node "$NODE_NAME" --wait=false >/dev/null 2>&1 || true
  fi
  stop_pidfile "$NODE_DIR/kubelet.pid" 10
  stop_pidfile "$NODE_DIR/kube-proxy.pid" 5
  stop_pidfile "$NODE_DIR/apiserver-forwarder.pid" 2
  remove_containers
  stop_pidfile "$NODE_DIR/dockerd.pid" 15
  stop_pidfile "$NODE_DIR/containerd.pid" 10
  # Shims outlive a killed containerd; theirs are the ones started with our socket.
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do kill -KILL "$p" 2>/dev/null || true; done
  unmount_under "$NODE_RUN" "$KUBELET_ROOT" "$NODE_CACHE" /run/containerd /run/docker
  remove_iptables
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && ip link del "$NODE_BRIDGE"
  remove_cgroups
  # The kubelet links every container log into /var/log/containers, a path it does not let us move.
  find /var/log/containers -maxdepth 1 -lname "$NODE_DIR/*" -delete 2>/dev/null || true
  rm -rf "$NODE_RUN" "$KUBELET_ROOT" "$NODE_DIR/cni" "$REGISTRY_HOSTS_DIR" "$NODE_DIR/sysctl-standins" "$NODE_DIR/pki" "$NODE_DIR"/*.pid "$NODE_DIR"/*.kubeconfig
  if [ -f "$NODE_DIR/host-before.json" ]; then
    # Paths the runtimes create on their own whatever they are told (dockerd's /run/docker/plugins,
    # the kubelet's /usr/libexec/kubernetes, the shims' /run/containerd/s) that did not exist
    # before: ours to remove, and nothing else is in them once our daemons are gone.
    local path
    for path in $(python3 -c 'import json,sys; sys.path.insert(0, sys.argv[2]); import hoststate; before=set(json.load(open(sys.argv[1]))["paths"]); print(" ".join(p for p in hoststate.RUNTIME_PATHS if p not in before))' "$NODE_DIR/host-before.json" "$here/node"); do
      for _ in 1 2 3; do [ -e "$path" ] || break; rm -rf "$path" 2>/dev/null || sleep 0.5; done
    done
    if ! python3 "$here/node/hoststate.py" compare "$NODE_DIR/host-before.json" >"$NODE_DIR/host-diff.txt"; then
      sed 's/^/  /' "$NODE_DIR/host-diff.txt" >&2
      die "the host differs from before the node started (listed above; also in $NODE_DIR/host-diff.txt)" "make devenv-down"
    fi
    rm -f "$NODE_DIR/host-before.json" "$NODE_DIR/host-diff.txt"
  fi
  log "node stopped; host state as before it started"
}

status() {
  local f ok=0
  for f in containerd dockerd kubelet kube-proxy apiserver-forwarder; do
    if pid_alive "$NODE_DIR/$f.pid"; then printf '  %-24s up    pid %s\n' "$f" "$(cat "$NODE_DIR/$f.pid")"; else printf '  %-24s DOWN\n' "$f"; ok=1; fi
  done
  local ready=""
  [ -f "$DEVENV/kubeconfig" ] && ready="$(k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  if [ "$ready" = True ]; then printf '  %-24s Ready %s\n' "node/$NODE_NAME" "$NODE_IP"; else printf '  %-24s NOT READY\n' "node/$NODE_NAME"; ok=1; fi
  return $ok
}

# Node loss, for the chaos suite (tests/cluster/test_chaos_node.py). stop-daemons stops the kubelet
# and containerd as `down` does, but leaves the pods' containers running in their shims: the node
# is cut off from the control plane, as when its host hangs or its network goes. start-daemons
# starts what of the node is down the way `up` does (no image build: nothing changed) and waits for
# the node to be Ready again. Callers hold $DEVENV/images.lock meanwhile, so no build loses its
# containerd: kubeslim_dev.devenv.node_daemons_stopped does both.
stop_daemons() {
  stop_pidfile "$NODE_DIR/kubelet.pid" 10
  stop_pidfile "$NODE_DIR/containerd.pid" 10
}

start_daemons() {
  start_containerd
  start_dockerd
  start_apiserver_forwarder
  start_kubelet
  start_kube_proxy
  k wait --for=condition=Ready "node/$NODE_NAME" --timeout=180s >/dev/null \
    || { tail -20 "$NODE_DIR/logs/kubelet.log" >&2; die "node $NODE_NAME did not become Ready again (log: $NODE_DIR/logs/kubelet.log)"; }
  log "node $NODE_NAME Ready again"
}

case "${1:-}" in
  up) up ;;
  runtime) runtime ;;
  down) down ;;
  status) status ;;
  stop-daemons) stop_daemons ;;
  start-daemons) start_daemons ;;
  *) echo "usage: $0 up|down|status|stop-daemons|start-daemons" >&2; exit 2 ;;
esac
