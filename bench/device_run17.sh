#!/bin/bash
# Issue 16 on the H200: the faults of bench/check_faults_gpu.py on CUDA (SIGTERM in train, one process and
# torchrun+NCCL; resume; sample and sample-many of the resumed model; a flipped bit; info), then the fault,
# training and checkpoint tests with a GPU visible (their CLI calls default to cuda there).
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python bench/check_faults_gpu.py $OUT/h200_run17_faults.json 2>&1 | tail -40
python -m pytest -q -p no:cacheprovider tests/test_faults.py tests/test_checkpoint_cli.py tests/test_train.py \
    tests/test_cli_help.py tests/test_readme.py 2>&1 | tail -15 | tee $OUT/h200_run17_tests.txt
