# The job image (job_image/kubeslim_job): pipeline tests and benchmark.
.PHONY: test-job bench-pipeline

test-job: $(VENV)/.installed ## the job pipeline tests (real Paddle, devenv S3) and its unit tests
	$(PY) -m pytest tests/job tests/unit/test_dockerfile.py $(wildcard tests/unit/test_job_*.py)

bench-pipeline: $(VENV)/.installed ## time export/calibrate/verify on digits, S3 bytes, peak RSS; mobilenet_v3_small and resnet50 beside plain Paddle Inference (bench_pipeline.py --only digits|networks) -> bench/results/pipeline.json
	@hack/devenv.sh status >/dev/null 2>&1 || $(MAKE) --no-print-directory devenv
	$(PY) bench/bench_pipeline.py
