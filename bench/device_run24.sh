#!/bin/bash
# Issue 18, one device call (~9 min): the Triton scan with C.B^T computed once per chunk and group (and its
# tiles' rows tuned) - GPU tests, checks against the reference, the scan alone side by side with the compiled
# PyTorch scan; the eager conv+SiLU / gated-norm kernels checked; training side by side (eager with the
# kernels, compiled with the Triton scan, GPT-L compiled); a kernel profile of the compiled AiM-L step.
#   bash bench/device_run24.sh        (results in $OUT/h200_run24_*)
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $OUT/h200_run24_env.txt
timeout 100 python -m pytest -q -p no:cacheprovider tests/test_ssd_triton.py tests/test_mamba2_kernels.py 2>&1 \
  | tail -30 > $OUT/h200_run24_tests.txt; tail -2 $OUT/h200_run24_tests.txt
timeout 90 python bench/check_fast_gpu.py $OUT/h200_run24_triton_scan_checks.json triton-scan 2>&1 | tail -2 | cut -c1-400
timeout 60 python bench/check_fast_gpu.py $OUT/h200_run24_training_kernels_checks.json training-kernels 2>&1 | tail -2 | cut -c1-400
timeout 90 python bench/scan_speed.py $OUT/h200_run24_scan_speed.json 2>&1 | tail -8
timeout 200 python -m mambagen bench --generate --decode --train aim-l:compile:chunk128:triton aim-l:chunk128:kernels \
  gpt-l:compile --train-batch 64 --repeat 2 --precision bf16 --out $OUT/h200_run24_training 2>&1 | grep -v "^{" | tail -8
timeout 80 python bench/profile_train.py aim-l 64 $OUT/h200_run24_profile_aim_l_compiled_triton.txt compile triton chunk128 \
  | head -30 | cut -c1-200
