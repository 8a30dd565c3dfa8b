#!/usr/bin/env bash
# Several study runs at once on one GPU (the ~6.4M-parameter models leave an H100 mostly idle), then one
# archive of their metrics, grids and curves in $OUT/study_runs.tgz. Same settings as bench/study_demo.sh.
#   MODELS="arpg-small:vq-f8-small aim-small-nope:vq-f8-small" bash bench/study_parallel.sh
set -uo pipefail
OUT=${OUT:-/tmp/study_out}; mkdir -p $OUT
for spec in $MODELS; do
  name=${spec%%:*}
  STAGE=generators MODELS=$spec OUT=/tmp/study_$name bash bench/study_demo.sh > $OUT/log_$name.txt 2>&1 &
done
wait
grep -h "done:" $OUT/log_*.txt
tar czf $OUT/study_runs.tgz --exclude='*.safetensors' --exclude='samples' --exclude='samples_0*.png' -C .devdata/study runs
tar czf $OUT/logs.tgz -C $OUT --remove-files $(cd $OUT && ls log_*.txt)
ls -la $OUT
