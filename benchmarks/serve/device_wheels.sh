#!/usr/bin/env bash
# Wheels that `vllm serve` and `vllm bench serve` need beyond the offline vLLM bundle
# (../shared/device/pack-vllm.sh packs what LLM.generate needs; the server also imports uvicorn,
# Prometheus instrumentation, aiohttp and model_hosting_container_standards; tried on the H200 on 2026-12-03, the
# server stopped at each in turn, so more may follow: import vllm.entrypoints.openai.api_server there first). Run here, in the repository root, where pip reaches PyPI:
#
#   bash benchmarks/serve/device_wheels.sh          # -> .whl/ (git-ignored through .git/info/exclude)
#
# then carry ".whl" on the GPU machine and install with
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
set -euo pipefail
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_31_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d .whl \
  uvicorn h11 click prometheus_client prometheus_fastapi_instrumentator \
  aiohttp aiohappyeyeballs aiosignal frozenlist multidict yarl propcache attrs \
  anyio httpx httpcore certifi idna setproctitle python-multipart watchfiles \
  model-hosting-container-standards jmespath supervisor
ls .whl
