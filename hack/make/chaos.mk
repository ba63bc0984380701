.PHONY: chaos
chaos: $(VENV)/.installed ## chaos and fuzz at full scale (≥ 20 operator kills under ≥ 60 QuantizationJobs, 120 s API outage, API server and S3 outages, a flaky S3 (toxiproxy + 5xx), node loss, 500 fuzzed specs, credential leak) -> bench/results/chaos.json
	@$(MAKE) --no-print-directory devenv
	@hack/build-tools.sh toxiproxy
	KUBESLIM_CHAOS_SCALE=full $(PY) -m pytest -p no:cacheprovider -q -s \
	  tests/cluster/test_chaos.py tests/cluster/test_chaos_s3.py tests/cluster/test_fuzz_specs.py \
	  tests/cluster/test_leak_credentials.py $(PYTEST_ARGS)
	@# Last and alone: it stops the real node's kubelet and containerd for minutes.
	KUBESLIM_CHAOS_SCALE=full $(PY) -m pytest -p no:cacheprovider -q -s tests/cluster/test_chaos_node.py $(PYTEST_ARGS)
