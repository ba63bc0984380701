.PHONY: bench bench-e2e bench-fallback bench-calibration bench-ranking
bench-e2e: $(VENV)/.installed ## apply → Succeeded on the real node (1 and 4 algos), split by component; the 4-algo sweep with parallelism 1 and 4 -> bench/results/e2e.json
	@$(MAKE) --no-print-directory devenv
	$(PY) bench/bench_e2e.py

bench-fallback: $(VENV)/.installed ## plain PTQ vs accuracy-aware fallback on the outlier digits CNN -> bench/results/fallback.json
	@devenv/devenv.sh status >/dev/null 2>&1 || $(MAKE) --no-print-directory devenv
	$(PY) bench/bench_fallback.py

bench-calibration: $(VENV)/.installed ## avg, hist and KL calibration of mobilenet_v3_small with Paddle's KL/hist functions and with kubeslim's (no devenv) -> bench/results/calibration.json
	$(PY) bench/bench_calibration.py

bench-ranking: $(VENV)/.installed ## the fallback's layer ranking from recorded activations (ranking.py) against one calibration, resnet50 and the outlier digits CNN (no devenv) -> bench/results/ranking.json
	$(PY) bench/bench_ranking.py

bench: bench-devenv bench-pipeline bench-operator bench-e2e bench-fallback bench-calibration bench-ranking ## every benchmark; results in bench/results/*.json
