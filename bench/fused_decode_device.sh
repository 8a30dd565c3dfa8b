#!/usr/bin/env bash
# One device call for the fused AiM decode path: GPU checks against the reference, the in-graph
# breakdown of AiM-L's step (bench/decode_parts.py), a step profile, and generation side by side.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/check_fast_gpu.py $OUT/fused_checks.json ${CHECKS:-aim-b} > $OUT/fused_checks.log 2>&1; cut -c1-400 $OUT/fused_checks.log
python3 bench/decode_parts.py $OUT/decode_parts.json 32 2>&1 | grep -v Warn | head -14
python3 bench/profile_step.py aim-l 16 $OUT/profile_aim_l_fused.txt > /dev/null 2>&1; head -14 $OUT/profile_aim_l_fused.txt | cut -c1-60,150-175
python3 -m mambagen bench --generate ${GEN:-aim-l:fast aim-b:fast} --decode \
  --batch 16 --precision bf16 --repeat 3 --out $OUT/h100_fused 2>&1 | grep -v Warn | tail -9
