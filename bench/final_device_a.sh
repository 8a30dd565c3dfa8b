#!/usr/bin/env bash
# Final side-by-side run, part A: GPU checks, AiM-L step breakdown, raster generation (AiM, GPT).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/env.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/env.txt
python3 bench/check_fast_gpu.py $OUT/h100_run6_fast_checks.json fused-step aim-b gpt-b > $OUT/checks.log 2>&1; cut -c1-300 $OUT/checks.log
python3 bench/decode_parts.py $OUT/h100_run6_decode_parts.json 32 2>&1 | grep -v Warn | grep -v "triton split" | head -20
python3 -m mambagen bench --generate aim-l:fast aim-l:fast-unfused aim-l:reference aim-b:fast aim-xl:fast gpt-l:fast --decode vq-f16 \
  --batch 16 --precision bf16 --repeat 3 --out $OUT/h100_run6 2>&1 | grep -v Warn | tail -12
