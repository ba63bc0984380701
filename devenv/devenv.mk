# Local dev cluster (devenv/devenv.sh): real control plane + kwok fake GPU nodes + a real node
# (devenv/node.sh: kubelet, containerd, kube-proxy, CNI; needs root) + versitygw S3.
.PHONY: tools devenv devenv-down devenv-status images bench-devenv

tools: ## build every pinned binary (devenv, GitOps judges, Kueue, actionlint) into KUBESLIM_CACHE, default ~/.cache/kubeslim; make devenv builds only the devenv's
	@hack/build-tools.sh

devenv: venv ## start the local cluster, the real node, S3 and the registry (idempotent; builds and pushes the images); writes .devenv/kubeconfig and .devenv/s3.env
	@devenv/devenv.sh up

devenv-down: ## stop every devenv process, restore the host state the real node changed (fails naming anything left), delete its state
	@devenv/devenv.sh down

images: venv ## build the operator/job-cpu images from the Dockerfile (only when their inputs changed); push them and the chart to the devenv registry
	@devenv/node.sh runtime
	@devenv/images.sh

devenv-status: ## show whether each devenv component answers
	@devenv/devenv.sh status

bench-devenv: ## measure build and start-to-ready times into bench/results/devenv.json
	@python3 bench/bench_devenv.py

.PHONY: test-devenv
test-devenv: venv ## the devenv's own tests (tests/devenv): host-state comparison and commands, then the running devenv's components, real node, registry and supervisor
	$(PY) -m pytest tests/devenv -p no:cacheprovider $(PYTEST_ARGS)
