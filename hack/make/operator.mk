# The operator (operator/kubeslim_operator): run it against the devenv, benchmark it, test it.
.PHONY: run-operator bench-operator test-operator

OPERATOR_ARGS ?= -A

run-operator: $(VENV)/.installed ## run the operator locally against the devenv (admin kubeconfig; OPERATOR_ARGS=-n ns)
	@test -f .devenv/kubeconfig || { echo "no devenv: run 'make devenv' first"; exit 1; }
	KUBECONFIG=$(REPO)/.devenv/kubeconfig KUBESLIM_JOB_IMAGE=$${KUBESLIM_JOB_IMAGE:-kubeslim-job:dev} \
	KUBESLIM_METRICS_PORT=$${KUBESLIM_METRICS_PORT:-9090} KUBESLIM_LIVENESS_PORT=$${KUBESLIM_LIVENESS_PORT:-8080} \
	$(VENV)/bin/kubeslim-operator $(OPERATOR_ARGS)

# N= on the command line (make bench-operator N=10000), else BENCH_N from the environment, else 1000
bench-operator: $(VENV)/.installed ## N QuantizationJobs on kwok: Jobs/s, status lag p99, operator peak RSS, writes per Job -> bench/results/operator.json (N=1000)
	@test -f .devenv/kubeconfig || { echo "no devenv: run 'make devenv' first"; exit 1; }
	$(PY) bench/bench_operator.py -n $(or $(N),$${BENCH_N:-1000})

test-operator: $(VENV)/.installed ## operator unit tests, then its cluster tests against the devenv
	$(PY) -m pytest -q tests/unit/test_operator_*.py
	$(PY) -m pytest -q tests/cluster/test_operator_*.py
