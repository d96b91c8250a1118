#!/usr/bin/env bash
# One call of the overhead ladder on the GPU machine (the `device` tool's `run`), from the repository root:
#
#   bash benchmarks/overhead/device_call.sh [--install] [--final] BUDGET_S
#
# --install : first assemble and install the vLLM bundle (parts p00..p04 already copied to /tmp/vllm-parts by
#             earlier calls, p05 + install.sh + SHA256SUMS carried in .device/vllm/), as ../shared/device/README.md
# --final   : let run_ladder.py run its reserved untraced runs at the end
# BUDGET_S  : seconds from now by which the ladder must stop starting work (keep it ~35 s under the call's limit)
# Needs .device/nsys-env.sh and its two .deb files carried.  Writes to $OUT: ladder_state.json, driver.log,
# logs_tail.txt, and on the first call env.txt and nsys_profile_help.txt.
set -uo pipefail
T0=$(date +%s)
INSTALL=0; FINAL=""
while [ $# -gt 1 ]; do
  case "$1" in --install) INSTALL=1;; --final) FINAL="--final";; *) echo "unknown $1"; exit 2;; esac; shift
done
BUDGET=${1:?BUDGET_S}
HERE=benchmarks/overhead
OUT=${OUT:-/tmp/ovh-out}; mkdir -p "$OUT" /tmp/ovh
if [ "$INSTALL" = 1 ] && [ ! -f /tmp/site/vllm_env.sh ]; then
  mkdir -p /tmp/vllm-parts && cp .device/vllm/p05 /tmp/vllm-parts/ \
    && SKIP_CHECK=1 PARTS_DIR=/tmp/vllm-parts bash .device/vllm/install.sh > /tmp/pp 2> /tmp/install.log
  rc=$?; tail -n 30 /tmp/install.log > "$OUT/install_tail.txt"
  [ $rc = 0 ] || { echo "INSTALL FAILED rc=$rc"; cat "$OUT/install_tail.txt"; exit 1; }
  echo "install: $(( $(date +%s) - T0 )) s"
fi
unset PYTHONPATH
source /tmp/site/vllm_env.sh || { echo "no /tmp/site/vllm_env.sh: vLLM not installed on this machine"; exit 1; }
source .device/nsys-env.sh || { echo "nsys-env.sh failed"; exit 1; }
if [ ! -f /tmp/model/config.json ]; then
  python3 $HERE/make_model.py /tmp/model > /tmp/make_model.log 2>&1 || { tail -20 /tmp/make_model.log; exit 1; }
  echo "model: $(( $(date +%s) - T0 )) s"
fi
if [ ! -f /tmp/ovh/nsys_profile_help.txt ]; then
  nsys profile --help > /tmp/ovh/nsys_profile_help.txt 2>&1
  cp /tmp/ovh/nsys_profile_help.txt "$OUT/"
  { date -u; echo; nvidia-smi; echo; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv
    echo; lscpu; echo; free -g; echo; uname -a; echo; nsys --version; echo
    ls -d /tmp/site/*.dist-info 2>/dev/null | grep -i -E 'vllm|nvtx'
  } > "$OUT/env.txt" 2>&1
fi
python3 $HERE/run_ladder.py --state-dir /tmp/ovh --out "$OUT" --deadline-epoch $(( T0 + BUDGET )) $FINAL \
  --help-text /tmp/ovh/nsys_profile_help.txt 2>&1 | tee "$OUT/driver.log"
for f in /tmp/ovh/logs/*.log; do
  [ "$(stat -c %Y "$f")" -ge "$T0" ] || continue
  echo "===== $f"; grep -v '^\s*$' "$f" | grep -iv 'it/s\]' | tail -n 25
done > "$OUT/logs_tail.txt" 2>&1
echo "call: $(( $(date +%s) - T0 )) s"
