# Kueue in the running devenv (devenv/kueue.sh): the controller built from the Go module proxy at
# KUEUE_VERSION, run as a host process, a ClusterQueue with an nvidia.com/gpu quota of 2 and a
# LocalQueue kubeslim-queue (KUBESLIM_KUEUE_NAMESPACES, default: default).
.PHONY: kueue kueue-down kueue-status

kueue: venv ## start Kueue in the devenv (idempotent; builds it first, cold about 11 min on 2 cores)
	@devenv/kueue.sh up

kueue-down: ## stop Kueue and delete its CRDs, webhooks, namespace and files
	@devenv/kueue.sh down

kueue-status: ## show whether Kueue's controller, readiness and webhook answer
	@devenv/kueue.sh status
