#!/usr/bin/env bash
# Run 11 (one device call): the compiled causal conv (shifted sums) - training checks and AiM-L / GPT-L
# training side by side, the M-VAR sampler check and its throughput.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 bench/check_fast_gpu.py $OUT/fast_checks.json scan mvar-d16 2>&1 | tail -2 | cut -c1-900
python3 -m mambagen bench --generate mvar-d16:fast --decode --train aim-l:compile:chunk128 gpt-l --batch 16 \
  --train-batch 64 --precision bf16 --repeat 3 --out $OUT/h100_run11 2>&1 | grep "|" | tail -10
