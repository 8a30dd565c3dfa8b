#!/usr/bin/env bash
# Run 12 (one device call): the fast paths at batch 64 (bf16) and in fp32 (batch 16), each a side-by-side run.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 -m mambagen bench --generate aim-l:fast gpt-l:fast arpg-l:fast mvar-d16:fast var-d16:fast --decode vq-f16 \
  --batch 64 --precision bf16 --repeat 3 --out $OUT/h100_run12_batch64 2>&1 | grep "|\|FAILED" | tail -10
python3 -m mambagen bench --generate aim-l:fast gpt-l:fast arpg-l:fast mvar-d16:fast --decode \
  --batch 16 --precision fp32 --repeat 3 --out $OUT/h100_run12_fp32 2>&1 | grep "|\|FAILED" | tail -8
