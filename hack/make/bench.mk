.PHONY: bench bench-e2e
bench-e2e: $(VENV)/.installed ## apply → Succeeded for the demo job (1 and 4 algos), split by component -> bench/results/e2e.json
	@hack/devenv.sh status >/dev/null 2>&1 || $(MAKE) --no-print-directory devenv
	@$(MAKE) --no-print-directory devnode-up
	$(PY) bench/bench_e2e.py

bench: bench-devenv bench-pipeline bench-operator bench-e2e ## every benchmark; results in bench/results/*.json
