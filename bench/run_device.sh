#!/usr/bin/env bash
# One device call: environment, GPU checks of the fast paths, a step profile, then the side-by-side benchmark.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/check_fast_gpu.py $OUT/fast_checks.json ${CHECKS:-mvar-d16 arpg-l} > $OUT/fast_checks.log 2>&1; tail -3 $OUT/fast_checks.log
python3 bench/profile_step.py aim-l 16 $OUT/profile_aim_l.txt > /dev/null 2>&1; head -30 $OUT/profile_aim_l.txt | cut -c1-160
python3 -m mambagen bench --generate ${GEN:-mvar-d16:graph arpg-l:graph var-d16 var-d16:graph} \
  --decode ${DECODE:-msvq-f16} --train ${TRAIN:-aim-l aim-l:compile mvar-d16} \
  --batch 16 --train-batch 64 --precision bf16 --repeat 3 --out $OUT/h100_bench 2>&1 | grep -v Warn | tail -30
