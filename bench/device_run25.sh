#!/bin/bash
# Issue 18, next device session (~9 min, not run yet): the scan reading x, B and C in place (no layout
# copies) timed inside the compiled AiM-L step, side by side with the compiled PyTorch scan that
# choose_scan still picks there, and the profile of the step. If the Triton row wins, choose_scan takes it
# for compiled training too.
#   bash bench/device_run25.sh        (results in $OUT/h200_run25_*)
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $OUT/h200_run25_env.txt
timeout 120 python -m pytest -q -p no:cacheprovider tests/test_ssd_triton.py 2>&1 | tail -5 > $OUT/h200_run25_tests.txt
tail -1 $OUT/h200_run25_tests.txt
timeout 330 python -m mambagen bench --generate --decode --train aim-l:compile:chunk128:triton aim-l:compile:chunk128 \
  gpt-l:compile --train-batch 64 --repeat 2 --precision bf16 --out $OUT/h200_run25_training 2>&1 | grep -v "^{" | tail -8
timeout 90 python bench/profile_train.py aim-l 64 $OUT/h200_run25_profile_aim_l_compiled_triton.txt compile triton chunk128 \
  | head -30 | cut -c1-200
