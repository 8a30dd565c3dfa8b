#!/bin/bash
# Issues 18 and 19, 2026-12-02 (H200). Ran both parts, each one call:
#   PART=b bash bench/device_run28.sh   # issue 18: AiM-L training at 4096 tokens with activation checkpointing
#                                       # (16 x 4096 ran out of the H200's memory without, run27c), beside GPT-L,
#                                       # and what checkpointing costs at 64 x 256. The AiM-L row came back; the
#                                       # compiles ran GPT-L's row and the 64 x 256 row past their limits (300 and
#                                       # 250 s), so each ran as its own call on the warm machine: `mambagen bench
#                                       # --train gpt-l:compile --train-batch 16 --image-size 1024 --repeat 2
#                                       # --precision bf16` (78 s), and the second command below as it is now (342
#                                       # s); `mambagen bench --merge` put the 4096-token rows in one table
#   PART=a bash bench/device_run28.sh   # issue 19: two d384 generators on the shipped tokenizer, side by side on
#                                       # the GPU: a cosine schedule that ends near the held-out turn (step ~1000
#                                       # in run26) and a more regularised one (dropout 0.2, weight decay 0.1)
# Part a carries .devdata/p26 (docs/demo/README.md: tokens + judge, made on CPU) packed as .devdata/p26.tar.xz
# (p26 itself no longer fits a 64 MiB carry beside the repository): tar xJf .devdata/p26.tar.xz first.
# Results: bench/results/h200_run28_*, docs/demo/h200_run28/.
export PYTHONPATH=$PWD NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
case "${PART:-a}" in
  a)
    VARIANTS='d384_short|{"d_model": 384}|GEN_STEPS=1200
d384_reg|{"d_model": 384, "mixer_dropout": 0.2, "token_dropout": 0.2}|WD=0.1 GEN_STEPS=1500' \
      NO_CHECKS=1 PART=a bash bench/device_run26.sh ;;
  b)
    timeout 300 python -m mambagen bench --train aim-l:compile:ckpt:chunk128:triton gpt-l:compile --train-batch 16 \
      --image-size 1024 --repeat 2 --precision bf16 --out $OUT/h200_run28_training_4096 > $OUT/b.log 2>&1
    timeout 520 python -m mambagen bench --train aim-l:compile:ckpt:chunk128:triton aim-l:compile:chunk128:triton \
      --train-batch 64 --repeat 2 --precision bf16 --out $OUT/h200_run28_training_ckpt >> $OUT/b.log 2>&1
    grep -v "^{" $OUT/b.log | grep -iv warn | tail -12 ;;
esac
