#!/usr/bin/env bash
# Run 15 (issue 15, H200): sample-many's token generation (the family's fast path with per-row streams)
# beside `mambagen bench`'s fast path, batch 16 and 64, bf16, CFG 1.5, side by side in one run; the per-row
# streams checked against the reference loop first. MODELS picks the models of this call.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/rows_check.py $OUT/h200_run15${PART}_rows_check.json ${MODELS} 2>&1 | grep -v Warn | tail -8
GEN=""; for m in ${MODELS}; do GEN="$GEN $m:fast $m:sample-many"; done
python3 -m mambagen bench --generate $GEN --decode ${DECODE:-} --batch 16 64 --precision bf16 --cfg 1.5 \
  --repeat 3 --out $OUT/h200_run15${PART} 2>&1 | grep -v Warn | tail -40
