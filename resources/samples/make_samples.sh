#!/usr/bin/env bash
# Rebuild the bundled demo captures on a GPU node with vLLM, Nsight Systems and this package installed:
#
#   bash resources/samples/make_samples.sh WORKDIR DEST
#
# Runs the default study (config/config.yaml: batch 1 and 16 in vLLM's hook mode, batch 16 in-process),
# each run traced and untraced, then for every run copies into DEST/<run>/ the SQLite export with the host
# environment blanked, the traced and untraced run records and what `nsys stats` prints for the export.
set -euo pipefail
WORK=${1:?WORKDIR}; DEST=${2:?DEST}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK" "$DEST"
snakemake -s "$ROOT/Snakefile" --directory "$WORK" --configfile "$ROOT/config/config.yaml" \
  --cores 1 --resources gpu=1 --rerun-incomplete
REPORTS=cuda_api_sum,cuda_gpu_kern_sum,cuda_gpu_mem_size_sum,cuda_gpu_mem_time_sum,cuda_kern_exec_sum,nvtx_gpu_proj_sum,nvtx_sum,osrt_sum
for run_dir in "$WORK"/results/*/; do
  run=$(basename "$run_dir"); [ -f "$run_dir/export/profile.sqlite" ] || continue
  out="$DEST/vllm-$run"; mkdir -p "$out/nsys-stats"
  cp "$run_dir/export/profile.sqlite" "$out/profile.sqlite"
  # The export carries the host's environment variables: blank them, change nothing else.
  python3 - "$out/profile.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("UPDATE TARGET_INFO_SYSTEM_ENV SET value = '' WHERE name = 'DeviceEnvironment'")
db.execute("UPDATE META_DATA_CAPTURE SET value = '' WHERE name LIKE '%ENVIRONMENT_VARIABLE%'")
db.commit(); db.execute("VACUUM"); db.close()
PY
  cp "$run_dir/profile/run.json" "$out/run.json"
  cp "$run_dir/baseline/run.json" "$out/baseline.json"
  nsys stats --format csv --timeunit ns -r "$REPORTS" --force-export false --force-overwrite true \
    -o "$out/nsys-stats/profile" "$out/profile.sqlite" > "$out/nsys-stats/nsys-stats.log" 2>&1
done
