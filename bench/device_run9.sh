#!/usr/bin/env bash
# Run 9, two device calls (each under the 10-minute limit):
#   bash bench/device_run9.sh checks   the M-VAR and ARPG fast samplers vs eager (fp32 greedy), their profiles
#   bash bench/device_run9.sh bench    the side-by-side benchmark of every family's paths, `mambagen sample` on CUDA
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if [ "$1" = checks ]; then
  python3 bench/check_fast_gpu.py $OUT/fast_checks.json mvar-d16 arpg-l 2>&1 | tail -2 | cut -c1-600
  python3 bench/profile_call.py mvar-d16 16 $OUT/profile_mvar_fast.txt fast 2>&1 | tail -1
  python3 bench/profile_call.py arpg-l 16 $OUT/profile_arpg_fast.txt fast 2>&1 | tail -1
else
  python3 -m mambagen bench --generate aim-l:fast gpt-l:fast arpg-l:graph arpg-l:fast mvar-d16:graph mvar-d16:fast \
    var-d16:graph mvar-d20:fast arpg-xl:fast --decode --batch 16 --precision bf16 --repeat 3 --out $OUT/h100_run9 2>&1 | grep "|" | tail -14
  ( time python3 -m mambagen sample --out $OUT/sample_cuda.png ) 2>&1 | grep -v Warn | tail -4
  ( time python3 -m mambagen sample --reference --out $OUT/sample_cuda_reference.png ) 2>&1 | grep -v Warn | tail -4
fi
