# llmprof: CUDA 13 + PyTorch 2.11 + vLLM 0.24.0 + Nsight Systems CLI + this package, pinned.
# Build: docker build -t ghcr.io/llmprof/llmprof:0.1.0 .    Run: snakemake --sdm apptainer (see README).
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

ARG NSYS_PACKAGE=nsight-systems-2025.3.1
ARG TORCH_VERSION=2.11.0
ARG VLLM_VERSION=0.24.0
ARG NVTX_VERSION=0.2.17
ARG SNAKEMAKE_VERSION=9.27.1

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VLLM_WORKER_MULTIPROC_METHOD=spawn \
    VLLM_NO_USAGE_STATS=1 \
    PATH=/opt/venv/bin:$PATH

# The Nsight Systems CLI comes from the CUDA apt repository of the base image, pinned by its versioned package name.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv "${NSYS_PACKAGE}" libdw1 libelf1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3.12 -m venv /opt/venv

RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cu130 \
    && pip install "vllm==${VLLM_VERSION}" "nvtx==${NVTX_VERSION}" "snakemake==${SNAKEMAKE_VERSION}"

COPY pyproject.toml README.md /opt/llmprof/
COPY src /opt/llmprof/src
RUN pip install "/opt/llmprof[gpu]"

WORKDIR /work
CMD ["llmprof", "--help"]
