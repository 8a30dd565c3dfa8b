#!/usr/bin/env bash
# Issue 9 on the lent single-GPU kind: torchrun with DDP and with FSDP on 1 GPU (aim-l on the emoji demo tokens,
# 64 tokens per image), then the FSDP run's checkpoint resumed by a plain single process. The 2-GPU scaling run
# needs nvidia-h200-x2 (same commands with --nproc-per-node 2).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/torchrun_out}; mkdir -p $OUT; S=.devdata/study
# the study's numbers were made with the v1 demo's tokenizer (before ec8f890); to rerun them exactly:
#   mkdir -p v1tok && for f in config.json model.safetensors; do
#     git show f9ad264:mambagen/assets/emoji-aim-demo/tokenizer/$f > v1tok/$f; done; STUDY_TOKENIZER=v1tok
mkdir -p $S/vq-f8-small && cp -r ${STUDY_TOKENIZER:-mambagen/assets/emoji-aim-demo/tokenizer}/. $S/vq-f8-small/tokenizer/
args=(--data $S/vq-f8-small-train --val-data $S/vq-f8-small-val --model aim-l
      --model-overrides '{"num_tokens": 64, "vocab_size": 1024, "num_classes": 9}' --batch-size 256 --lr 1e-4
      --warmup 10 --log-every 5 --eval-every 1000 --ckpt-every 20 --no-progress)
for st in ddp fsdp; do
  timeout 170 torchrun --standalone --nproc-per-node 1 -m mambagen train "${args[@]}" --out /tmp/r_$st --steps 40 \
    --strategy $st 2>&1 | grep -vi warn | tail -2
  cp /tmp/r_$st/log.csv $OUT/log_1gpu_$st.csv
done
timeout 100 python3 -m mambagen train "${args[@]}" --out /tmp/r_fsdp --steps 60 --resume 2>&1 | grep -vi warn | tail -2
cp /tmp/r_fsdp/log.csv $OUT/log_1gpu_fsdp_then_single.csv
