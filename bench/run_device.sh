#!/usr/bin/env bash
# One device call: environment, GPU checks of the fast paths, then the side-by-side benchmark.
set -uo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
export PYTHONPATH=$PWD
python3 bench/check_fast_gpu.py $OUT/fast_checks.json > $OUT/fast_checks.log 2>&1; tail -3 $OUT/fast_checks.log
python3 -m mambagen bench --generate aim-l:reference aim-b:fast aim-l:fast aim-xl:fast gpt-l:reference gpt-b:fast \
  gpt-l:fast gpt-xl:fast mvar-d16 mvar-d20 var-d16 var-d20 --decode vq-f16 msvq-f16 --train aim-l gpt-l mvar-d16 \
  --batch 16 --train-batch 64 --precision bf16 --repeat 3 --out $OUT/h100_bench 2>&1 | grep -v Warn | tail -45
