#!/usr/bin/env bash
# One device call for the fused Mamba2 decode kernel: GPU checks against the reference, a profile of
# AiM-L's decode step, and AiM-L generation with and without the kernel (and with tuned matmuls), side by side.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/check_fast_gpu.py $OUT/fused_checks.json ${CHECKS:-fused-step aim-b} > $OUT/fused_checks.log 2>&1; cat $OUT/fused_checks.log | cut -c1-600
python3 bench/profile_step.py aim-l 16 $OUT/profile_aim_l_fused.txt > /dev/null 2>&1; head -16 $OUT/profile_aim_l_fused.txt | cut -c1-60,120-150
python3 -m mambagen bench --generate ${GEN:-aim-l:fast aim-l:fast-unfused aim-l:fast-autotune} --decode \
  --batch 16 --precision bf16 --repeat 3 --out $OUT/h100_fused 2>&1 | grep -v Warn | tail -12
