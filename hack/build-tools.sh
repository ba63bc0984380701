#!/usr/bin/env bash
# Builds the devenv's binaries from pinned Go modules, once per version, into
# $KUBESLIM_CACHE/<tool>-<version>/. Safe to rerun: a cached tool is skipped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
CACHE="${KUBESLIM_CACHE:-$HOME/.cache/kubeslim}"
mkdir -p "$CACHE"
export GOFLAGS="${GOFLAGS:--buildvcs=false}" CGO_ENABLED=0

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[build-tools] ERROR: %s\n  retry with: make tools\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "no Go toolchain on PATH: install Go >= 1.24 (https://go.dev/dl) or set PATH"

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

build_kubernetes() {
  local out="$CACHE/kubernetes-$K8S_VERSION"
  [ -x "$out/bin/kubectl" ] && [ -x "$out/bin/kube-apiserver" ] && [ -x "$out/bin/kube-controller-manager" ] && [ -x "$out/bin/kube-scheduler" ] && { log "kubernetes $K8S_VERSION cached"; return; }
  log "building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl); cold this takes 15-30 min on 2 cores"
  local mod="$CACHE/src/kubernetes-$K8S_VERSION"
  new_module "$mod" kubernetes
  cd "$mod"
  # k8s.io/kubernetes requires every staging module at v0.0.0 and replaces it with a local path;
  # replace each one with the published staging tag instead (same list as the tag's own go.mod).
  local gomod minor staging
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  minor="${K8S_VERSION#v1.}"
  staging="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
  [ -n "$staging" ] || die "could not read the staging replace list from $gomod"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  for m in $staging; do go mod edit -replace="$m=$m@v0.$minor"; done
  cp "$gomod" /dev/null
  local go_directive; go_directive="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
  go mod edit -go="$go_directive"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  with_heartbeat "kubernetes modules" go mod tidy -e >/dev/null 2>"$mod/tidy.log" || { tail -20 "$mod/tidy.log" >&2; die "go mod tidy for kubernetes $K8S_VERSION failed"; }
  local ver="$K8S_VERSION" mn="${minor%%.*}"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$ver -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$mn -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$ver -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$mn"
  mkdir -p "$out/bin.tmp"
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "go build $cmd"
    with_heartbeat "$cmd" go build -trimpath -ldflags "$ld" -o "$out/bin.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd" || die "go build $cmd failed"
  done
  rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
  log "kubernetes $K8S_VERSION built: $("$out/bin/kubectl" version --client 2>/dev/null | head -1)"
}

# build_simple NAME VERSION MODULE PKG...: a wrapper module requiring MODULE@VERSION.
build_simple() {
  local name="$1" ver="$2" module="$3"; shift 3
  local out="$CACHE/$name-$ver"
  local all=1; for p in "$@"; do [ -x "$out/bin/$(basename "$p")" ] || all=0; done
  [ "$all" = 1 ] && { log "$name $ver cached"; return; }
  log "building $name $ver"
  local mod="$CACHE/src/$name-$ver"
  new_module "$mod" "$name"
  cd "$mod"
  go mod edit -require="$module@$ver"
  local gomod go_directive
  gomod="$(go mod download -json "$module@$ver" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
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
  printf '//go:build tools\n\npackage tools\n\nimport (\n' > tools.go
  for p in "$@"; do printf '\t_ "%s"\n' "$p" >> tools.go; done
  printf ')\n' >> tools.go
  with_heartbeat "$name modules" go mod tidy -e >/dev/null 2>"$mod/tidy.log" || { tail -20 "$mod/tidy.log" >&2; die "go mod tidy for $name $ver failed"; }
  mkdir -p "$out/bin.tmp"
  for p in "$@"; do
    log "go build $p"
    with_heartbeat "$(basename "$p")" go build -trimpath -ldflags "-s -w ${LDFLAGS_EXTRA:-}" -o "$out/bin.tmp/$(basename "$p")" "$p" || die "go build $p failed"
  done
  rm -rf "$out/bin"; mv "$out/bin.tmp" "$out/bin"
}

want="${*:-etcd kwok helm s3 kubernetes}"
for tool in $want; do
  case "$tool" in
    etcd) build_simple etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 ;;
    kwok) build_simple kwok "$KWOK_VERSION" sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl ;;
    helm) LDFLAGS_EXTRA="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" build_simple helm "$HELM_VERSION" helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm ;;
    s3) build_simple versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw github.com/versity/versitygw/cmd/versitygw ;;
    kubernetes) build_kubernetes ;;
    *) die "unknown tool '$tool' (known: etcd kwok helm s3 kubernetes)" ;;
  esac
done
log "all tools ready in $CACHE"
