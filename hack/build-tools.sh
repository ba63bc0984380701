#!/usr/bin/env bash
# Builds the devenv's binaries from pinned Go modules, once per version, into
# $KUBESLIM_CACHE/<tool>-<version>/bin. Safe to rerun: a cached tool is skipped.
# Each build records its wall time in <tool>-<version>/build.json (read by `make bench-devenv`).
#   usage: hack/build-tools.sh [etcd kwok helm s3 registry kubernetes gitops kueue actionlint]   (default: all)
# `make devenv`/`make demo` build only what the devenv runs (DEVENV_TOOLS in devenv/devenv.sh); the
# GitOps judges, Kueue and actionlint are built on demand by the tests and devenv/kueue.sh that use them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR
source "$here/versions.env"
CACHE="${KUBESLIM_CACHE:-$HOME/.cache/kubeslim}"
mkdir -p "$CACHE"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[build-tools] ERROR: %s\n  retry with: make tools\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "no Go toolchain on PATH: install Go >= 1.24 (https://go.dev/dl) and put it on PATH"
command -v python3 >/dev/null || die "python3 is needed to read module metadata"

# One build at a time per cache: a second `make tools` (or a test session calling `make devenv`)
# waits for the first instead of racing it on the same output directories.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting for it"
  flock 9
fi

# Print a line every 30 s so a long cold build visibly makes progress.
with_heartbeat() {
  local what="$1"; shift
  ( while sleep 30; do log "still building $what ..."; done ) &
  local hb=$!
  local rc=0
  "$@" || rc=$?
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  return $rc
}

# new_module DIR MODULE: an empty wrapper module, so each tool family resolves its own pins.
new_module() {
  rm -rf "$1"; mkdir -p "$1"
  (cd "$1" && go mod init "kubeslim.local/$2" >/dev/null 2>&1)
}

# record OUT NAME VERSION START: the wall time of a finished build, for the benchmark. The first
# build of a version is kept in build.json; a rebuild (new recipe, warm caches) goes to rebuild.json.
record() {
  local secs=$(( $(date +%s) - $4 )) file="$1/build.json"
  [ -f "$file" ] && file="$1/rebuild.json"
  printf '{"tool": "%s", "version": "%s", "build_seconds": %d, "built_at": "%s", "cpus": %d, "go": "%s"}\n' \
    "$2" "$3" "$secs" "$(date -u +%FT%TZ)" "$(nproc)" "$(go env GOVERSION)" > "$file"
  echo "${RECIPE:-1}" > "$1/recipe"
  log "$2 $3 built in ${secs}s"
}

# cached OUT BIN...: every binary is there and was built by the current recipe of this tool
# (bump RECIPE for a tool when its build flags change, so caches rebuild it and nothing else).
cached() {
  local out="$1" b; shift
  [ "$(cat "$out/recipe" 2>/dev/null || echo 1)" = "${RECIPE:-1}" ] || return 1
  for b in "$@"; do [ -x "$out/bin/$b" ] || return 1; done
}

# helm's built-in Kubernetes version (used by `helm template`/`lint` without a cluster) comes from
# the client-go it is built with, as helm's own Makefile does; else it claims v1.20.
helm_k8s_ldflags() {
  local v; v="$(go list -m -f '{{.Version}}' k8s.io/client-go)"; v="${v#v}"
  local major=$(( ${v%%.*} + 1 )) minor; minor="$(cut -d. -f2 <<<"$v")"
  local p; for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    printf -- ' -X %s.k8sVersionMajor=%s -X %s.k8sVersionMinor=%s' "$p" "$major" "$p" "$minor"
  done
}

go_mod_of() { go mod download -json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or sys.exit(d.get("Error", "no GoMod")))'; }

build_kubernetes() {
  local out="$CACHE/kubernetes-$K8S_VERSION" cmds="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"
  # shellcheck disable=SC2086
  cached "$out" $cmds && { log "kubernetes $K8S_VERSION cached"; return; }
  local start; start=$(date +%s)
  log "building kubernetes $K8S_VERSION ($cmds); cold this took about 4-5 min on 2 cores"
  local mod="$CACHE/src/kubernetes-$K8S_VERSION"
  new_module "$mod" kubernetes
  cd "$mod"
  # k8s.io/kubernetes requires every staging module at v0.0.0 and replaces it with a local path;
  # replace each one with the published staging tag instead (same list as the tag's own go.mod).
  local gomod minor staging
  gomod="$(go_mod_of "k8s.io/kubernetes@$K8S_VERSION")" || die "cannot download k8s.io/kubernetes@$K8S_VERSION (Go module proxy reachable?)"
  minor="${K8S_VERSION#v1.}"
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
  [ -n "$staging" ] || die "could not read the staging replace list from $gomod"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  for m in $staging; do go mod edit -replace="$m=$m@v0.$minor"; done
  local go_directive; go_directive="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
  go mod edit -go="$go_directive"
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in $cmds; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'; } > tools.go
  with_heartbeat "kubernetes modules" go mod tidy -e >/dev/null 2>"$mod/tidy.log" || { tail -20 "$mod/tidy.log" >&2; die "go mod tidy for kubernetes $K8S_VERSION failed (log: $mod/tidy.log)"; }
  # Without these the binaries report v0.0.0-master and kwokctl would pick flags for the wrong release.
  local ver="$K8S_VERSION" mn="${minor%%.*}"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$mn -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$ver -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$mn"
  rm -rf "$out/bin.tmp"; mkdir -p "$out/bin.tmp"
  for c in $cmds; do
    log "go build $c"
    with_heartbeat "$c" go build -trimpath -ldflags "$ld" -o "$out/bin.tmp/$c" "k8s.io/kubernetes/cmd/$c" || die "go build $c failed"
  done
  rm -rf "${out:?}/bin"; mv "$out/bin.tmp" "$out/bin"
  record "$out" kubernetes "$K8S_VERSION" "$start"
  log "kubernetes: $("$out/bin/kubectl" version --client 2>/dev/null | head -1)"
}

# build_simple NAME VERSION MODULE PKG[=BINARY]...: a wrapper module requiring MODULE@VERSION;
# BINARY names the output when the package path's last element is not the command's name.
build_simple() {
  local name="$1" ver="$2" module="$3"; shift 3
  local out="$CACHE/$name-$ver"
  local spec bins=(); for spec in "$@"; do bins+=("$(bin_of "$spec")"); done
  cached "$out" "${bins[@]}" && { log "$name $ver cached"; return; }
  local start; start=$(date +%s)
  log "building $name $ver"
  local mod="$CACHE/src/$name-$ver"
  new_module "$mod" "$name"
  cd "$mod"
  go mod edit -require="$module@$ver"
  local gomod go_directive
  gomod="$(go_mod_of "$module@$ver")" || die "cannot download $module@$ver (Go module proxy reachable?)"
  go_directive="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"; [ -n "$go_directive" ] && go mod edit -go="$go_directive"
  # Modules with replace directives of their own (etcd) need them copied into the wrapper.
  python3 - "$gomod" <<'PY' | while read -r r; do go mod edit -replace="$r"; done
import re, sys
text = open(sys.argv[1]).read()
blocks = re.findall(r'^replace\s*\((.*?)^\)', text, re.S | re.M) + [l[len('replace '):] for l in re.findall(r'^replace [^(].*$', text, re.M)]
for block in blocks:
    for line in block.splitlines():
        line = line.split('//')[0].strip()
        if '=>' not in line: continue
        left, right = [s.strip() for s in line.split('=>')]
        if right.startswith('.'): continue   # local paths inside the module: nothing to do
        print(left.split()[0] + '=' + right.replace(' ', '@'))
PY
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for spec in "$@"; do printf '\t_ "%s"\n' "${spec%%=*}"; done
    printf ')\n'; } > tools.go
  with_heartbeat "$name modules" go mod tidy -e >/dev/null 2>"$mod/tidy.log" || { tail -20 "$mod/tidy.log" >&2; die "go mod tidy for $name $ver failed (log: $mod/tidy.log)"; }
  local ld="-s -w ${LDFLAGS_EXTRA:-}"
  [ "$name" = helm ] && ld+="$(helm_k8s_ldflags)"
  rm -rf "$out/bin.tmp"; mkdir -p "$out/bin.tmp"
  for spec in "$@"; do
    local pkg="${spec%%=*}" bin; bin="$(bin_of "$spec")"
    log "go build $pkg -> $bin"
    with_heartbeat "$bin" go build -trimpath -ldflags "$ld" -o "$out/bin.tmp/$bin" "$pkg" || die "go build $pkg failed"
  done
  rm -rf "${out:?}/bin"; mv "$out/bin.tmp" "$out/bin"
  record "$out" "$name" "$ver" "$start"
}
bin_of() { case "$1" in *=*) echo "${1#*=}" ;; *) basename "$1" ;; esac; }

# build_gitops_judges: our own module hack/gitops-judges (go.mod and go.sum committed), whose pins
# must be the ones in versions.env. Its recipe is a hash of the module, so editing its code or
# its go.mod rebuilds it (and only it). Argo CD v3.6 needs Go >= 1.27: this module alone is built
# with GITOPS_JUDGES_GO_TOOLCHAIN, which the go command fetches from the module proxy.
build_gitops_judges() {
  local src="$here/gitops-judges" out="$CACHE/gitops-judges-$ARGOCD_VERSION"
  local RECIPE; RECIPE="$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | sort | xargs cat | sha256sum | cut -c1-12)"
  cached "$out" argocd-health kstatus && { log "gitops-judges $ARGOCD_VERSION cached"; return; }
  local start; start=$(date +%s)
  log "building gitops-judges (Argo CD $ARGOCD_VERSION health, cli-utils $CLI_UTILS_VERSION kstatus); cold (toolchain, modules, compile) this took about 10 min on 2 cores"
  cd "$src"
  local -x GOTOOLCHAIN="$GITOPS_JUDGES_GO_TOOLCHAIN"
  local mod want have
  for mod in github.com/argoproj/argo-cd/v3=$ARGOCD_VERSION sigs.k8s.io/cli-utils=$CLI_UTILS_VERSION; do
    want="${mod#*=}"; have="$(go list -m -f '{{.Version}}' "${mod%%=*}")" || die "cannot read $src/go.mod (Go module proxy reachable for $GOTOOLCHAIN?)"
    [ "$have" = "$want" ] || die "$src/go.mod pins ${mod%%=*} $have but versions.env says $want: update go.mod (and its replace block from Argo CD's go.mod), then go mod tidy"
  done
  with_heartbeat "gitops-judges modules" go mod download || die "go mod download for gitops-judges failed"
  rm -rf "$out/bin.tmp"; mkdir -p "$out/bin.tmp"
  log "go build ./cmd/argocd-health ./cmd/kstatus"
  with_heartbeat "gitops-judges" go build -trimpath -ldflags "-s -w" -o "$out/bin.tmp/" ./cmd/argocd-health ./cmd/kstatus || die "go build gitops-judges failed"
  rm -rf "${out:?}/bin"; mv "$out/bin.tmp" "$out/bin"
  record "$out" gitops-judges "$ARGOCD_VERSION" "$start"
}

ALL_TOOLS="etcd kwok helm s3 registry kubernetes gitops kueue actionlint"
want="${*:-$ALL_TOOLS}"
for tool in $want; do
  case "$tool" in
    etcd) build_simple etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3=etcd ;;
    kwok) build_simple kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl ;;
    helm) RECIPE=2 LDFLAGS_EXTRA="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
            build_simple helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm ;;
    s3) LDFLAGS_EXTRA="-X main.Version=$VERSITYGW_VERSION" \
          build_simple versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw ;;
    registry) LDFLAGS_EXTRA="-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION" \
                build_simple registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3 github.com/distribution/distribution/v3/cmd/registry ;;
    kubernetes) build_kubernetes ;;
    gitops) build_gitops_judges ;;
    kueue) LDFLAGS_EXTRA="-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
             build_simple kueue "$KUEUE_VERSION" sigs.k8s.io/kueue sigs.k8s.io/kueue/cmd/kueue ;;
    actionlint) LDFLAGS_EXTRA="-X github.com/rhysd/actionlint.version=$ACTIONLINT_VERSION" \
                  build_simple actionlint "$ACTIONLINT_VERSION" github.com/rhysd/actionlint github.com/rhysd/actionlint/cmd/actionlint ;;
    # Not in the default list: only `make chaos` (tests/cluster/test_chaos_s3.py) runs it.
    toxiproxy) LDFLAGS_EXTRA="-X github.com/Shopify/toxiproxy/v2.Version=$TOXIPROXY_VERSION" \
                 build_simple toxiproxy "$TOXIPROXY_VERSION" github.com/Shopify/toxiproxy/v2 \
                   github.com/Shopify/toxiproxy/v2/cmd/server=toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/cli=toxiproxy-cli ;;
    *) die "unknown tool '$tool' (known: $ALL_TOOLS)" ;;
  esac
done
log "tools ready in $CACHE: $want"
