#!/usr/bin/env bash
# Run 7, two device calls (each under the 10-minute limit):
#   bash bench/device_run7.sh checks   checks of the compiled + graphed M-VAR / ARPG samplers, profiles of
#                                      their fast calls, ARPG's attention backends side by side
#   bash bench/device_run7.sh bench    the side-by-side benchmark, `mambagen sample` on CUDA (fast, reference)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if [ "$1" = checks ]; then
  python3 bench/check_fast_gpu.py $OUT/fast_checks.json mvar-d16 arpg-l 2>&1 | tail -2 | cut -c1-400
  python3 bench/profile_call.py mvar-d16 16 $OUT/profile_mvar_fast.txt fast 2>&1 | tail -1
  python3 bench/profile_call.py arpg-l 16 $OUT/profile_arpg_fast.txt fast 2>&1 | tail -1
  python3 bench/arpg_attention.py $OUT/arpg_attention.json 2>&1 | grep "^{"
else
  python3 -m mambagen bench --generate mvar-d16:graph mvar-d16:fast arpg-l:graph arpg-l:fast mvar-d20:fast \
    arpg-xl:fast var-d16:fast --decode --batch 16 --precision bf16 --repeat 3 --out $OUT/h100_run7 2>&1 | grep "|" | tail -12
  ( time python3 -m mambagen sample --out $OUT/sample_cuda.png ) 2>&1 | grep -v Warn | tail -4
  ( time python3 -m mambagen sample --reference --out $OUT/sample_cuda_reference.png ) 2>&1 | grep -v Warn | tail -4
fi
