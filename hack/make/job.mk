# The job image (job_image/kubeslim_job): pipeline tests and benchmark, and the GPU image.
.PHONY: test-job bench-pipeline images-gpu test-gpu-image

test-job: $(VENV)/.installed ## the job pipeline tests (real Paddle, devenv S3) and its unit tests
	$(PY) -m pytest tests/job tests/unit/test_dockerfile.py $(wildcard tests/unit/test_job_*.py)

bench-pipeline: $(VENV)/.installed ## time export/calibrate/verify on digits, S3 bytes, peak RSS; mobilenet_v3_small and resnet50 beside plain Paddle Inference (bench_pipeline.py --only digits|networks) -> bench/results/pipeline.json
	@devenv/devenv.sh status >/dev/null 2>&1 || $(MAKE) --no-print-directory devenv
	$(PY) bench/bench_pipeline.py

# Not part of make images, demo or test's required images: the GPU image is several GB.
images-gpu: $(VENV)/.installed ## build the GPU job image (paddlepaddle-gpu 2.6.2 + CUDA 11.8/cuDNN 8.6 wheels on the Debian base; no TensorRT on PyPI) and push it to the devenv registry
	@devenv/node.sh runtime
	@devenv/images.sh gpu

test-gpu-image: images-gpu ## the GPU job image's tests without a GPU: CUDA build, every library Paddle loads resolves, kubeslim-job fails NoGPU
	KUBESLIM_GPU_IMAGE=required $(PY) -m pytest tests/e2e/test_gpu_image.py -p no:cacheprovider $(PYTEST_ARGS)
