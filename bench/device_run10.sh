#!/usr/bin/env bash
# Run 10 (one device call): AiM-L's decode step with PDL / in_proj variants, then the fused-path checks.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
python3 bench/pdl_step.py $OUT/pdl_step.json 2>&1 | grep -v Warn | tail -8 | cut -c1-900
python3 bench/check_fast_gpu.py $OUT/fast_checks.json fused-step aim-b 2>&1 | tail -2 | cut -c1-700
