#!/usr/bin/env bash
# Wheels that `vllm serve` and `vllm bench serve` need on an offline GPU node that can already run vLLM's offline
# engine (LLM.generate): every runtime dependency of vLLM 0.24.0 for CPython 3.12 on x86_64, resolved by pip here
# (where PyPI is reachable), less torch, triton, the CUDA libraries and the GPU kernel packages, which a node that
# runs vLLM has. Run in the repository root:
#
#   bash benchmarks/serve/device_wheels.sh              # -> .whl/ (git-ignored through .git/info/exclude)
#
# then, on the GPU node, with vLLM importable and SITE a folder on its PYTHONPATH, install only what is missing:
#   python3 benchmarks/serve/install_missing.py SITE .whl
# (on the H200 on 2026-12-03, 63 of these 136 wheels were missing, uvicorn and model_hosting_container_standards
# among them; with them installed, `vllm serve` and `vllm bench serve` ran the serving study).
set -euo pipefail
VLLM=${VLLM:-vllm==0.24.0}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=()
for tag in manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_26 manylinux_2_24 manylinux_2_17 \
           manylinux2014 manylinux_2_5 manylinux1 linux; do PLATFORMS+=(--platform "${tag}_x86_64"); done
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}")
# vLLM's own requirements (read from the index's metadata, the wheel is not downloaded), less what pins the GPU
# stack: torch, the kernel packages, the CUDA libraries
python3 -m pip install -q --dry-run --ignore-installed --no-deps --report "$WORK/vllm.json" "${TARGET[@]}" \
  --target "$WORK/t" "$VLLM"
python3 - "$WORK/vllm.json" > "$WORK/requirements.txt" <<'PY'
import json, re, sys
GPU = re.compile(r"^(torch|torchaudio|torchvision|triton|flashinfer|tilelang|nvidia-|cuda-|fastsafetensors|quack-kernels|"
                 r"tokenspeed|humming|numba|apache-tvm)", re.I)
(vllm,) = json.load(open(sys.argv[1]))["install"]
for requirement in vllm["metadata"].get("requires_dist", []):
    if "extra ==" not in requirement and not GPU.match(requirement):
        print(requirement)
PY
python3 -m pip install -q --dry-run --ignore-installed --report "$WORK/report.json" "${TARGET[@]}" \
  --target "$WORK/t" -r "$WORK/requirements.txt"
python3 - "$WORK/report.json" > "$WORK/urls.txt" <<'PY'
import json, re, sys
SKIP = re.compile(r"^(torch|triton|sympy|networkx|mpmath|numpy|setuptools|opencv-python-headless|nvidia-|cuda-)", re.I)
for item in json.load(open(sys.argv[1]))["install"]:
    if not SKIP.match(item["metadata"]["name"]):
        print(item["download_info"]["url"])
PY
(cd .whl && xargs -n 1 -P 8 curl -sSfLO < "$WORK/urls.txt")
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
