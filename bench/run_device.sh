#!/usr/bin/env bash
# One device call: environment, GPU checks of the fast paths, then the side-by-side benchmark.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/check_fast_gpu.py $OUT/fast_checks.json ${CHECKS:-aim-b gpt-b} > $OUT/fast_checks.log 2>&1; tail -3 $OUT/fast_checks.log
python3 -m mambagen bench --generate ${GEN:-aim-l:reference aim-l:fast gpt-l:reference gpt-l:fast mvar-d16 arpg-l} \
  --decode ${DECODE:-vq-f16} --train ${TRAIN:-aim-l gpt-l} \
  --batch 16 --train-batch 64 --precision bf16 --repeat 3 --out $OUT/h100_bench 2>&1 | grep -v Warn | tail -30
