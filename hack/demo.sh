#!/usr/bin/env bash
# `make demo`: from a fresh machine to a finished QuantizationJob. Every step is idempotent, so
# running it again is harmless (the QuantizationJob itself is recreated to show a fresh run).
set -euo pipefail
cd "$(dirname "$0")/.."
NS="${DEMO_NAMESPACE:-kubeslim-demo}"
TIMEOUT="${DEMO_TIMEOUT:-900}"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "1/6 Python environment (.venv)"
make --no-print-directory venv
step "2/6 Local cluster, real node, S3 and registry (make devenv; the first run builds the pinned binaries and the images)"
make --no-print-directory devenv
# shellcheck source=/dev/null
source .devenv/env
step "3/6 Images and chart built from this checkout, in the devenv registry"
sed 's/^/  /' .devenv/images.env
# Its values are plain words (no quoting needed), so the shell reads it as the tests do.
# shellcheck source=/dev/null
source .devenv/images.env

step "4/6 Operator: helm upgrade --install kubeslim $KUBESLIM_CHART --version $KUBESLIM_CHART_VERSION (watching namespace $NS)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The chart as a user installs it, from the registry (plain http in the devenv); its pods pull
# their images from the same registry, pinned by digest in .devenv/values-images.yaml.
helm upgrade --install kubeslim "$KUBESLIM_CHART" --version "$KUBESLIM_CHART_VERSION" --plain-http -n kubeslim-system --create-namespace \
  -f devenv/chart-values.yaml -f .devenv/values-images.yaml --set "operator.watchNamespaces={$NS}" --wait --timeout 180s >/dev/null
kubectl -n kubeslim-system get deploy kubeslim -o wide

step "5/6 Model and data into S3 ($AWS_ENDPOINT_URL)"
.venv/bin/python hack/demo/seed.py
# The keys go from the env file into a Secret without passing through a command line.
creds="$(mktemp)"; trap 'rm -f "$creds"' EXIT
chmod 600 "$creds"
printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$creds"
kubectl -n "$NS" create secret generic s3-creds --from-env-file="$creds" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
echo "  Secret $NS/s3-creds holds the S3 keys; the QuantizationJob only names it"

step "6/6 kubectl apply -f examples/digits.yaml"
# Foreground: the old run's Job is gone before the new QuantizationJob asks for the same Job name.
kubectl -n "$NS" delete qj digits --ignore-not-found --cascade=foreground --wait=true >/dev/null
sed "s#endpoint: http://10.77.0.1:16900#endpoint: ${AWS_ENDPOINT_URL}#" examples/digits.yaml | kubectl -n "$NS" apply -f -
start=$(date +%s); last=""
while :; do
  # status.progress.percent: how far the running stage is (the job pod's progress lines).
  raw="$(kubectl -n "$NS" get qj digits -o jsonpath='{.status.phase} {.status.stage} {.status.reason}|{.status.progress.percent}' 2>/dev/null || true)"
  now="${raw%|*}"; percent="${raw##*|}"
  shown="$now${percent:+  $percent%}"
  if [ "$shown" != "$last" ]; then
    printf '  %4ss  %s\n' "$(( $(date +%s) - start ))" "${shown:-(waiting for the operator)}"
    last="$shown"
  fi
  case "$now" in Succeeded*|Failed*) break ;; esac
  if [ -z "${now// /}" ] && [ $(( $(date +%s) - start )) -gt 90 ]; then
    echo "demo: the operator wrote no status in 90s; its pod and last log lines:" >&2
    kubectl -n kubeslim-system get pods -o wide >&2
    # Both replicas: the leader reconciled, the standby says whom it waited for.
    kubectl -n kubeslim-system logs -l app.kubernetes.io/instance=kubeslim,app.kubernetes.io/component=operator --prefix --tail=20 >&2 || true
    exit 1
  fi
  if [ $(( $(date +%s) - start )) -gt "$TIMEOUT" ]; then echo "demo: no result after ${TIMEOUT}s" >&2; break; fi
  sleep 1
done

echo
kubectl -n "$NS" get qj digits
echo
phase="$(kubectl -n "$NS" get qj digits -o jsonpath='{.status.phase}')"
if [ "$phase" = Succeeded ]; then
  kubectl -n "$NS" get qj digits -o jsonpath='{"  backend:      "}{.status.results.backend}{"\n  int8 model:   "}{.status.artifacts.model}{"\n  report:       "}{.status.artifacts.report}{"\n  latency:      fp32 "}{.status.results.fp32.latencyMs}{" ms, int8 "}{.status.results.int8.latencyMs}{" ms per batch of "}{.spec.verification.batchSize}{"\n  speedup:      "}{.status.results.speedup}{"x\n"}'
  echo "  more: kubectl -n $NS get qj digits -o yaml   (source .devenv/env first)"
else
  kubectl -n "$NS" get qj digits -o jsonpath='{"  reason:  "}{.status.reason}{"\n  message: "}{.status.message}{"\n"}'
  exit 1
fi
