# Three images from one file (BuildKit):
#   docker build --target operator -t kubeslim-operator .
#   docker build --target job      -t kubeslim-job .        # GPU: paddlepaddle-gpu + CUDA/cuDNN wheels
#   docker build --target job-cpu  -t kubeslim-job-cpu .    # CPU: paddlepaddle 3.x (oneDNN int8)
# Versions are pinned here and must match pyproject.toml / the Makefile (tests/unit/test_dockerfile.py).
# Paddle: the CPU image runs 3.3.x (PyPI's newest), the GPU image 2.6.2 (PyPI's newest GPU wheel; 3.x
# GPU wheels are only on Paddle's own index), the dev venv 2.6.2 (pyproject's job extra). All job
# processes run with FLAGS_enable_pir_api=0, so Paddle 3 writes and quantizes the legacy .pdmodel
# programs PaddleSlim 2.6 needs, and the int8 models run on Paddle 2.6 and 3.x Inference alike.
#
# All run as a numeric non-root user (Pod Security "restricted" can verify runAsNonRoot only for a
# numeric USER) and need no writable path in the image: the job writes only to /work and /tmp,
# which the operator mounts as emptyDir volumes, so readOnlyRootFilesystem: true works.
#
# Offline builds (no registry, no package index: devenv/images.sh on the devenv) pass a local base
# with python3-venv and libgomp1 as PYTHON_IMAGE, an image holding a wheelhouse as WHEELHOUSE (and
# the GPU target's wheels as GPU_WHEELHOUSE) and PIP_OFFLINE=1. With the defaults, pip uses its
# index and the wheelhouses are empty. Every target starts from PYTHON_IMAGE: the GPU one too.
# No `# syntax=` line and no heredocs: the frontend built into the engine is all an offline engine has.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG WHEELHOUSE=scratch
ARG GPU_WHEELHOUSE=scratch

FROM ${WHEELHOUSE} AS wheelhouse
FROM ${GPU_WHEELHOUSE} AS gpu-wheelhouse

# ---- the Python every image starts from: a venv, so Debian's PEP 668 guard never applies ----
FROM ${PYTHON_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PATH=/opt/kubeslim/bin:$PATH
# A passwd entry for the numeric USER: getpass.getuser() (kopf's identity, among others) fails
# for a UID the image does not know.
RUN python3 -m venv /opt/kubeslim \
 && echo 'kubeslim:x:65532:65532:kubeslim:/nonexistent:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'kubeslim:x:65532:' >>/etc/group

# ---- build the kubeslim wheel once, and the job's requirement list from pyproject -------------
FROM python AS wheel
ARG PIP_OFFLINE=
WORKDIR /src
COPY pyproject.toml ./
COPY api/ api/
COPY job_image/ job_image/
COPY operator/ operator/
# The job extra names the CPU paddle wheel; each job image installs its own paddle build of the
# same version, so the list written here leaves paddle out (plus the shared base dependencies).
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse "setuptools>=77" wheel \
 && pip wheel --no-deps --no-build-isolation -w /wheels . \
 && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
reqs = p["dependencies"] + [r for r in p["optional-dependencies"]["job"] if not r.startswith("paddlepaddle")]; \
open("/wheels/job-requirements.txt", "w").write("\n".join(reqs) + "\n")'

# ---- operator -----------------------------------------------------------------------------------
FROM python AS operator
ARG PIP_OFFLINE=
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse "$(ls /wheels/kubeslim-*.whl)[operator]"
USER 65532:65532
ENTRYPOINT ["kubeslim-operator"]

# ---- what both job images share: the job's requirements, kubeslim and paddleslim; each adds its Paddle
FROM python AS job-base
ARG PADDLESLIM_VERSION=2.6.0
ARG PIP_OFFLINE=
# paddle links libgomp from the system; the slim Python images lack it, the offline base has it.
RUN ldconfig -p | grep -q libgomp.so.1 \
 || { apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/*; }
# paddleslim goes in --no-deps: it pins opencv-python==4.6 and more (with paddle 3 it would pull numpy 2
# and an opencv built for numpy 1); its real imports (six, requests, ...) are in the job extra. numpy
# stays on the job extra's <2, which paddle 2.6.2 (GPU image, dev venv) needs and paddle 3.3
# (numpy>=1.21) accepts: every job image runs the same numpy.
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse -r /wheels/job-requirements.txt \
 && pip install --no-deps /wheels/kubeslim-*.whl \
 && pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse --no-deps paddleslim==${PADDLESLIM_VERSION}
# Everything that wants to write goes to the mounted volumes (/tmp and /work are emptyDirs).
# FLAGS_enable_pir_api=0 before any paddle import (kubeslim-job's CLI forces it too): legacy programs.
ENV HOME=/tmp/home MPLCONFIGDIR=/tmp/matplotlib XDG_CACHE_HOME=/tmp/cache FLAGS_enable_pir_api=0
WORKDIR /work

# ---- job, CPU: the devenv's real node and CPU clusters ----------------------------------------------
FROM job-base AS job-cpu
# Paddle 3 (devenv/images.sh puts this version in the devenv's wheelhouse).
ARG PADDLE_VERSION=3.3.1
ARG PIP_OFFLINE=
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse paddlepaddle==${PADDLE_VERSION} \
 && python -m compileall -q /opt/kubeslim
USER 65532:65532
ENTRYPOINT ["kubeslim-job"]

# ---- job, GPU: the same Debian base, CUDA and cuDNN from NVIDIA's PyPI wheels (no CUDA base image) --
FROM job-base AS job
# 2.6.2 until PyPI serves a paddlepaddle-gpu 3.x: the job code runs on 2.6.2 and 3.x alike.
ARG PADDLE_VERSION=2.6.2
ARG PIP_OFFLINE=
# Paddle links no CUDA library: it dlopens each by its unversioned name (libcudnn.so, libcublas.so,
# libcublasLt.so, libcurand.so, libcusolver.so, libcusparse.so, libcufft.so, libnvrtc.so, libnvinfer.so)
# through the loader's search path, and NVIDIA's wheels ship only the versioned files. So every lib dir
# of job_image/gpu-requirements.txt's wheels is named here and gets the unversioned links; the build
# fails if one is missing (another Python version moves site-packages). The driver's libcuda.so.1
# comes from the node (the NVIDIA container toolkit mounts it). No TensorRT: see gpu-requirements.txt.
ARG NVIDIA_LIBS=/opt/kubeslim/lib/python3.11/site-packages/nvidia
ENV LD_LIBRARY_PATH=${NVIDIA_LIBS}/cudnn/lib:${NVIDIA_LIBS}/cublas/lib:${NVIDIA_LIBS}/curand/lib:${NVIDIA_LIBS}/cusolver/lib:${NVIDIA_LIBS}/cusparse/lib:${NVIDIA_LIBS}/cufft/lib:${NVIDIA_LIBS}/cuda_nvrtc/lib
RUN --mount=type=bind,from=gpu-wheelhouse,target=/wheelhouse \
    --mount=type=bind,source=job_image/gpu-requirements.txt,target=/gpu-requirements.txt \
    pip install ${PIP_OFFLINE:+--no-index} --find-links /wheelhouse paddlepaddle-gpu==${PADDLE_VERSION} -r /gpu-requirements.txt \
 && for dir in $(echo "$LD_LIBRARY_PATH" | tr : ' '); do \
      [ -d "$dir" ] || { echo "LD_LIBRARY_PATH names $dir, which no wheel installed" >&2; exit 1; }; \
      for lib in "$dir"/lib*.so.*; do [ -e "${lib%%.so.*}.so" ] || ln -s "${lib##*/}" "${lib%%.so.*}.so"; done; \
    done \
 && python -m compileall -q /opt/kubeslim
USER 65532:65532
ENTRYPOINT ["kubeslim-job"]
