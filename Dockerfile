# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target operator -t kubeslim-operator .
#   docker build --target job      -t kubeslim-job .
# Versions are pinned here and must match pyproject.toml / the Makefile (tests/unit/test_dockerfile.py).
#
# Both run as a numeric non-root user (Pod Security "restricted" can verify runAsNonRoot only for a
# numeric USER) and need no writable path in the image: the job writes only to /work and /tmp,
# which the operator mounts as emptyDir volumes, so readOnlyRootFilesystem: true works.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# paddlepaddle-gpu 2.6.2 on PyPI is built for CUDA 12.0 + cuDNN 8.9; TensorRT 8.6 matches it.
ARG CUDA_IMAGE=nvidia/cuda:12.0.1-cudnn8-runtime-ubuntu22.04

# ---- build the kubeslim wheel once, and the job's requirement list from pyproject -------------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml ./
COPY job_image/ job_image/
COPY operator/ operator/
RUN pip install --no-cache-dir "setuptools>=77" wheel \
 && pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels . \
 && python - <<'EOF'
# The job extra names the CPU paddle wheel; the job image installs the GPU build of the same
# version instead, so write the extra without it (plus the shared base dependencies).
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + [r for r in project["optional-dependencies"]["job"] if not r.startswith("paddlepaddle")]
open("/wheels/job-requirements.txt", "w").write("\n".join(reqs) + "\n")
EOF

# ---- operator -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS operator
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/kubeslim-*.whl)[operator]" && rm -rf /wheels
USER 65532:65532
ENTRYPOINT ["kubeslim-operator"]

# ---- job ----------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS job
ARG PADDLE_VERSION=2.6.2
ARG PADDLESLIM_VERSION=2.6.0
ARG TENSORRT_VERSION=8.6.1.6-1+cuda12.0
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# TensorRT from the CUDA image's NVIDIA apt repository; Paddle dlopens the unversioned libnvinfer.so.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgomp1 \
      libnvinfer8=${TENSORRT_VERSION} libnvinfer-plugin8=${TENSORRT_VERSION} \
 && ln -s libnvinfer.so.8 /usr/lib/x86_64-linux-gnu/libnvinfer.so \
 && ln -s libnvinfer_plugin.so.8 /usr/lib/x86_64-linux-gnu/libnvinfer_plugin.so \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/kubeslim
ENV PATH=/opt/kubeslim/bin:$PATH
COPY --from=wheel /wheels /wheels
# paddleslim goes in --no-deps: it pins opencv-python==4.6 and more; its real imports are in the job extra.
RUN pip install --no-cache-dir paddlepaddle-gpu==${PADDLE_VERSION} \
 && pip install --no-cache-dir -r /wheels/job-requirements.txt \
 && pip install --no-cache-dir --no-deps /wheels/kubeslim-*.whl \
 && pip install --no-cache-dir --no-deps paddleslim==${PADDLESLIM_VERSION} \
 && python -m compileall -q /opt/kubeslim \
 && rm -rf /wheels
# Everything that wants to write goes to the mounted volumes (/tmp and /work are emptyDirs).
ENV HOME=/tmp/home MPLCONFIGDIR=/tmp/matplotlib XDG_CACHE_HOME=/tmp/cache
WORKDIR /work
USER 65532:65532
ENTRYPOINT ["kubeslim-job"]
