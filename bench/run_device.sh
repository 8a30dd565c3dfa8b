#!/usr/bin/env bash
# One device call: environment, GPU checks of the fast paths, a step profile, then the side-by-side benchmark.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/check_fast_gpu.py $OUT/fast_checks.json ${CHECKS:-ssm-kernel aim-b mvar-d16} > $OUT/fast_checks.log 2>&1; tail -3 $OUT/fast_checks.log
python3 bench/profile_step.py aim-l 16 $OUT/profile_aim_l.txt > /dev/null 2>&1; head -14 $OUT/profile_aim_l.txt | cut -c1-60,120-150
python3 -m mambagen bench --generate ${GEN:-aim-l:fast aim-b:fast aim-xl:fast mvar-d16:graph mvar-d20:graph arpg-xl:graph var-d20:graph gpt-b:fast} \
  --decode ${DECODE:-msvq-f16} --train ${TRAIN:-aim-l:ckpt mvar-d16:ckpt arpg-l} \
  --batch 16 --train-batch 64 --precision bf16 --repeat 3 --out $OUT/h100_bench 2>&1 | grep -v Warn | tail -30
