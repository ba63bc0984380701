# Dev node agent (hack/devnode): a development and test tool, not part of the product. It
# registers Node $(DEVNODE_NAME) with nvidia.com/gpu capacity and runs the pods bound to it as
# local processes. Needs the devenv (make devenv). `make devenv-down` stops it first;
# `make devnode-down` alone is harmless when nothing runs.
.PHONY: devnode-up devnode-down devnode-status

DEVNODE_NAME ?= kubeslim-dev-0
DEVNODE_ARGS ?=
DEVNODE_KUBECONFIG ?= $(REPO)/.devenv/kubeconfig
DEVNODE_PIDFILE := $(REPO)/.devenv/devnode.pid
DEVNODE_LOG := $(REPO)/.devenv/devnode/agent.log
DEVNODE := $(PY) $(REPO)/hack/devnode/devnode.py --kubeconfig $(DEVNODE_KUBECONFIG) --node-name $(DEVNODE_NAME)

devnode-up: ## start the dev node agent in the background (idempotent) and wait until its Node is Ready
	@test -x $(PY) || { echo "devnode: $(PY) missing: run 'make venv' first" >&2; exit 1; }
	@test -f $(DEVNODE_KUBECONFIG) || { echo "devnode: $(DEVNODE_KUBECONFIG) missing: run 'make devenv' first" >&2; exit 1; }
	@mkdir -p $(dir $(DEVNODE_LOG))
	@if pid=$$(cat $(DEVNODE_PIDFILE) 2>/dev/null) && kill -0 $$pid 2>/dev/null && grep -q devnode.py /proc/$$pid/cmdline 2>/dev/null; then \
	  echo "devnode: already running (pid $$pid)"; \
	else \
	  nohup $(DEVNODE) $(DEVNODE_ARGS) >>$(DEVNODE_LOG) 2>&1 </dev/null & echo $$! >$(DEVNODE_PIDFILE); \
	  echo "devnode: started pid $$(cat $(DEVNODE_PIDFILE)), agent log $(DEVNODE_LOG)"; \
	fi
	@$(DEVNODE) --wait-ready 60 || { echo "devnode: node $(DEVNODE_NAME) not Ready; last agent log lines:" >&2; tail -20 $(DEVNODE_LOG) >&2; exit 1; }
	@echo "devnode: node $(DEVNODE_NAME) Ready; container logs in $(REPO)/.devenv/devnode/logs/"

devnode-down: ## stop the dev node agent and the processes of its pods (no-op when not running)
	@pid=$$(cat $(DEVNODE_PIDFILE) 2>/dev/null) || { echo "devnode: not running"; exit 0; }; \
	if kill -0 $$pid 2>/dev/null && grep -q devnode.py /proc/$$pid/cmdline 2>/dev/null; then \
	  kill -TERM $$pid; \
	  for i in $$(seq 1 150); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	  if kill -0 $$pid 2>/dev/null; then echo "devnode: pid $$pid still running after 15s, killing"; kill -KILL $$pid; fi; \
	  echo "devnode: stopped pid $$pid"; \
	else echo "devnode: not running (stale pidfile)"; fi; \
	rm -f $(DEVNODE_PIDFILE)

devnode-status: ## show the dev node agent process, its Node and the pods bound to it
	@if pid=$$(cat $(DEVNODE_PIDFILE) 2>/dev/null) && kill -0 $$pid 2>/dev/null; then echo "devnode: agent pid $$pid"; else echo "devnode: agent not running"; fi
	@$(DEVNODE) --status
