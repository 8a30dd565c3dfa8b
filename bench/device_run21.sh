#!/bin/bash
# Issue 18, device call 1 of this session: our Triton training scan on the H200 - its tests on the GPU, the
# checks against the reference (bf16, AiM-L shapes), the scan alone side by side, and AiM-L training with it.
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > $OUT/h200_run21_env.txt
python -m pytest -q -p no:cacheprovider tests/test_ssd_triton.py 2>&1 | tail -30 > $OUT/h200_run21_tests.txt; tail -2 $OUT/h200_run21_tests.txt
python bench/check_fast_gpu.py $OUT/h200_run21_triton_scan_checks.json triton-scan 2>&1 | tail -3
timeout 120 python bench/scan_speed.py $OUT/h200_run21_scan_speed.json 2>&1 | tail -14
timeout 360 python -m mambagen bench --generate --decode --train aim-l:compile:chunk128 aim-l:compile:chunk256 \
  gpt-l:compile aim-l:compile:chunk128:torchscan --train-batch 64 --repeat 2 --precision bf16 \
  --out $OUT/h200_run21_training 2>&1 | grep -v "^{" | tail -12
