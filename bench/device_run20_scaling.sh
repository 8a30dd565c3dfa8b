#!/bin/bash
# Issue 18, next device session (not run yet): the full image-size sweep and the seeds' speed claims, each in a
# call under 10 minutes. PART=scaling|training|claims bash bench/device_run20_scaling.sh
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0
case "${PART:-scaling}" in
  scaling)   # AiM-L, GPT-L, ARPG-L at 256 / 576 / 1024 / 4096 tokens, batch 16 (cost per token, memory, plot)
    python -m mambagen bench --generate aim-l:fast gpt-l:fast arpg-l:graph --decode --image-size 256 384 512 1024 \
      --batch 16 --repeat 2 --out $OUT/h200_run20_scaling 2>&1 | grep -v "^{" | tail -30 ;;
  training)  # training tokens/s at the same lengths (batch shrinks with length: 64 x 256 tokens per step)
    python -m mambagen bench --generate --decode --train aim-l:compile gpt-l:compile --train-batch 16 \
      --image-size 256 512 --repeat 2 --out $OUT/h200_run20_training 2>&1 | grep -v "^{" | tail -20 ;;
  claims)    # the seeds' claims on each side's fastest path: the claims table lands in the .md
    python -m mambagen bench --generate aim-l:fast gpt-l:fast mvar-d24:fast var-d30:fast --decode --batch 16 \
      --repeat 3 --out $OUT/h200_run20_claims16 2>&1 | grep -v "^{" | tail -20
    python -m mambagen bench --generate arpg-l:fast gpt-l:fast --decode --batch 64 --repeat 3 \
      --out $OUT/h200_run20_claims64 2>&1 | grep -v "^{" | tail -20 ;;
esac
