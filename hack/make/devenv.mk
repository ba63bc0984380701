# Local dev cluster (hack/devenv.sh): real control plane + kwok fake GPU nodes + a real node
# (hack/node.sh: kubelet, containerd, kube-proxy, CNI; needs root) + versitygw S3.
.PHONY: tools devenv devenv-down devenv-status images bench-devenv

tools: ## build the pinned devenv binaries into KUBESLIM_CACHE, default ~/.cache/kubeslim (cold: about 10 min on 2 cores)
	@hack/build-tools.sh

devenv: venv ## start the local cluster, the real node and S3 (idempotent; builds the images); writes .devenv/kubeconfig and .devenv/s3.env
	@hack/devenv.sh up

devenv-down: ## stop every devenv process, restore the host state the real node changed (fails naming anything left), delete its state
	@hack/devenv.sh down

images: venv ## build the operator/job-cpu images from the Dockerfile (only when their inputs changed) and import them into the node
	@hack/node.sh runtime
	@hack/images.sh

devenv-status: ## show whether each devenv component answers
	@hack/devenv.sh status

bench-devenv: ## measure build and start-to-ready times into bench/results/devenv.json
	@python3 bench/bench_devenv.py
