#!/bin/bash
# nsys analyze oracles, help texts and nsys recipe runs for every export in $EXPORTS (files named
# <source>__<name>.sqlite), run on the GPU machine (a `device` run carrying the exports and .device/nsys-env.sh
# with its two .deb files, see ../shared/device/README.md); writes $OUT/oracles.tgz.
set -u
T0=$(date +%s); left() { [ $(( $(date +%s) - T0 )) -lt ${1:-480} ]; }
source "${NSYS_ENV:-.device/nsys-env.sh}"  # nsys 2025.3.1 on PATH
W=/tmp/w; mkdir -p $W/analyze $W/help $W/recipes
RULES=cuda_api_sync,cuda_memcpy_sync,cuda_memcpy_async,cuda_memset_sync,gpu_gaps,gpu_time_util
nsys analyze --help > $W/help/analyze.txt 2>&1
for r in ${RULES//,/ }; do nsys analyze --help-rules $r > $W/help/rule_$r.txt 2>&1; done
nsys analyze --help-rules ALL > $W/help/rules_all.txt 2>&1
nsys recipe --help > $W/help/recipe.txt 2>&1
nsys profile --help > $W/help/profile.txt 2>&1
nsys stats --help > $W/help/stats.txt 2>&1
nsys --version > $W/help/version.txt 2>&1
mkdir -p $W/nsys-py; H=$(dirname $(readlink -f $(which nsys)))
for f in $(find $H/.. -name '*.py' \( -path '*rules*' -o -name 'gpustats.py' -o -name 'nsysstats.py' \) 2>/dev/null | head -40); do cp $f $W/nsys-py/; done
find $H/.. -maxdepth 3 -type d | head -50 > $W/help/nsys-tree.txt
for f in ${EXPORTS:-.device/exports}/*.sqlite; do
  n=$(basename $f .sqlite); d=$W/analyze/$n; mkdir -p $d
  cp $f $d/in.sqlite
  timeout 120 nsys analyze -r $RULES --format csv --output $d/csv --force-overwrite true $d/in.sqlite > $d/stdout_csv.txt 2> $d/stderr_csv.txt; echo "rc=$?" >> $d/stderr_csv.txt
  timeout 120 nsys analyze -r $RULES --format column $d/in.sqlite > $d/column.txt 2> $d/stderr_column.txt; echo "rc=$?" >> $d/stderr_column.txt
  timeout 120 nsys analyze -r $RULES --format json --output $d/json --force-overwrite true $d/in.sqlite > $d/stdout_json.txt 2> $d/stderr_json.txt
  timeout 120 nsys analyze -r gpu_gaps:gap=1,gpu_time_util:threshold=90:chunks=100,cuda_api_sync:rows=-1,cuda_memcpy_async:rows=-1,cuda_memcpy_sync:rows=-1 --format csv --output $d/opt --force-overwrite true $d/in.sqlite > $d/stdout_opt.txt 2> $d/stderr_opt.txt; echo "rc=$?" >> $d/stderr_opt.txt
  rm -f $d/in.sqlite
  ls $d | head -30
done
for n in nsys-real__nsysai__mfu_2gpu_before nsys-real__nsysai__h100_2gpu_1s nsys-real__nsysai__mfu_2gpu_after; do
  for r in nccl_sum nccl_gpu_overlap_trace gpu_gaps gpu_time_util cuda_gpu_kern_pace; do
    left 470 || break 2
    o=$W/recipes/${n}__$r
    timeout 60 nsys recipe $r --input ${EXPORTS:-.device/exports}/$n.sqlite --output $o --force-overwrite --csv > $o.log 2>&1; echo "rc=$?" >> $o.log
  done
done
find $W/recipes -name '*.parquet' -o -name '*.ipynb' | head -50
cd /tmp && tar czf $OUT/oracles.tgz w && ls -la $OUT
