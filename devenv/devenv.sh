#!/usr/bin/env bash
# The local dev cluster: a real control plane (etcd, kube-apiserver with RBAC + ServiceAccount
# admission, kube-controller-manager, kube-scheduler) on 127.0.0.1, kwok-run fake GPU/CPU nodes,
# a real node (devenv/node.sh: kubelet + containerd + kube-proxy + CNI, running the images our
# Dockerfile builds) and a real S3 server (versitygw) on the node's own address, all from
# binaries built by hack/build-tools.sh and Debian packages. A registry (CNCF distribution) on the
# node's address holds the images make images pushes and the chart make demo pushes.
# kwokctl's binary runtime runs the control plane processes; this script adds the fake nodes,
# the real node, the S3 server and the files clients need:
#   .devenv/kubeconfig  admin kubeconfig (cluster named kubeslim-devenv-<id>)
#   .devenv/devenv-id   <id>: proves a kubeconfig was written by this script (tests check it)
#   .devenv/s3.env      AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
#   .devenv/env         `source` it: PATH with our kubectl/helm, KUBECONFIG, the S3 variables
#   .devenv/devenv.json ports, endpoints (the registry's too), binaries; .devenv/timings.json start-to-ready seconds
#
#   usage: devenv/devenv.sh up|down|status        (make devenv / devenv-down / devenv-status)
#          devenv/devenv.sh stop|start|restart <component>   outages on purpose (etcd, kube-apiserver,
#          kube-controller-manager, kube-scheduler, kwok-controller, s3, registry); otherwise any of them that
#          exits is started again by devenv/supervise.py
# Ports, all on 127.0.0.1, are set below (KUBESLIM_*_PORT overrides each): apiserver 16443, S3 16900, ...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$here/.." && pwd)"
HERE_NODE="$here/node.sh"
# shellcheck source=hack/versions.env
source "$REPO/hack/versions.env"
CACHE="${KUBESLIM_CACHE:-$HOME/.cache/kubeslim}"
DEVENV="${KUBESLIM_DEVENV_DIR:-$REPO/.devenv}"
CLUSTER=kubeslim
export KWOK_WORKDIR="$DEVENV/kwok"
CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER"
# shellcheck source-path=SCRIPTDIR
source "$here/node/paths.sh"
# The first address of the apiserver's service range: the kubernetes Service pods talk to.
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_SERVICE_IP=10.96.0.1

APISERVER_PORT="${KUBESLIM_APISERVER_PORT:-16443}"
ETCD_PORT="${KUBESLIM_ETCD_PORT:-16379}"
ETCD_PEER_PORT="${KUBESLIM_ETCD_PEER_PORT:-16380}"
KCM_PORT="${KUBESLIM_KCM_PORT:-16257}"
SCHEDULER_PORT="${KUBESLIM_SCHEDULER_PORT:-16259}"
KWOK_PORT="${KUBESLIM_KWOK_PORT:-16247}"
S3_PORT="${KUBESLIM_S3_PORT:-16900}"
PROMETHEUS_PORT="${KUBESLIM_PROMETHEUS_PORT:-16990}"

K8S_BIN="$CACHE/kubernetes-$K8S_VERSION/bin"
ETCD_BIN="$CACHE/etcd-$ETCD_VERSION/bin"
KWOK_BIN="$CACHE/kwok-$KWOK_VERSION/bin"
HELM_BIN="$CACHE/helm-$HELM_VERSION/bin"
S3_BIN="$CACHE/versitygw-$VERSITYGW_VERSION/bin"
REGISTRY_BIN="$CACHE/registry-$REGISTRY_VERSION/bin/registry"
# Only what the devenv runs: the GitOps judges, Kueue and actionlint serve tests alone and are
# built when a test (tests/gitops.py, tests/cluster/built_tools.py) or devenv/kueue.sh first needs them.
DEVENV_TOOLS="etcd kwok helm s3 registry kubernetes"
KUBECTL="$K8S_BIN/kubectl"
KWOKCTL="$KWOK_BIN/kwokctl"
S3_DIR="$DEVENV/s3"
REGISTRY_DIR="$DEVENV/registry"
PROMETHEUS_DIR="$DEVENV/prometheus"
PROMETHEUS_BIN=/usr/bin/prometheus

log() { printf '[devenv %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[devenv] ERROR: %s\n  retry with: %s\n' "$1" "${2:-make devenv}" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round($(now) - $1, 2))"; }

# name=url pairs for devenv/probe.py ('~' = any HTTP answer counts: S3 needs signatures).
probe_targets() {
  echo "etcd=http://127.0.0.1:$ETCD_PORT/health"
  echo "kube-apiserver=https://127.0.0.1:$APISERVER_PORT/readyz"
  echo "kube-controller-manager=https://127.0.0.1:$KCM_PORT/healthz"
  echo "kube-scheduler=https://127.0.0.1:$SCHEDULER_PORT/healthz"
  echo "kwok-controller=~https://127.0.0.1:$KWOK_PORT/healthz"
  echo "s3=~http://$NODE_IP:$S3_PORT/"
}
probe() { python3 "$here/probe.py" "$@"; }
# Started once the kubeconfig its discovery reads exists, so probed apart from the others.
prometheus_target() { echo "prometheus=http://127.0.0.1:$PROMETHEUS_PORT/-/ready"; }
# Added to a running devenv by `make devenv` (ensure_registry), so not part of what healthy() asks:
# a devenv started before the registry existed is healthy and gets one, not a fresh start.
registry_target() { echo "registry=http://$REGISTRY/v2/"; }

# What a running devenv was started with: the pins of what it runs and the kwokctl configuration
# (not script edits, not the pins of tools it does not run, such as Kueue's or a Go toolchain's).
config_hash() {
  { echo "$K8S_VERSION $ETCD_VERSION $KWOK_VERSION $VERSITYGW_VERSION $PROMETHEUS_DEBIAN_VERSION"; kwokctl_config; } | sha256sum | cut -c1-16
}

tools_present() {
  local b
  for b in "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager" "$K8S_BIN/kube-scheduler" "$KUBECTL" \
           "$ETCD_BIN/etcd" "$KWOK_BIN/kwok" "$KWOKCTL" "$HELM_BIN/helm" "$S3_BIN/versitygw" "$REGISTRY_BIN"; do
    [ -x "$b" ] || return 1
  done
}

ensure_tools() {
  tools_present && return
  command -v go >/dev/null || die "the devenv binaries are not built yet ($CACHE) and no Go toolchain is on PATH: install Go >= 1.24 (https://go.dev/dl)" "make tools && make devenv"
  log "building missing tools: $DEVENV_TOOLS (cached in $CACHE; cold, kubernetes alone took about 10 min on 2 cores)"
  # shellcheck disable=SC2086
  "$REPO/hack/build-tools.sh" $DEVENV_TOOLS || die "building the devenv tools failed (see the build output above)" "make tools && make devenv"
  tools_present || die "hack/build-tools.sh finished but binaries are missing under $CACHE" "make tools && make devenv"
}

# port_free PORT: nothing listens on 127.0.0.1:PORT (SO_REUSEADDR so TIME_WAIT leftovers don't count).
port_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

check_ports() {
  local spec name port var owner
  for spec in kube-apiserver:$APISERVER_PORT:KUBESLIM_APISERVER_PORT etcd:$ETCD_PORT:KUBESLIM_ETCD_PORT \
              etcd-peer:$ETCD_PEER_PORT:KUBESLIM_ETCD_PEER_PORT kube-controller-manager:$KCM_PORT:KUBESLIM_KCM_PORT \
              kube-scheduler:$SCHEDULER_PORT:KUBESLIM_SCHEDULER_PORT kwok-controller:$KWOK_PORT:KUBESLIM_KWOK_PORT \
              s3:$S3_PORT:KUBESLIM_S3_PORT prometheus:$PROMETHEUS_PORT:KUBESLIM_PROMETHEUS_PORT \
              registry:$REGISTRY_PORT:KUBESLIM_REGISTRY_PORT; do
    IFS=: read -r name port var <<<"$spec"
    if ! port_free "$port"; then
      owner="$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -1 || true)"
      die "port $port on 127.0.0.1 (for $name) is already in use${owner:+ by $owner}. Stop that process, or pick another port with $var=<port>" \
          "make devenv   (or: $var=<free port> make devenv)"
    fi
  done
}

# Our processes: an executable from the tool cache whose command line names this devenv dir.
# (Never matched by name alone: other engineers' processes are left alone.)
devenv_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null)" || continue
    case "$exe" in "$CACHE"/*) ;; *) continue ;; esac
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$DEVENV/" && echo "${p#/proc/}"
  done
  return 0
}

SUPERVISE_DIR="$DEVENV/supervise"
SUPERVISED="etcd kube-apiserver kube-controller-manager kube-scheduler kwok-controller s3 prometheus registry"
pidfile_of() {
  case "$1" in
    s3) echo "$S3_DIR/pid" ;; prometheus) echo "$PROMETHEUS_DIR/pid" ;; registry) echo "$REGISTRY_DIR/pid" ;;
    *) echo "$CLUSTER_DIR/pids/$1.pid" ;;
  esac
}
# Ours is the one that holds this devenv's hold dir, whatever path its script had when it started
# (one started before the devenv moved out of hack/ is still this devenv's, and must not get a twin).
supervisor_running() {
  local pid; pid="$(cat "$SUPERVISE_DIR/pid" 2>/dev/null)" || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "supervise.py --hold-dir $SUPERVISE_DIR/hold "
}
# It watches what its command line names: one started before a component existed here (the
# registry, on a devenv older than it) is replaced by one that watches every component.
supervisor_watches_all() {
  local cmdline name; cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$(cat "$SUPERVISE_DIR/pid")/cmdline")"
  for name in $SUPERVISED; do grep -qF " $name=$(pidfile_of "$name")" <<<"$cmdline" || return 1; done
}
# devenv/supervise.py restarts any of them that exits, as a node's kubelet would.
ensure_supervisor() {
  if supervisor_running; then
    supervisor_watches_all && return
    log "the running supervisor does not watch every component ($SUPERVISED): starting it again"
    stop_supervisor
  fi
  local name args=()
  for name in $SUPERVISED; do args+=("$name=$(pidfile_of "$name")"); done
  mkdir -p "$SUPERVISE_DIR/hold" "$DEVENV/logs"
  setsid nohup python3 "$here/supervise.py" --hold-dir "$SUPERVISE_DIR/hold" --log "$DEVENV/logs/supervise.log" \
    "${args[@]}" >>"$DEVENV/logs/supervise.log" 2>&1 </dev/null 8>&- &
  echo $! >"$SUPERVISE_DIR/pid"
}
running() { [ -r "/proc/$1/stat" ] && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
# stop_pid PID: SIGTERM, up to 10 s to exit, then SIGKILL.
stop_pid() {
  local _
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do running "$1" || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
stop_supervisor() {
  supervisor_running || return 0
  stop_pid "$(cat "$SUPERVISE_DIR/pid")"
}
probe_target_of() { { probe_targets; prometheus_target; registry_target; } | grep "^$1="; }

# stop NAME: held down (the supervisor leaves it), for outage tests; start NAME: back and ready.
stop_component() {
  local name="$1" pid
  grep -qw -- "$name" <<<"$SUPERVISED" || die "no such component: $name (one of: $SUPERVISED)" "devenv/devenv.sh stop|start|restart <component>"
  supervisor_running || die "the devenv is not running (no supervisor)"
  touch "$SUPERVISE_DIR/hold/$name"
  pid="$(cat "$(pidfile_of "$name")" 2>/dev/null || true)"
  [ -z "$pid" ] || stop_pid "$pid"
  log "$name stopped (held until: devenv/devenv.sh start $name)"
}
start_component() {
  local name="$1" t0; t0="$(now)"
  grep -qw -- "$name" <<<"$SUPERVISED" || die "no such component: $name (one of: $SUPERVISED)" "devenv/devenv.sh stop|start|restart <component>"
  supervisor_running || die "the devenv is not running (no supervisor)"
  rm -f "$SUPERVISE_DIR/hold/$name"
  probe --timeout 120 "$(probe_target_of "$name")" >/dev/null || die "$name did not come back within 120 s (logs: $CLUSTER_DIR/logs/, $DEVENV/logs/supervise.log)" "make devenv-down && make devenv"
  log "$name ready again after $(since "$t0")s"
}

healthy() {
  [ -f "$DEVENV/kubeconfig" ] && [ -f "$DEVENV/devenv-id" ] && [ -f "$DEVENV/s3.env" ] || return 1
  # shellcheck disable=SC2046
  probe --timeout 3 $(probe_targets) 2>/dev/null && "$here/node.sh" status >/dev/null
}

kwokctl_config() {
  cat <<EOF
# Generated by devenv/devenv.sh; edit that script, not this file.
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  kubeVersion: $K8S_VERSION
  etcdVersion: $ETCD_VERSION
  bindAddress: 127.0.0.1
  kubeApiserverCertSANs: [127.0.0.1, localhost, $NODE_IP, $KUBERNETES_SERVICE_IP]
  securePort: true
  kubeAuthorization: true
  kubeAdmission: true
  kubeApiserverPort: $APISERVER_PORT
  etcdPort: $ETCD_PORT
  etcdPeerPort: $ETCD_PEER_PORT
  kubeControllerManagerPort: $KCM_PORT
  kubeSchedulerPort: $SCHEDULER_PORT
  kwokControllerPort: $KWOK_PORT
  etcdBinary: $ETCD_BIN/etcd
  kubeApiserverBinary: $K8S_BIN/kube-apiserver
  kubeControllerManagerBinary: $K8S_BIN/kube-controller-manager
  kubeSchedulerBinary: $K8S_BIN/kube-scheduler
  kubectlBinary: $KUBECTL
  kwokControllerBinary: $KWOK_BIN/kwok
  cacheDir: $KWOK_WORKDIR/cache
  # Stages are CRs (devenv/kwok/stages/*.yaml, applied by this script), so editing a Stage and
  # rerunning \`make devenv\` updates a running devenv without a restart.
  enableCRDs: [Stage]
componentsPatches:
# Pods reach the apiserver through the kubernetes Service: its endpoint is the node address (a
# forwarder there leads to loopback, devenv/node.sh); logs/exec go to the kubelet with the admin cert.
- name: kube-apiserver
  extraArgs:
  - {key: advertise-address, value: "$NODE_IP"}
  - {key: service-cluster-ip-range, value: "$SERVICE_CIDR"}
  - {key: kubelet-client-certificate, value: "$CLUSTER_DIR/pki/admin.crt"}
  - {key: kubelet-client-key, value: "$CLUSTER_DIR/pki/admin.key"}
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
# kwokctl's binary runtime makes kwok manage every node; the real node is the kubelet's, so kwok
# must only touch the fake ones (devenv/kwok/nodes.yaml).
# Its FlexVolume prober would create /usr/libexec/kubernetes on the host: a directory of ours.
- name: kube-controller-manager
  extraArgs:
  - {key: flex-volume-plugin-dir, value: "$DEVENV/kcm-flexvolume"}
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
    override: true
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
EOF
}

# The CNCF distribution registry: plain http on the node's address (the node's containerd reaches it
# through $REGISTRY_HOSTS_DIR, devenv/node.sh), its blobs under $REGISTRY_DIR, deletes allowed so tests
# can remove what they pushed. Started when missing, or when what runs is not the pinned binary.
registry_running() {
  local pid; pid="$(cat "$REGISTRY_DIR/pid" 2>/dev/null)" && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$REGISTRY_BIN" ]
}
# stop_registry: the one this devenv started (any pin), never another program that reused its pid.
stop_registry() {
  local pid; pid="$(cat "$REGISTRY_DIR/pid" 2>/dev/null)" || return 0
  case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in "$CACHE"/registry-*/bin/registry) stop_pid "$pid" ;; esac
}
ensure_registry() {
  registry_running && return
  # Another pin's registry: the supervisor would start that one again, so it goes first (and is
  # started again by ensure_supervisor with this pin learned).
  if [ -f "$REGISTRY_DIR/pid" ]; then
    stop_supervisor
    stop_registry
  fi
  mkdir -p "$REGISTRY_DIR/data" "$DEVENV/logs"
  cat >"$REGISTRY_DIR/config.yml" <<EOF
# Generated by devenv/devenv.sh.
version: 0.1
log: {level: info, formatter: text, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: "$REGISTRY_DIR/data"}
  delete: {enabled: true}
http:
  addr: $REGISTRY
  # Signs upload state; a fixed one per devenv keeps an upload valid across a supervised restart.
  secret: kubeslim-devenv-$(cat "$DEVENV/devenv-id")
EOF
  # No tracing exporter: distribution v3 would otherwise look for an OTLP collector.
  OTEL_TRACES_EXPORTER=none setsid nohup "$REGISTRY_BIN" serve "$REGISTRY_DIR/config.yml" \
    >>"$DEVENV/logs/registry.log" 2>&1 </dev/null 8>&- &
  echo $! >"$REGISTRY_DIR/pid"
  probe --timeout 60 "$(registry_target)" >/dev/null \
    || die "the registry did not answer on http://$REGISTRY/v2/ (log: $DEVENV/logs/registry.log)" "make devenv"
  log "registry (distribution $REGISTRY_VERSION) on http://$REGISTRY"
}

start_s3() {
  mkdir -p "$S3_DIR/data" "$DEVENV/logs"
  # Keys are generated per devenv and live only in .devenv/, readable by this user alone.
  local access secret
  access="$(python3 -c 'import secrets; print("KS" + secrets.token_hex(9).upper())')"
  secret="$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')"
  (umask 077
   printf 'AWS_ENDPOINT_URL=http://%s:%s\nAWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_DEFAULT_REGION=us-east-1\n' \
     "$NODE_IP" "$S3_PORT" "$access" "$secret" >"$DEVENV/s3.env")
  # The root credentials go through the environment, not argv, so `ps` does not show them.
  ROOT_ACCESS_KEY_ID="$access" ROOT_SECRET_ACCESS_KEY="$secret" \
    setsid nohup "$S3_BIN/versitygw" --port "$NODE_IP:$S3_PORT" --region us-east-1 \
      posix "$S3_DIR/data" >"$DEVENV/logs/s3.log" 2>&1 </dev/null 8>&- &
  echo $! >"$S3_DIR/pid"
}

# Prometheus (Debian's package) scrapes the targets listed in $PROMETHEUS_DIR/targets/*.json
# (file_sd), re-read every 2 s: Debian builds it without Kubernetes discovery, so whoever installs
# an operator release lists its pods there (kubeslim_dev.prometheus.scrape_release). Rule files in
# $PROMETHEUS_DIR/rules/ are loaded on SIGHUP (kubeslim_dev.prometheus.load_rules).
prometheus_running() {
  local pid; pid="$(cat "$PROMETHEUS_DIR/pid" 2>/dev/null)" && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$PROMETHEUS_BIN" ]
}
ensure_prometheus() {
  prometheus_running && return
  [ -x "$PROMETHEUS_BIN" ] || die "no $PROMETHEUS_BIN: hack/host-packages.sh node installs Debian's prometheus" "hack/host-packages.sh node && make devenv"
  local installed; installed="$(dpkg-query -W -f '${Version}' prometheus 2>/dev/null || true)"
  [ "$installed" = "$PROMETHEUS_DEBIAN_VERSION" ] || log "WARNING: prometheus $installed is installed; versions.env notes $PROMETHEUS_DEBIAN_VERSION"
  mkdir -p "$PROMETHEUS_DIR/data" "$PROMETHEUS_DIR/targets" "$PROMETHEUS_DIR/rules" "$DEVENV/logs"
  cat >"$PROMETHEUS_DIR/prometheus.yml" <<EOF
# Generated by devenv/devenv.sh.
global: {scrape_interval: 2s, evaluation_interval: 2s}
rule_files: ["$PROMETHEUS_DIR/rules/*.yaml"]
scrape_configs:
- job_name: kubeslim-operator
  file_sd_configs:
  - {files: ["$PROMETHEUS_DIR/targets/*.json"], refresh_interval: 2s}
EOF
  setsid nohup "$PROMETHEUS_BIN" --config.file="$PROMETHEUS_DIR/prometheus.yml" --storage.tsdb.path="$PROMETHEUS_DIR/data" \
    --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    >"$DEVENV/logs/prometheus.log" 2>&1 </dev/null 8>&- &
  echo $! >"$PROMETHEUS_DIR/pid"
  probe --timeout 60 "$(prometheus_target)" >/dev/null || die "Prometheus did not become ready (log: $DEVENV/logs/prometheus.log)" "make devenv-down && make devenv"
}

write_client_files() {
  local id; id="$(cat "$DEVENV/devenv-id")"
  local pki="$CLUSTER_DIR/pki"
  [ -f "$pki/ca.crt" ] && [ -f "$pki/admin.crt" ] && [ -f "$pki/admin.key" ] || die "kwokctl wrote no PKI under $pki" "make devenv-down && make devenv"
  (umask 077; cat >"$DEVENV/kubeconfig.tmp" <<EOF
# Written by devenv/devenv.sh for the kubeslim devenv $id: admin (system:masters) on 127.0.0.1.
apiVersion: v1
kind: Config
clusters:
- name: kubeslim-devenv-$id
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
    extensions:
    - name: kubeslim.io/devenv
      extension:
        id: "$id"
        dir: "$DEVENV"
users:
- name: kubeslim-devenv-admin
  user:
    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
    client-key-data: $(base64 -w0 "$pki/admin.key")
contexts:
- name: kubeslim-devenv
  context:
    cluster: kubeslim-devenv-$id
    user: kubeslim-devenv-admin
current-context: kubeslim-devenv
EOF
  mv "$DEVENV/kubeconfig.tmp" "$DEVENV/kubeconfig")
  cat >"$DEVENV/env" <<EOF
# source .devenv/env: our kubectl/helm first on PATH, the devenv kubeconfig and S3 settings.
export PATH="$K8S_BIN:$HELM_BIN:\$PATH"
export KUBECONFIG="$DEVENV/kubeconfig"
set -a; . "$DEVENV/s3.env"; set +a
EOF
  cat >"$DEVENV/devenv.json" <<EOF
{
  "id": "$id",
  "kubeconfig": "$DEVENV/kubeconfig",
  "s3_env": "$DEVENV/s3.env",
  "kube_apiserver": "https://127.0.0.1:$APISERVER_PORT",
  "s3_endpoint": "http://$NODE_IP:$S3_PORT",
  "registry": "$REGISTRY",
  "prometheus": "http://127.0.0.1:$PROMETHEUS_PORT",
  "node": {"name": "$NODE_NAME", "ip": "$NODE_IP", "bridge": "$NODE_BRIDGE", "gpus": $NODE_GPUS,
           "containerd": "$CONTAINERD_SOCK", "docker": "$DOCKER_SOCK", "dir": "$NODE_DIR"},
  "images": "$DEVENV/images.env",
  "ports": {"kube-apiserver": $APISERVER_PORT, "etcd": $ETCD_PORT, "etcd-peer": $ETCD_PEER_PORT,
            "kube-controller-manager": $KCM_PORT, "kube-scheduler": $SCHEDULER_PORT,
            "kwok-controller": $KWOK_PORT, "s3": $S3_PORT, "prometheus": $PROMETHEUS_PORT, "registry": $REGISTRY_PORT},
  "bin": {"kubectl": "$KUBECTL", "helm": "$HELM_BIN/helm", "kwokctl": "$KWOKCTL"},
  "versions": {"kubernetes": "$K8S_VERSION", "etcd": "$ETCD_VERSION", "kwok": "$KWOK_VERSION",
               "helm": "$HELM_VERSION", "versitygw": "$VERSITYGW_VERSION", "registry": "$REGISTRY_VERSION",
               "prometheus": "$PROMETHEUS_DEBIAN_VERSION"}
}
EOF
}

k() { "$KUBECTL" --kubeconfig "$DEVENV/kubeconfig" "$@"; }

# Stages first: a node created before node-initialize exists would wait for kwok to resync.
apply_stages_and_nodes() {
  k wait --for condition=established crd/stages.kwok.x-k8s.io --timeout=60s >/dev/null
  k apply -f "$here/kwok/stages/" >/dev/null
  k apply -f "$here/kwok/nodes.yaml" >/dev/null
}

summary() {
  log "devenv ready: kube-apiserver https://127.0.0.1:$APISERVER_PORT, S3 http://$NODE_IP:$S3_PORT, registry http://$REGISTRY, real node $NODE_NAME ($NODE_IP)"
  log "  kubectl --kubeconfig $DEVENV/kubeconfig get nodes    (or: source $DEVENV/env)"
}

up() {
  ensure_tools
  mkdir -p "$DEVENV"
  if healthy; then
    log "devenv already running and healthy ($(cat "$DEVENV/devenv-id"))"
    ensure_prometheus
    ensure_registry
    ensure_supervisor
    write_client_files
    apply_stages_and_nodes
    # The runtimes' configuration as this checkout writes it (the registry's hosts.toml, dockerd's
    # insecure registry); a running containerd is restarted only when its configuration changed.
    "$HERE_NODE" runtime || die "the real node's container runtimes could not be configured (logs: $NODE_DIR/logs/)" "make devenv"
    "$here/images.sh"
    if [ "$(cat "$DEVENV/config-hash" 2>/dev/null)" != "$(config_hash)" ]; then
      log "WARNING: the pinned versions or the kwokctl settings in devenv/devenv.sh changed since this devenv started; to load them: make devenv-down && make devenv"
    fi
    summary
    return
  fi
  if [ -d "$CLUSTER_DIR" ] || [ -f "$S3_DIR/pid" ] || [ -f "$REGISTRY_DIR/pid" ] || [ -n "$(devenv_pids)" ]; then
    log "a devenv exists but is not healthy; removing it and starting fresh"
    down
  fi
  check_ports

  local t0; t0="$(now)"
  mkdir -p "$DEVENV/logs"
  # The node's bridge carries the address S3 and the apiserver forwarder listen on: first.
  "$HERE_NODE" runtime || die "the real node's container runtimes did not start (logs: $NODE_DIR/logs/)" "make devenv-down && make devenv"
  python3 -c 'import secrets; print(secrets.token_hex(6))' >"$DEVENV/devenv-id"
  config_hash >"$DEVENV/config-hash"
  kwokctl_config >"$DEVENV/kwokctl.yaml"
  log "starting S3 (versitygw $VERSITYGW_VERSION) and the control plane (kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)"
  start_s3
  ensure_registry
  # shellcheck disable=SC2046
  probe --timeout 240 --since "$t0" --out "$DEVENV/components.json" $(probe_targets) &
  local prober=$!
  if ! "$KWOKCTL" -c "$DEVENV/kwokctl.yaml" create cluster --name "$CLUSTER" --kubeconfig "" --timeout 4m >"$DEVENV/logs/kwokctl-create.log" 2>&1 8>&-; then
    kill "$prober" 2>/dev/null || true
    tail -20 "$DEVENV/logs/kwokctl-create.log" >&2
    die "kwokctl could not create the cluster (log: $DEVENV/logs/kwokctl-create.log, component logs: $CLUSTER_DIR/logs/)" "make devenv-down && make devenv"
  fi
  if ! wait "$prober"; then
    die "some components never became ready (logs: $CLUSTER_DIR/logs/, $DEVENV/logs/s3.log)" "make devenv-down && make devenv"
  fi
  write_client_files
  local t_prom; t_prom="$(now)"
  ensure_prometheus
  local prometheus_ready; prometheus_ready="$(since "$t_prom")"
  ensure_supervisor

  apply_stages_and_nodes || die "could not apply the kwok Stages and nodes (devenv/kwok/)" "make devenv-down && make devenv"
  k wait --for=condition=Ready node -l type=kwok --timeout=120s >/dev/null || die "the kwok nodes did not become Ready (log: $CLUSTER_DIR/logs/kwok-controller.log)" "make devenv-down && make devenv"
  local nodes_ready; nodes_ready="$(since "$t0")"
  # Pods can only be admitted once the ServiceAccount controller made the 'default' SA.
  local i; for i in $(seq 1 600); do k get serviceaccount default -n default >/dev/null 2>&1 && break; sleep 0.2; done
  k get serviceaccount default -n default >/dev/null 2>&1 || die "kube-controller-manager never created the default ServiceAccount (log: $CLUSTER_DIR/logs/kube-controller-manager.log)" "make devenv-down && make devenv"
  local sa_ready; sa_ready="$(since "$t0")"
  "$HERE_NODE" up || die "the real node did not come up (logs: $NODE_DIR/logs/)" "make devenv-down && make devenv"
  local total; total="$(since "$t0")"
  python3 - "$DEVENV" "$nodes_ready" "$sa_ready" "$total" "$prometheus_ready" <<'PY'
import json, sys, time
d, nodes, sa, total, prometheus = sys.argv[1], *map(float, sys.argv[2:])
comps = json.load(open(f"{d}/components.json"))
# Prometheus starts once the control plane is up; its figure is its own start-to-ready time.
comps.update({"kwok-nodes-ready": nodes, "default-serviceaccount": sa, "real-node-ready": total,
              "prometheus-own-start": prometheus})
json.dump({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "start_to_ready_seconds": comps, "total_seconds": total}, open(f"{d}/timings.json", "w"), indent=2)
PY
  log "devenv up in ${total}s"
  summary
}

down() {
  mkdir -p "$DEVENV"
  # The node first: its pods are deleted through the apiserver while there still is one.
  local node_rc=0
  "$HERE_NODE" down || node_rc=$?
  stop_supervisor
  if [ -x "$KWOKCTL" ] && [ -d "$CLUSTER_DIR" ]; then
    mkdir -p "$DEVENV/logs"
    "$KWOKCTL" delete cluster --name "$CLUSTER" >"$DEVENV/logs/kwokctl-delete.log" 2>&1 || log "kwokctl delete cluster failed (see $DEVENV/logs/kwokctl-delete.log); stopping processes directly"
  fi
  if [ -f "$S3_DIR/pid" ]; then
    local pid; pid="$(cat "$S3_DIR/pid")"
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$S3_BIN/versitygw" ]; then kill "$pid" 2>/dev/null || true; fi
  fi
  ! prometheus_running || stop_pid "$(cat "$PROMETHEUS_DIR/pid")"
  stop_registry
  # Whatever is left (a crashed kwokctl, an interrupted start): stop it by pid, then insist.
  local pids i
  for i in $(seq 1 50); do
    pids="$(devenv_pids)"; [ -z "$pids" ] && break
    # shellcheck disable=SC2086
    if [ "$i" -lt 30 ]; then kill $pids 2>/dev/null || true; else kill -9 $pids 2>/dev/null || true; fi
    sleep 0.2
  done
  pids="$(devenv_pids)"
  [ -z "$pids" ] || die "could not stop devenv processes: $pids" "make devenv-down"
  # Kueue (devenv/kueue.sh), if started: its process went with the others (its command line names
  # $DEVENV); its objects go with the cluster's etcd, so only its files are left to remove.
  rm -rf "$DEVENV/kueue" "$DEVENV/logs/kueue.log" "$DEVENV/.kueue.lock"
  # The registry's blobs (images, charts) go with it: a fresh devenv pushes them again.
  rm -rf "$KWOK_WORKDIR" "$S3_DIR" "$REGISTRY_DIR" "$SUPERVISE_DIR" "$PROMETHEUS_DIR" "$DEVENV"/{kubeconfig,s3.env,env,devenv-id,devenv.json,config-hash,kwokctl.yaml,components.json,images.env,values-images.yaml,kcm-flexvolume}
  [ "$node_rc" = 0 ] || die "the real node did not leave the host as it found it (see above)" "make devenv-down"
  log "devenv stopped; no devenv process left"
  # Clients of the devenv that other tools started: named, not killed.
  local p others=""
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    local cmd; cmd="$(tr '\0' ' ' 2>/dev/null <"$p/cmdline")" || continue
    case "$cmd" in *"$DEVENV/"*) others+=" ${p#/proc/}(${cmd:0:80})" ;; esac
  done
  [ -z "$others" ] || log "note: still running and pointing at this devenv, not stopped by devenv-down:$others"
}

status() {
  local ok=0 t name url answered
  # shellcheck disable=SC2046
  answered="$(probe --timeout 2 --out /dev/stdout $(probe_targets) "$(prometheus_target)" "$(registry_target)" 2>/dev/null || true)"
  for t in $(probe_targets) "$(prometheus_target)" "$(registry_target)"; do
    name="${t%%=*}"; url="${t#*=}"
    if grep -q "\"$name\"" <<<"$answered"; then printf '  %-24s up    %s\n' "$name" "${url#\~}"; else printf '  %-24s DOWN  %s\n' "$name" "${url#\~}"; ok=1; fi
  done
  "$HERE_NODE" status || ok=1
  if [ "$ok" = 0 ] && [ -f "$DEVENV/kubeconfig" ]; then
    echo "  kubeconfig: $DEVENV/kubeconfig (devenv $(cat "$DEVENV/devenv-id"))"
    echo "  S3: $(grep AWS_ENDPOINT_URL "$DEVENV/s3.env" | cut -d= -f2)  keys in $DEVENV/s3.env"
    k get nodes -o custom-columns='NAME:.metadata.name,STATUS:.status.conditions[?(@.type=="Ready")].status,GPU:.status.allocatable.nvidia\.com/gpu' | sed 's/^/  /'
  else
    echo "  devenv is not (fully) running: make devenv"
  fi
  return $ok
}

# Serialize concurrent callers (two test sessions starting the devenv at once). Daemons are
# started with 8>&- so they do not inherit (and hold) this lock.
mkdir -p "$DEVENV"
exec 8>"$DEVENV/.lock"
flock 8
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  stop) stop_component "${2:-}" ;;
  start) start_component "${2:-}" ;;
  restart) stop_component "${2:-}"; start_component "${2:-}" ;;
  *) echo "usage: $0 up|down|status|stop|start|restart <component>" >&2; exit 2 ;;
esac
