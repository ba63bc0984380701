.PHONY: bench bench-e2e
bench-e2e: $(VENV)/.installed ## apply → Succeeded on the real node (1 and 4 algos), split by component -> bench/results/e2e.json
	@$(MAKE) --no-print-directory devenv
	$(PY) bench/bench_e2e.py

bench: bench-devenv bench-pipeline bench-operator bench-e2e ## every benchmark; results in bench/results/*.json
