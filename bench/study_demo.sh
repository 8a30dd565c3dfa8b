#!/usr/bin/env bash
# The demo-scale study of the paradigms (issue 8), in two device calls (each under 10 minutes):
#   STAGE=tokenizers bash bench/study_demo.sh   # VQ (AiM, GPT, ARPG) and multi-scale VQVAE (M-VAR) + token shards
#   STAGE=generators bash bench/study_demo.sh   # the four generators at ~6.4M parameters on the same data
# Data: .devdata/emoji64 (carried). Between calls, carry the returned .devdata/study folder back in.
# Step counts come from the environment so the same script runs as a quick CPU check.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
D=.devdata/emoji64; S=.devdata/study; mkdir -p $S; OUT=${OUT:-/tmp/study_out}; mkdir -p $OUT
DEV=${DEV:-cuda}; VQ_STEPS=${VQ_STEPS:-3000}; GEN_STEPS=${GEN_STEPS:-1500}; BATCH=${BATCH:-256}
Q="--no-progress"

if [ "${STAGE:-tokenizers}" = tokenizers ]; then
  for tok in vq-f8-small msvq-demo; do
    python3 -m mambagen train-tokenizer --data $D/train --val-data $D/val --out $S/$tok --tokenizer $tok \
      --image-size 64 --batch-size 128 --steps $VQ_STEPS --lr 2e-4 --warmup 100 --eval-every $VQ_STEPS \
      --ckpt-every $VQ_STEPS --num-workers 4 --device $DEV $Q 2>&1 | grep -E " val|rror" | tail -2
    # no flipped copies: emoji carry text and directions that a mirror image gets wrong
    python3 -m mambagen tokenize --data $D/train --tokenizer $S/$tok/tokenizer --out $S/$tok-train --device $DEV | tail -1
    python3 -m mambagen tokenize --data $D/val --tokenizer $S/$tok/tokenizer --out $S/$tok-val --device $DEV | tail -1
    rm -rf $S/$tok/checkpoints
    python3 -c "import sys; from mambagen.io import load_safetensors as l, save_safetensors as s; p=sys.argv[1]; \
s(p, {k: v.half() if v.is_floating_point() else v for k, v in l(p).items()})" $S/$tok/tokenizer/model.safetensors
  done
  python3 -m mambagen train-judge --data $D/train --val-data $D/val --out $S/judge --device $DEV --epochs ${JUDGE_EPOCHS:-30} | tail -2
  tar czf $OUT/study_tokenizers.tgz -C .devdata study && ls -la $OUT
  exit 0
fi

# generators: equal size, equal steps x batch (the same tokens seen), held-out bits/token, grids, CPU speed
for spec in ${MODELS:-aim-small:vq-f8-small gpt-small:vq-f8-small arpg-small:vq-f8-small mvar-small:msvq-demo \
            aim-small-nope:vq-f8-small aim-small-single:vq-f8-small aim-small-layer:vq-f8-small}; do
  name=${spec%%:*}; tok=${spec##*:}; model=$name; over='{}'
  case $name in
    aim-small-nope)   model=aim-small; over='{"position_embedding": false}' ;;
    aim-small-single) model=aim-small; over='{"adaln_groups": 1}' ;;
    aim-small-layer)  model=aim-small; over='{"adaln": "layer"}' ;;
  esac
  python3 -m mambagen train --data $S/$tok-train --val-data $S/$tok-val --tokenizer $S/$tok/tokenizer \
    --out $S/runs/$name --model $model --model-overrides "$over" --steps $GEN_STEPS --batch-size $BATCH \
    --lr 4e-4 --warmup 100 --ema 0.999 --eval-every $(( GEN_STEPS / 3 )) --ckpt-every $GEN_STEPS \
    --log-every 50 --device $DEV $Q 2>&1 | grep -E "val|rror" | tail -3
  python3 -m mambagen eval-nll --model $S/runs/$name/final --data $S/$tok-val --ema --json $S/runs/$name/nll.json | tail -1
  python3 -m mambagen sample --model $S/runs/$name/final --ema --per-class 8 --cfg 2.0 --out $S/runs/$name/grid.png | tail -1
  python3 -m mambagen sample-many --model $S/runs/$name/final --ema --per-class ${JUDGE_SAMPLES:-40} --cfg 2.0 \
    --out $S/runs/$name/samples $Q > /dev/null 2>&1
  python3 -m mambagen judge-samples --judge $S/judge --samples $S/runs/$name/samples/samples.npz --ref $D/val \
    --json $S/runs/$name/judge.json $Q | tail -3
  rm -rf $S/runs/$name/checkpoints $S/runs/$name/tb $S/runs/$name/samples/shards
done
# metrics, grids, curves and logs come back; the weights stay (7 x 26 MB is over the return limit)
tar czf $OUT/study_runs.tgz --exclude='*.safetensors' --exclude='samples.npz' -C $S runs && ls -la $OUT
