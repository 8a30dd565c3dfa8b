#!/bin/bash
# Issue 18, 2026-12-02 (H200), each part one call under 10 minutes. Ran: part a (its bench's 330 s limit cut
# the two rows after the PyTorch scan's, whose compilation took most of it), part b (its training line was
# cut by its 170 s limit), then, as two direct calls (results h200_run27b_training.*, h200_run27c_scaling_*):
#   mambagen bench --train aim-l:compile:chunk128:triton gpt-l:compile --train-batch 64 --repeat 2 --precision bf16
#   mambagen bench --train aim-l:compile:chunk128:triton gpt-l:compile --train-batch 16 --image-size 512 1024 \
#     --repeat 2 --precision bf16     (AiM-L at 16 x 4096 ran out of the GPU's memory: next, :ckpt)
# and the sweep's files merged on CPU: mambagen bench --merge ... --out bench/results/h200_run27_scaling_all
# The parts as planned:
#   PART=a bash bench/device_run27.sh   # the compiled AiM-L step now that Mamba2._scan no longer breaks its graph
#                                       # (run26c: 6 graphs -> 1 on AiM-B): both scans side by side with GPT-L in
#                                       # one run, the step's profile (does the ~60 ms of GPU idle go?), and
#                                       # mvar-d16's greedy-token check that run26 cut off
#   PART=b bash bench/device_run27.sh   # the rest of the image-size sweep: 384 px for all three, ARPG-L at every
#                                       # size, training tokens/s at 256 and 512 px
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
case "${PART:-a}" in
  a)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > $OUT/h200_run27_env.txt
    timeout 330 python -m mambagen bench --train aim-l:compile:chunk128 aim-l:compile:chunk128:triton gpt-l:compile \
      --train-batch 64 --repeat 2 --precision bf16 --out $OUT/h200_run27_training > $OUT/a.log 2>&1
    grep -v "^{" $OUT/a.log | tail -6
    timeout 100 python bench/profile_train.py aim-l 64 $OUT/h200_run27_profile_aim_l_compiled.txt compile chunk128 \
      >> $OUT/a.log 2>&1
    timeout 110 python bench/check_fast_gpu.py $OUT/h200_run27_fast_checks.json mvar-d16 >> $OUT/a.log 2>&1
    tail -4 $OUT/a.log | cut -c1-300 ;;
  b)
    timeout 220 python -m mambagen bench --generate aim-l:fast gpt-l:fast arpg-l:graph --decode --image-size 384 \
      --batch 16 --repeat 2 --out $OUT/h200_run27_scaling_384 > $OUT/b.log 2>&1
    timeout 170 python -m mambagen bench --generate arpg-l:graph --decode --image-size 256 512 1024 \
      --batch 16 --repeat 2 --out $OUT/h200_run27_scaling_arpg >> $OUT/b.log 2>&1
    timeout 170 python -m mambagen bench --generate --decode --train aim-l:compile gpt-l:compile --train-batch 16 \
      --image-size 256 512 --repeat 2 --precision bf16 --out $OUT/h200_run27_scaling_training >> $OUT/b.log 2>&1
    grep -v "^{" $OUT/b.log | tail -30 | cut -c1-300 ;;
esac
