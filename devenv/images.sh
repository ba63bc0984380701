#!/usr/bin/env bash
# Builds the project's images with the devenv's dockerd, without network inside the build, and
# pushes them to the devenv registry (devenv/devenv.sh, http://$REGISTRY), from which the real node's
# containerd pulls them (hosts.toml, devenv/node.sh) as any cluster pulls from its registry:
#   base        Debian bookworm (debootstrap, from the mirror apt is configured with) + python3-venv
#               + libgomp1, imported as $IMAGE_PREFIX/python-base: the Dockerfile's PYTHON_IMAGE
#   wheelhouse  every wheel the images install, made on the host with the host's own pip set-up,
#               as a scratch image the Dockerfile bind-mounts (WHEELHOUSE, PIP_OFFLINE=1)
#   operator, job-cpu   pushed as $REGISTRY/kubeslim/kubeslim-{operator,job-cpu} (the chart's
#               repository names, under the devenv registry) with three tags: the chart's appVersion,
#               <chart version>-<git sha> and the hash of the image's inputs; the Helm values
#               pin the pushed digest (image.digest), so a rebuild is never hidden by a cached tag
#   pause       the kubelet's sandbox image: node infrastructure, imported into containerd as a
#               node image would carry it (containerd's config names it before any registry runs)
# Each image is tagged with a hash of its inputs and rebuilt only when that hash has no image yet.
# The job-cpu image (1 GB) is then pulled by the node from the registry ahead of the first Job;
# the operator image is not: its first pod pulls it.
#   chart       helm/kubeslim packaged and pushed as oci://$REGISTRY/charts/kubeslim at its own
#               version (RELEASING.md's rule: version = appVersion = the images' tag), which make
#               demo and the e2e tests install from (helm --plain-http)
# Writes $DEVENV/images.env and $DEVENV/values-images.yaml (Helm values).
#
# With `gpu` it builds the GPU job image instead (make images-gpu; of the above only the base and the
# wheelhouse): the same base, plus paddlepaddle-gpu and the CUDA/cuDNN wheels of
# job_image/gpu-requirements.txt from a second wheelhouse, pushed as $REGISTRY/kubeslim/kubeslim-job
# with the same three tags. Writes $DEVENV/images-gpu.env (the local and the pushed reference, and this
# dockerd's address: tests/e2e/test_gpu_image.py runs the image there).
#   usage: devenv/images.sh [gpu]    (make images / make images-gpu; needs the node's daemons and the
#                                     registry: make devenv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR
source "$here/node/paths.sh"
BASE_PACKAGES="python3,python3-venv,libgomp1,ca-certificates"
MODE="${1:-}"
case "$MODE" in ""|gpu) ;; *) echo "usage: devenv/images.sh [gpu]" >&2; exit 2 ;; esac
TIMINGS="$DEVENV/image-timings${MODE:+-$MODE}.json"

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[images] ERROR: %s\n  retry with: make images\n' "$*" >&2; exit 1; }
docker() { DOCKER_HOST="unix://$DOCKER_SOCK" DOCKER_BUILDKIT=1 "$DOCKER_CLI" "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
sha() { sha256sum | cut -c1-12; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
declare -A SECONDS_OF=()
timed() { local what="$1" t0; shift; t0=$(date +%s.%N); "$@"; SECONDS_OF[$what]=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))"); }

[ -S "$DOCKER_SOCK" ] && [ -S "$CONTAINERD_SOCK" ] || die "the node's dockerd/containerd are not running ($NODE_RUN): run make devenv"
python3 "$here/probe.py" --timeout 5 "registry=http://$REGISTRY/v2/" >/dev/null 2>&1 \
  || die "the devenv registry does not answer on http://$REGISTRY/v2/: run make devenv (it starts the registry)"

# The Debian mirror apt already uses (deb822 .sources or one-line sources.list): no host name here.
debian_mirror() {
  python3 - <<'PY'
import glob, re
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = dict((k.strip(), v.strip()) for k, v in re.findall(r"^([\w-]+):(.*)$", stanza, re.M))
        if "bookworm" in fields.get("Suites", "").split() and "main" in fields.get("Components", "").split():
            print(fields["URIs"].split()[0]); raise SystemExit
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        for line in open(path):
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s+.*\bmain\b", line)
            if m:
                print(m.group(1)); raise SystemExit
    except FileNotFoundError:
        pass
raise SystemExit("no apt source for bookworm main in /etc/apt")
PY
}

base_image() {
  local ref; ref="$IMAGE_PREFIX/python-base:bookworm-$(echo "minbase $BASE_PACKAGES" | sha)"
  if ! have_image "$ref"; then
    command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install debootstrap)"
    local mirror root; mirror="$(debian_mirror)" || die "cannot find the Debian mirror in /etc/apt"
    root="$(mktemp -d "$CACHE/debootstrap.XXXXXX")"
    log "debootstrap bookworm ($BASE_PACKAGES) for $ref; about a minute"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$root" "$mirror" >"$DEVENV/logs/debootstrap.log" 2>&1 \
      || { rm -rf "$root"; tail -5 "$DEVENV/logs/debootstrap.log" >&2; die "debootstrap failed (log: $DEVENV/logs/debootstrap.log)"; }
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar -C "$root" -c . | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - "$ref" >/dev/null
    rm -rf "$root"
  fi
  BASE_REF="$ref"
}

# pyproject's requirements (all extras the images install) and paddleslim, which goes in --no-deps.
# The job extra's paddlepaddle is the dev venv's (2.6.2); the job-cpu image installs the Paddle its
# Dockerfile stage pins (3.x) instead, so that one goes in the wheelhouse.
requirements() {
  python3 - "$REPO/pyproject.toml" "$(paddle_pin job-cpu)" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
job = [r for r in p["optional-dependencies"]["job"] if not r.startswith("paddlepaddle")]
print("\n".join(["setuptools>=77", "wheel", *p["dependencies"], *p["optional-dependencies"]["operator"], *job,
                 f"paddlepaddle=={sys.argv[2]}"]))
PY
}
paddleslim_pin() { sed -n 's/^ARG PADDLESLIM_VERSION=//p' "$REPO/Dockerfile" | head -1; }
# paddle_pin STAGE: the PADDLE_VERSION the Dockerfile's job-cpu or job (GPU) stage installs.
paddle_pin() {
  local v; v="$(sed -n "/^FROM .* AS $1\$/,/^FROM /s/^ARG PADDLE_VERSION=//p" "$REPO/Dockerfile")"
  [ -n "$v" ] || die "no ARG PADDLE_VERSION= in the Dockerfile's $1 stage"
  echo "$v"
}

# The venv's exact versions (make venv) pin the wheelhouse: the images run what the tests ran,
# and pip never backtracks through hundreds of boto3 releases. Paddle is the exception (see
# requirements): its pin comes from the Dockerfile; what only paddle 3 needs (networkx,
# safetensors) takes pip's choice within paddle's own bounds.
constraints() {
  [ -x "$REPO/.venv/bin/python" ] || die "no .venv: run make venv first (its versions pin the images)"
  # Packages installed from a file or URL (`name @ file://...`) cannot be constraints: pip refuses links.
  "$REPO/.venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(paddleslim|paddlepaddle)==| @ '
}

# wheelhouse_image NAME FILL INPUT...: a scratch image $IMAGE_PREFIX/NAME:<hash of the INPUTs> holding
# the wheels `FILL DIR` writes into DIR (made once per input set, kept under $CACHE/NAME); sets
# WHEELHOUSE_REF.
wheelhouse_image() {
  local name="$1" fill="$2" hash dir ref; shift 2
  hash="$(printf '%s\n' "$@" | sha)"
  ref="$IMAGE_PREFIX/$name:$hash"; dir="$CACHE/$name/$hash"
  if ! have_image "$ref"; then
    if [ ! -f "$dir/.complete" ]; then
      log "$name $hash: pip wheel on the host (its own index settings), once per requirement set"
      rm -rf "$dir"; mkdir -p "$dir"
      "$fill" "$dir"
      touch "$dir/.complete"
    fi
    printf 'FROM scratch\nCOPY . /\n' | docker build -q --network none -t "$ref" -f - "$dir" >/dev/null || die "could not pack the wheelhouse into $ref"
    find "$CACHE/$name" -mindepth 1 -maxdepth 1 ! -name "$hash" -exec rm -rf {} +
  fi
  WHEELHOUSE_REF="$ref"
}

fill_wheelhouse() {
  python3 -m pip wheel -q -w "$1" -r <(requirements) -c <(constraints) || die "pip wheel failed for the image requirements"
  python3 -m pip wheel -q -w "$1" --no-deps "paddleslim==$(paddleslim_pin)" || die "pip wheel paddleslim failed"
}

# The GPU stage's own wheels: paddlepaddle-gpu (its dependencies at the venv's versions) and the
# CUDA/cuDNN libraries; the job requirements come from the CPU wheelhouse, which job-base shares.
gpu_requirements() { echo "paddlepaddle-gpu==$(paddle_pin job)"; grep -v '^#' "$REPO/job_image/gpu-requirements.txt"; }
fill_gpu_wheelhouse() {
  python3 -m pip wheel -q -w "$1" -r <(gpu_requirements) -c <(constraints) || die "pip wheel failed for the GPU requirements"
}

# The application images' inputs: what the Dockerfile copies, the Dockerfile, the base and wheels.
app_hash() {   # app_hash [IMAGE...]: the IDs of further images the build mounts count too
  cd "$REPO"
  { cat Dockerfile .dockerignore pyproject.toml
    git ls-files -co --exclude-standard -- api operator job_image | LC_ALL=C sort | while read -r f; do [ -f "$f" ] && { echo "$f"; cat "$f"; }; done
    docker image inspect -f '{{.Id}}' "$BASE_REF" "$WHEELHOUSE_REF" "$@"; } | sha
}

build_target() {   # build_target TARGET REF [docker build ARG...]
  local target="$1" ref="$2"; shift 2
  have_image "$ref" && return
  log "docker build --target $target -> $ref"
  docker build --network none --target "$target" -t "$ref" \
    --build-arg PYTHON_IMAGE="$BASE_REF" --build-arg WHEELHOUSE="$WHEELHOUSE_REF" --build-arg PIP_OFFLINE=1 "$@" \
    "$REPO" >"$DEVENV/logs/build-$target.log" 2>&1 || { tail -30 "$DEVENV/logs/build-$target.log" >&2; die "docker build --target $target failed (log: $DEVENV/logs/build-$target.log)"; }
}

pause_image() {
  local bin
  if ! have_image "$PAUSE_REF"; then
    bin="$(mktemp -d)"
    (cd "$here/node/pause" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$bin/pause" .) || die "go build of the pause program failed"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' | docker build -q --network none -t "$PAUSE_REF" -f - "$bin" >/dev/null
    rm -rf "$bin"
  fi
}

# Older images of a repository go, but for the newest few: a Helm release installed a moment ago
# (make demo, another test session) still runs the image it was given.
KEEP_TAGS=3
# prune_docker REPO [KEEP]: docker's tags of REPO but the newest KEEP (default KEEP_TAGS; docker lists
# them newest first).
# A pushed image whose tags all moved on stays listed as REPO:<none> (its pushed digest still names
# it) and `docker rmi REPO:<none>` is an invalid reference: such an entry goes by its image ID.
prune_docker() {
  local refs keep
  refs="$(docker image ls --format '{{if eq .Tag "<none>"}}{{.ID}}{{else}}{{.Repository}}:{{.Tag}}{{end}}' "$1")"
  keep="$(head -n "${2:-$KEEP_TAGS}" <<<"$refs")"
  grep -vxF "$keep" <<<"$refs" | while read -r old; do docker rmi "$old" >/dev/null; done || true
}

# import REF: into the node's containerd, once (the pause image only).
import() {
  if ! ctr images ls -q | grep -qxF "$1"; then
    log "importing $1 into the node's containerd"
    docker save "$1" | ctr images import - >/dev/null || die "ctr images import of $1 failed"
  fi
  prune_docker "${1%:*}"
  ctr images ls -q | grep "^${1%:*}:" | grep -vxF "$(docker image ls --format '{{.Repository}}:{{.Tag}}' "${1%:*}")" \
    | while read -r old; do ctr images rm "$old" >/dev/null; done || true
}

# push LOCAL_REF NAME [KEEP]: LOCAL_REF to $REGISTRY/kubeslim/NAME under the appVersion, <version>-<git sha>
# and input-hash tags, keeping KEEP local tags of that repository (prune_docker); sets PUSHED to the
# repository@digest the registry now serves. Layers the registry already has are not sent again.
push() {
  local repo="$REGISTRY/kubeslim/$2" tag digest
  for tag in "$APP_VERSION" "$CHART_VERSION-$GIT_SHA" "${1##*:}"; do
    docker tag "$1" "$repo:$tag"
    docker push "$repo:$tag" >"$DEVENV/logs/push-$2.log" 2>&1 || { tail -5 "$DEVENV/logs/push-$2.log" >&2; die "docker push $repo:$tag failed (log: $DEVENV/logs/push-$2.log)"; }
  done
  digest="$(sed -n 's/.* digest: \(sha256:[0-9a-f]\{64\}\) .*/\1/p' "$DEVENV/logs/push-$2.log" | tail -1)"
  [ -n "$digest" ] || die "docker push $repo:${1##*:} printed no digest (log: $DEVENV/logs/push-$2.log)"
  prune_docker "$repo" "${3:-}"
  PUSHED="$repo@$digest"
}

# push_chart: the working tree's chart, packaged and pushed over the registry's tag of its version
# (a devenv holds one chart per version: the one this checkout last pushed).
push_chart() {
  local helm="$CACHE/helm-$HELM_VERSION/bin/helm" dir
  [ -x "$helm" ] || die "no helm at $helm: run make devenv (it builds the devenv's tools)"
  dir="$(mktemp -d)"
  "$helm" package "$REPO/helm/kubeslim" -d "$dir" >/dev/null || { rm -rf "$dir"; die "helm package helm/kubeslim failed"; }
  "$helm" push "$dir/kubeslim-$CHART_VERSION.tgz" "oci://$REGISTRY/charts" --plain-http >"$DEVENV/logs/push-chart.log" 2>&1 \
    || { rm -rf "$dir"; tail -5 "$DEVENV/logs/push-chart.log" >&2; die "helm push of the chart to oci://$REGISTRY/charts failed (log: $DEVENV/logs/push-chart.log)"; }
  rm -rf "$dir"
  CHART_DIGEST="$(sed -n 's/^Digest: //p' "$DEVENV/logs/push-chart.log")"
}

# pull_ahead REF: the node's containerd pulls REF (repository@digest) from the registry through
# the same hosts.toml the kubelet's pulls use.
pull_ahead() {
  ctr images ls -q | grep -qxF "$1" && return
  log "the node pulls $1 from the registry"
  ctr images pull --hosts-dir "$REGISTRY_HOSTS_DIR" "$1" >"$DEVENV/logs/pull-ahead.log" 2>&1 \
    || { tail -5 "$DEVENV/logs/pull-ahead.log" >&2; die "the node's containerd could not pull $1 (log: $DEVENV/logs/pull-ahead.log)"; }
}

# prune_node REF: the node's earlier pulls of REF's repository go (the kubelet disk is shared and
# its image GC is off); running containers keep their layers, and the registry still serves them.
prune_node() {
  local repo="${1%@*}" digest="${1#*@}"
  ctr images ls | awk -v r="$repo" -v d="$digest" '(index($1, r ":") == 1 || index($1, r "@") == 1) && $3 != d {print $1}' \
    | while read -r old; do ctr images rm "$old" >/dev/null || true; done
}

# BuildKit keeps every layer it ever built (about 1 GB per job-image code change; 21 GB after a
# day of edits filled the kubelet's disk-pressure threshold): only the newest few GB stay.
prune_build_cache() {
  docker builder prune -f --keep-storage "${KUBESLIM_BUILD_CACHE_KEEP:-6GB}" >/dev/null || log "WARNING: docker builder prune failed"
}

write_timings() {
  python3 - "$TIMINGS" "${!SECONDS_OF[@]}" -- "${SECONDS_OF[@]}" <<'PY'
import json, sys, time
args = sys.argv[2:]; cut = args.index("--")
json.dump({"finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "seconds": dict(zip(args[:cut], map(float, args[cut + 1:])))}, open(sys.argv[1], "w"), indent=2)
PY
}

mkdir -p "$DEVENV/logs"
# Tests run images.sh concurrently (one node_images fixture per pytest process): one build at a time.
exec 9>"$DEVENV/images.lock"
flock 9
timed base base_image
timed wheelhouse wheelhouse_image wheelhouse fill_wheelhouse "$(requirements)" "$(constraints)" "$(paddleslim_pin)"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO/helm/kubeslim/Chart.yaml")"
CHART_VERSION="$(sed -n 's/^version: *//p' "$REPO/helm/kubeslim/Chart.yaml")"
GIT_SHA="$(git -C "$REPO" rev-parse --short=12 HEAD)"
[ -n "$APP_VERSION" ] && [ -n "$CHART_VERSION" ] || die "cannot read version/appVersion from helm/kubeslim/Chart.yaml"

if [ "$MODE" = gpu ]; then
  # What follows touches only the GPU image's names and takes many minutes: the CPU images' builds
  # (each test session's node_images) need not wait for it; another GPU build does.
  flock -u 9
  exec 8>"$DEVENV/images-gpu.lock"
  flock 8
  CPU_WHEELHOUSE_REF="$WHEELHOUSE_REF"
  timed gpu_wheelhouse wheelhouse_image wheelhouse-gpu fill_gpu_wheelhouse "$(gpu_requirements)" "$(constraints)"
  GPU_WHEELHOUSE_REF="$WHEELHOUSE_REF"; WHEELHOUSE_REF="$CPU_WHEELHOUSE_REF"
  GPU_REF="$IMAGE_PREFIX/job:$(app_hash "$GPU_WHEELHOUSE_REF")"
  timed build_job_gpu build_target job "$GPU_REF" --build-arg GPU_WHEELHOUSE="$GPU_WHEELHOUSE_REF"
  # One GPU image at a time, here and among the pushed tags' local copies (its three): each is several GB.
  timed push_job_gpu push "$GPU_REF" kubeslim-job 3
  prune_docker "$IMAGE_PREFIX/job" 1
  prune_build_cache
  cat >"$DEVENV/images-gpu.env" <<EOF
KUBESLIM_GPU_JOB_IMAGE=$GPU_REF
KUBESLIM_GPU_JOB_PUSHED=$PUSHED
KUBESLIM_GPU_WHEELHOUSE_IMAGE=$GPU_WHEELHOUSE_REF
KUBESLIM_DOCKER_HOST=unix://$DOCKER_SOCK
KUBESLIM_DOCKER_CLI=$DOCKER_CLI
EOF
  write_timings
  log "GPU job image ready: $GPU_REF, in the registry as $PUSHED"
  exit 0
fi

timed pause pause_image
TAG="$(app_hash)"
OPERATOR_REF="$IMAGE_PREFIX/operator:$TAG"
JOB_REF="$IMAGE_PREFIX/job-cpu:$TAG"
timed build_operator build_target operator "$OPERATOR_REF"
timed build_job build_target job-cpu "$JOB_REF"
timed import_pause import "$PAUSE_REF"
timed push_operator push "$OPERATOR_REF" kubeslim-operator
OPERATOR_PUSHED="$PUSHED"
timed push_job push "$JOB_REF" kubeslim-job-cpu
JOB_PUSHED="$PUSHED"
prune_docker "$IMAGE_PREFIX/operator"; prune_docker "$IMAGE_PREFIX/job-cpu"
timed pull_ahead_job pull_ahead "$JOB_PUSHED"
prune_node "$OPERATOR_PUSHED"; prune_node "$JOB_PUSHED"
timed push_chart push_chart
prune_build_cache

cat >"$DEVENV/images.env" <<EOF
KUBESLIM_OPERATOR_IMAGE=$OPERATOR_PUSHED
KUBESLIM_JOB_IMAGE=$JOB_PUSHED
KUBESLIM_PAUSE_IMAGE=$PAUSE_REF
KUBESLIM_BASE_IMAGE=$BASE_REF
KUBESLIM_WHEELHOUSE_IMAGE=$WHEELHOUSE_REF
KUBESLIM_REGISTRY=$REGISTRY
KUBESLIM_IMAGE_TAGS=$APP_VERSION,$CHART_VERSION-$GIT_SHA,$TAG
KUBESLIM_CHART=oci://$REGISTRY/charts/kubeslim
KUBESLIM_CHART_VERSION=$CHART_VERSION
KUBESLIM_CHART_DIGEST=$CHART_DIGEST
EOF
cat >"$DEVENV/values-images.yaml" <<EOF
# Written by devenv/images.sh: the images built from this checkout, in the devenv registry, pinned by
# digest; the chart's own pullPolicy (IfNotPresent) applies.
operator:
  image: {repository: ${OPERATOR_PUSHED%@*}, tag: "$APP_VERSION", digest: "${OPERATOR_PUSHED#*@}"}
job:
  image: {repository: ${JOB_PUSHED%@*}, tag: "$APP_VERSION", digest: "${JOB_PUSHED#*@}"}
EOF
write_timings
log "images ready in the registry: $OPERATOR_PUSHED, $JOB_PUSHED; chart oci://$REGISTRY/charts/kubeslim:$CHART_VERSION"
