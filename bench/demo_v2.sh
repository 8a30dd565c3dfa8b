#!/usr/bin/env bash
# Issue 19, next device sessions (not run yet): the richer demo data and its recipe, in calls under 10 minutes.
#   STAGE=data       bash bench/demo_v2.sh   # CPU: 3 art styles (+ Fluent 3D), finer classes; carry .devdata/demo2
#   STAGE=tokenizer  bash bench/demo_v2.sh   # GPU: vq-f8-small with the patch-GAN and a judge-feature perceptual
#                                             loss (resumes across calls)
#   STAGE=generator  bash bench/demo_v2.sh   # GPU: tokenize with --augment, aim-small with --keep-best, the judge
#                                             (trained here unless $D/judge exists: CPU, 40 epochs), metrics.json
# Step counts come from the environment so the same script runs as a quick CPU check (all three stages ran
# on CPU with VQ_STEPS=4 GEN_STEPS=3 AUGMENT=1). Each training command stops itself after LIMIT seconds
# (default 540) with SIGTERM: the trainer writes a checkpoint and the next call resumes it. Make the next
# call while the device machine is still warm (.devdata stays on it), or carry .devdata/demo2.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
D=.devdata/demo2; mkdir -p $D; DEV=${DEV:-cuda}; Q="--no-progress"
LEVEL=${LEVEL:-subcategory}; MIN=${MIN_EMOJI:-30}
case "${STAGE:-data}" in
  data)
    python -m mambagen data emoji $D/emoji64 --styles google,twitter,fluent --level $LEVEL --min-emoji $MIN --force ;;
  tokenizer)   # the perceptual loss: an LPIPS-like distance over a judge trained for it (seed 1, not the scoring one)
    [ -f $D/judge_perceptual/config.json ] || python -m mambagen train-judge --data $D/emoji64/train \
      --val-data $D/emoji64/val --out $D/judge_perceptual --seed 1 --epochs 30 --device $DEV | tail -1
    timeout -s TERM ${LIMIT:-540} python -m mambagen train-tokenizer --data $D/emoji64/train --val-data $D/emoji64/val --out $D/vq \
      --tokenizer vq-f8-small --image-size 64 --batch-size 128 --steps ${VQ_STEPS:-20000} --lr 2e-4 --warmup 200 \
      --perceptual-weights $D/judge_perceptual --perceptual-weight ${PERCEPTUAL:-0.5} \
      --gan-weight 0.5 --disc-start ${DISC_START:-5000} --disc-layers 2 --ema 0.999 --eval-every 2000 \
      --ckpt-every 1000 --num-workers 8 --device $DEV $Q $( [ -d $D/vq/checkpoints ] && echo --resume ) \
      || echo "tokenizer training stopped (rc $?): STAGE=tokenizer again resumes it" ;;
  generator)
    for split in train val; do
      [ -f $D/tok-$split/meta.json ] || python -m mambagen tokenize --data $D/emoji64/$split --tokenizer $D/vq/tokenizer_ema --out $D/tok-$split \
        --augment $( [ $split = train ] && echo ${AUGMENT:-3} || echo 0 ) --device $DEV | tail -1
    done
    timeout -s TERM ${LIMIT:-540} python -m mambagen train --data $D/tok-train --val-data $D/tok-val --tokenizer $D/vq/tokenizer_ema --out $D/aim \
      --model aim-small --steps ${GEN_STEPS:-3000} --batch-size 256 --lr 4e-4 --eval-every 100 --keep-best \
      --ema 0.999 --device $DEV $Q $( [ -d $D/aim/checkpoints ] && echo --resume ) \
      || { echo "training stopped (rc $?): STAGE=generator again resumes it"; exit 0; }
    [ -f $D/judge/config.json ] || python -m mambagen train-judge --data $D/emoji64/train --val-data $D/emoji64/val \
      --out $D/judge --device $DEV --epochs ${JUDGE_EPOCHS:-40} --widths 32,64,128,256 | tail -2
    python -m mambagen sample-many --model $D/aim/best --per-class 40 --out $D/samples --device $DEV $Q | tail -2
    python -m mambagen judge-samples --judge $D/judge --samples $D/samples/samples.npz --ref $D/emoji64/val \
      --json $D/judge.json --device $DEV | tail -8
    python -m mambagen eval-nll --model $D/aim/best --data $D/tok-val --device $DEV --json $D/nll.json | tail -1
    python -m mambagen eval-tokenizer --tokenizer $D/vq/tokenizer_ema --data $D/emoji64/val --judge $D/judge \
      --device $DEV --json $D/tokenizer.json $Q | tail -3
    python bench/demo_metrics.py --judge $D/judge.json --tokenizer $D/tokenizer.json --nll $D/nll.json \
      --out $D/metrics.json --describe "demo v2: aim-small + vq-f8-small (GAN), $LEVEL classes" ;;
esac
