#!/usr/bin/env bash
# Kueue in the running devenv: its controller (built by hack/build-tools.sh at KUEUE_VERSION) as a
# host process with the devenv's admin kubeconfig, its CRDs and webhooks from Kueue's own module
# source at that version (rendered by kubeslim_dev.kueue: see there what differs from Kueue's
# kustomize install), certificates Kueue's internal cert management makes and rotates itself,
# a ResourceFlavor, a ClusterQueue with an nvidia.com/gpu quota and a LocalQueue per namespace.
#   .devenv/kueue/       config.yaml, certs/ (the webhook's serving certificate), pid, timings.json
#   .devenv/logs/kueue.log
#
#   usage: devenv/kueue.sh up|down|status         (make kueue / kueue-down)
#     up: idempotent; KUBESLIM_KUEUE_NAMESPACES (default: default) get a LocalQueue named
#         kubeslim-queue, KUBESLIM_KUEUE_GPU_QUOTA (default 2) is the ClusterQueue's GPU quota
#     down: stops the controller and deletes every object and file `up` made (fails naming what is left)
# Ports (KUBESLIM_KUEUE_*_PORT override): webhook 16943 on the node's address (the apiserver calls it
# through the Service's ClusterIP), metrics 16944 and health 16945 on 127.0.0.1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR
source "$here/node/paths.sh"
KUEUE_DIR="$DEVENV/kueue"
LOG="$DEVENV/logs/kueue.log"
BIN="$CACHE/kueue-$KUEUE_VERSION/bin/kueue"
KUBECTL="$CACHE/kubernetes-$K8S_VERSION/bin/kubectl"
PY="$REPO/.venv/bin/python"
WEBHOOK_PORT="${KUBESLIM_KUEUE_WEBHOOK_PORT:-16943}"
METRICS_PORT="${KUBESLIM_KUEUE_METRICS_PORT:-16944}"
HEALTH_PORT="${KUBESLIM_KUEUE_HEALTH_PORT:-16945}"
GPU_QUOTA="${KUBESLIM_KUEUE_GPU_QUOTA:-2}"
read -r -a NAMESPACES <<<"${KUBESLIM_KUEUE_NAMESPACES:-default}"
SERVICE_NAME=kueue-system/kueue-webhook-service
SECRET_NAME=kueue-system/kueue-webhook-server-cert
WEBHOOKS="mutatingwebhookconfiguration/kueue-mutating-webhook-configuration validatingwebhookconfiguration/kueue-validating-webhook-configuration"

log() { printf '[kueue %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[kueue] ERROR: %s\n  retry with: %s\n' "$1" "${2:-make kueue}" >&2; exit 1; }
k() { "$KUBECTL" --kubeconfig "$DEVENV/kubeconfig" "$@"; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(round($(now) - $1, 2))"; }

# The controller we started: the pid file's process, running our binary.
controller_pid() {
  local pid; pid="$(cat "$KUEUE_DIR/pid" 2>/dev/null)" || return 1
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN" ] && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] && echo "$pid"
}
ready() { curl -fsS --max-time 2 "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null 2>&1; }
apiserver_up() { [ -f "$DEVENV/kubeconfig" ] && k get --raw /readyz >/dev/null 2>&1; }

# The module source at KUEUE_VERSION (CRDs and webhook manifests): in the Go module cache, which
# building the binary filled.
module_dir() {
  go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))'
}

# A Job that names a queue, created as a server-side dry run: Kueue's mutating webhook answers it
# (suspend: true) only if the apiserver reaches the host process through the Service.
webhook_answers() {
  local out
  out="$(k create --dry-run=server -o jsonpath='{.spec.suspend}' -f - 2>&1 <<EOF
{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "kueue-webhook-probe", "namespace": "default",
 "labels": {"kueue.x-k8s.io/queue-name": "kueue-webhook-probe"}},
 "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "none"}]}}}}
EOF
)" || { mkdir -p "$KUEUE_DIR"; echo "$out" >"$KUEUE_DIR/webhook-probe.txt"; return 1; }
  [ "$out" = true ]
}

# Kueue's cert rotator keeps the webhook's certificates in a Secret and waits for them to appear
# in its cert dir, where the kubelet would mount that Secret into its pod: here we copy them once.
# (They are valid for a year; a devenv lives hours.)
sync_certs() {
  local key data
  for key in tls.crt tls.key ca.crt; do
    data="$(k -n kueue-system get secret kueue-webhook-server-cert -o jsonpath="{.data.${key//./\\.}}" 2>/dev/null)" || return 1
    [ -n "$data" ] || return 1
    (umask 077; base64 -d <<<"$data" >"$KUEUE_DIR/certs/$key.tmp") && mv "$KUEUE_DIR/certs/$key.tmp" "$KUEUE_DIR/certs/$key"
  done
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local secs="$1" what="$2"; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    controller_pid >/dev/null || die "the Kueue controller exited while waiting for $what; its log: $LOG" "make kueue"
    sleep 1
  done
}

up() {
  apiserver_up || die "the devenv's apiserver does not answer ($DEVENV/kubeconfig): start it with make devenv" "make devenv && make kueue"
  ip -4 addr show "$NODE_BRIDGE" 2>/dev/null | grep -qF "inet $NODE_IP/" \
    || die "the real node's address $NODE_IP is not on $NODE_BRIDGE: the webhook listens there (make devenv starts the node)" "make devenv && make kueue"
  if controller_pid >/dev/null && ready && webhook_answers; then
    log "Kueue $KUEUE_VERSION already running (pid $(controller_pid))"
  else
    start
  fi
  "$PY" -m kubeslim_dev.kueue queues "$GPU_QUOTA" "${NAMESPACES[@]}" | k apply -f - >/dev/null
  k wait --for=condition=Active clusterqueues.v1beta2.kueue.x-k8s.io/kubeslim-cluster-queue --timeout=60s >/dev/null \
    || die "ClusterQueue kubeslim-cluster-queue did not become Active: k get clusterqueues.v1beta2.kueue.x-k8s.io -o yaml"
  log "Kueue ready: ClusterQueue kubeslim-cluster-queue (nvidia.com/gpu: $GPU_QUOTA), LocalQueue kubeslim-queue in: ${NAMESPACES[*]}"
}

start() {
  local t0; t0="$(now)"
  "$REPO/hack/build-tools.sh" kueue
  [ -x "$BIN" ] || die "no Kueue binary at $BIN after hack/build-tools.sh kueue"
  [ -x "$PY" ] || die "no $PY: the renderer lives in kubeslim_dev (make venv)" "make venv && make kueue"
  local pid; if pid="$(controller_pid)"; then
    log "a Kueue controller (pid $pid) runs but does not answer; restarting it"
    stop_controller
  fi
  local src; src="$(module_dir)" || die "cannot find sigs.k8s.io/kueue@$KUEUE_VERSION in the Go module cache (Go module proxy reachable?)"
  mkdir -p "$KUEUE_DIR/certs" "$DEVENV/logs"
  local t_install; t_install="$(now)"
  # Server-side apply: the Workload CRD is too large for kubectl's last-applied annotation.
  "$PY" -m kubeslim_dev.kueue install "$src" "$NODE_IP" "$WEBHOOK_PORT" \
    | k apply --server-side --force-conflicts --field-manager=kubeslim-devenv -f - >/dev/null
  local i; for i in $(seq 1 60); do
    # shellcheck disable=SC2046
    k wait --for=condition=Established $(kueue_crds) --timeout=5s >/dev/null 2>&1 && break   # fails at once while a CRD has no status yet
    [ "$i" = 60 ] && die "Kueue's CRDs were not established within 60 s: k get crd | grep kueue"
    sleep 1
  done
  local install_s; install_s="$(since "$t_install")"
  "$PY" -m kubeslim_dev.kueue config "$KUEUE_DIR/certs" "$NODE_IP" "$WEBHOOK_PORT" \
    "127.0.0.1:$METRICS_PORT" "127.0.0.1:$HEALTH_PORT" >"$KUEUE_DIR/config.yaml"
  local t_proc; t_proc="$(now)"
  # VisibilityOnDemand would start an aggregated API server on :8082 of every interface.
  KUBECONFIG="$DEVENV/kubeconfig" setsid nohup "$BIN" --config "$KUEUE_DIR/config.yaml" \
    --feature-gates=VisibilityOnDemand=false >>"$LOG" 2>&1 </dev/null 8>&- &
  echo $! >"$KUEUE_DIR/pid"
  log "started Kueue $KUEUE_VERSION (pid $!); log: $LOG"
  wait_for 60 "its certificate Secret" sync_certs || die "Kueue did not write its certificates to Secret $SECRET_NAME within 60 s; its log: $LOG"
  wait_for 180 "readiness" ready || die "Kueue did not report ready on 127.0.0.1:$HEALTH_PORT/readyz within 180 s; its log: $LOG"
  local ready_s; ready_s="$(since "$t_proc")"
  wait_for 60 "its webhook" webhook_answers \
    || die "the apiserver cannot reach Kueue's webhook through Service $SERVICE_NAME ($(cat "$KUEUE_DIR/webhook-probe.txt" 2>/dev/null | tail -1))"
  printf '{"version": "%s", "install_seconds": %s, "process_ready_seconds": %s, "webhook_ready_seconds": %s, "total_seconds": %s}\n' \
    "$KUEUE_VERSION" "$install_s" "$ready_s" "$(since "$t_proc")" "$(since "$t0")" >"$KUEUE_DIR/timings.json"
  log "webhook answers through the Service ($(cat "$KUEUE_DIR/timings.json"))"
}
stop_controller() {
  local pid i; pid="$(controller_pid)" || return 0
  kill "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do controller_pid >/dev/null || return 0; [ "$i" = 50 ] && kill -9 "$pid" 2>/dev/null; sleep 0.2; done
  die "could not stop the Kueue controller (pid $pid)" "make kueue-down"
}

kueue_crds() { k get crd -o name 2>/dev/null | grep '\.kueue\.x-k8s\.io$' || true; }

down() {
  stop_controller
  if apiserver_up; then
    # shellcheck disable=SC2086
    k delete --ignore-not-found $WEBHOOKS >/dev/null
    # With the controller gone nobody removes Kueue's finalizers (resource-in-use), and a CRD
    # is only deleted once its objects are. v1beta1 is the stored version: no conversion webhook needed.
    local crd plural obj
    for crd in $(kueue_crds); do
      plural="${crd#*/}"; plural="${plural%%.*}"
      # One "namespace/name" per object ("/name" when cluster-scoped).
      for obj in $(k get "$plural.v1beta1.kueue.x-k8s.io" -A -o jsonpath='{range .items[?(@.metadata.finalizers)]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' 2>/dev/null); do
        local ns=(); [ -n "${obj%%/*}" ] && ns=(-n "${obj%%/*}")
        k patch "$plural.v1beta1.kueue.x-k8s.io" "${ns[@]}" "${obj#*/}" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
    done
    # shellcheck disable=SC2046
    [ -z "$(kueue_crds)" ] || k delete --wait --timeout=120s $(kueue_crds) >/dev/null
    k delete namespace kueue-system --ignore-not-found --wait --timeout=120s >/dev/null
    local left; left="$(kueue_crds) $(k get $WEBHOOKS -o name 2>/dev/null || true)"
    [ -z "${left// /}" ] || die "Kueue objects left after down: $left" "make kueue-down"
  else
    log "the apiserver does not answer: only the controller and files are removed (the cluster's objects go with the devenv)"
  fi
  rm -rf "$KUEUE_DIR" "$LOG"
  log "Kueue stopped; its CRDs, webhooks, namespace and files are gone"
}

status() {
  local ok=0 pid
  if pid="$(controller_pid)"; then printf '  %-24s up    pid %s\n' kueue-controller "$pid"; else printf '  %-24s DOWN\n' kueue-controller; ok=1; fi
  if ready; then printf '  %-24s up    http://127.0.0.1:%s/readyz\n' kueue-ready "$HEALTH_PORT"; else printf '  %-24s DOWN\n' kueue-ready; ok=1; fi
  if apiserver_up && webhook_answers; then printf '  %-24s up    %s -> %s:%s\n' kueue-webhook "$SERVICE_NAME" "$NODE_IP" "$WEBHOOK_PORT"
  else printf '  %-24s DOWN\n' kueue-webhook; ok=1; fi
  if [ "$ok" = 0 ]; then
    k get clusterqueues.v1beta2.kueue.x-k8s.io,localqueues.v1beta2.kueue.x-k8s.io -A 2>/dev/null | sed 's/^/  /'
  fi
  return $ok
}

# The Go command finds the module source (as in .ci/run: Debian's images keep Go in /usr/local/go).
command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"; } \
  || die "no Go toolchain on PATH: install Go >= 1.24 and put it on PATH"
mkdir -p "$DEVENV"
# One caller at a time (two test sessions starting Kueue at once). The controller does not inherit the lock (8>&-).
exec 8>"$DEVENV/.kueue.lock"
flock 8
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
