.PHONY: chaos
chaos: $(VENV)/.installed ## chaos and fuzz at full scale (≥ 20 operator kills under ≥ 60 QuantizationJobs, 120 s API outage, API server and S3 outages, 500 fuzzed specs, credential leak) -> bench/results/chaos.json
	@$(MAKE) --no-print-directory devenv
	KUBESLIM_CHAOS_SCALE=full $(PY) -m pytest -p no:cacheprovider -q -s \
	  tests/cluster/test_chaos.py tests/cluster/test_chaos_s3.py tests/cluster/test_fuzz_specs.py \
	  tests/cluster/test_leak_credentials.py $(PYTEST_ARGS)
