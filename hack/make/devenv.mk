# Local dev cluster (hack/devenv.sh): real control plane + kwok fake GPU nodes + versitygw S3.
.PHONY: tools devenv devenv-down devenv-status bench-devenv

tools: ## build the pinned devenv binaries into KUBESLIM_CACHE, default ~/.cache/kubeslim (cold: about 10 min on 2 cores)
	@hack/build-tools.sh

devenv: ## start the local cluster + S3 (idempotent); writes .devenv/kubeconfig and .devenv/s3.env
	@hack/devenv.sh up

devenv-down: ## stop every devenv process (the dev node agent first) and delete its state
	@$(MAKE) --no-print-directory devnode-down
	@hack/devenv.sh down

devenv-status: ## show whether each devenv component answers
	@hack/devenv.sh status

bench-devenv: ## measure build and start-to-ready times into bench/results/devenv.json
	@python3 bench/bench_devenv.py
