#!/usr/bin/env bash
# Run 13 (one device call): the fused Mamba2 decode kernel with several heads per program (AiM-L).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 bench/fused_heads.py $OUT/fused_heads.json 2>&1 | grep -v "^W\|Warn" | tail -16
