#!/bin/bash
# Issue 18, next device session: the eager Triton training path of Mamba2 (conv+SiLU, scan, gated norm) checked
# and timed side by side with the PyTorch paths, and a kernel profile of each training step. Two calls:
#   PART=checks bash bench/device_run23.sh      # GPU tests + checks + the eager side by side (~8 min)
#   PART=compiled bash bench/device_run23.sh    # compiled side by side + profiles (~9 min)
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0
case "${PART:-checks}" in
  checks)
    python -m pytest -q -p no:cacheprovider tests/test_ssd_triton.py tests/test_mamba2_kernels.py 2>&1 | tail -30 \
      > $OUT/h200_run23_tests.txt; tail -2 $OUT/h200_run23_tests.txt
    python bench/check_fast_gpu.py $OUT/h200_run23_training_kernels_checks.json training-kernels 2>&1 | tail -2 | cut -c1-600
    timeout 330 python -m mambagen bench --generate --decode --train aim-l:chunk128:kernels aim-l:chunk128 \
      aim-l:chunk128:torchscan gpt-l --train-batch 64 --repeat 2 --precision bf16 \
      --out $OUT/h200_run23_training_eager 2>&1 | grep -v "^{" | tail -8 ;;
  compiled)
    timeout 300 python -m mambagen bench --generate --decode --train aim-l:compile:chunk128 aim-l:compile:chunk128:triton \
      gpt-l:compile --train-batch 64 --repeat 2 --precision bf16 --out $OUT/h200_run23_training_compiled 2>&1 \
      | grep -v "^{" | tail -8
    timeout 100 python bench/profile_train.py aim-l 64 $OUT/h200_run23_profile_aim_l_eager.txt kernels chunk128 | tail -5
    timeout 150 python bench/profile_train.py aim-l 64 $OUT/h200_run23_profile_aim_l_compiled_triton.txt compile triton chunk128 | tail -5 ;;
esac
