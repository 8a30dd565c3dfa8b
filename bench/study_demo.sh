#!/usr/bin/env bash
# The demo-scale study of the paradigms (issue 8), in device calls of under 10 minutes each:
#   STAGE=tokenizers bash bench/study_demo.sh   # multi-scale VQVAE (M-VAR), token shards of both tokenizers, judge
#   STAGE=generators MODELS="..." bash bench/study_demo.sh   # generators at ~6.4M parameters on the same data
# The VQ tokenizer (AiM, GPT, ARPG) is the shipped demo's vq-f8-small (or $STUDY_TOKENIZER). Data: .devdata/emoji64 (carried).
# Between calls, carry the returned .devdata/study folder back in. Step counts come from the environment
# so the same script runs as a quick CPU check.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
D=.devdata/emoji64; S=.devdata/study; mkdir -p $S; OUT=${OUT:-/tmp/study_out}; mkdir -p $OUT
DEV=${DEV:-cuda}; VQ_STEPS=${VQ_STEPS:-3000}; GEN_STEPS=${GEN_STEPS:-1000}; EVAL=${EVAL:-50}; BATCH=${BATCH:-256}
Q="--no-progress"
# the study's numbers were made with the v1 demo's tokenizer (before ec8f890); to rerun them exactly:
#   mkdir -p v1tok && for f in config.json model.safetensors; do
#     git show f9ad264:mambagen/assets/emoji-aim-demo/tokenizer/$f > v1tok/$f; done; STUDY_TOKENIZER=v1tok
mkdir -p $S/vq-f8-small && cp -r ${STUDY_TOKENIZER:-mambagen/assets/emoji-aim-demo/tokenizer}/. $S/vq-f8-small/tokenizer/

if [ "${STAGE:-tokenizers}" = tokenizers ]; then
  python3 -m mambagen train-tokenizer --data $D/train --val-data $D/val --out $S/msvq-demo --tokenizer msvq-demo \
    --image-size 64 --batch-size 128 --steps $VQ_STEPS --lr 2e-4 --warmup 100 --eval-every $VQ_STEPS \
    --ckpt-every $VQ_STEPS --num-workers 8 --device $DEV $Q 2>&1 | grep -E " val|rror" | tail -2
  rm -rf $S/msvq-demo/checkpoints $S/msvq-demo/tb
  for tok in vq-f8-small msvq-demo; do
    # no flipped copies: emoji carry text and directions that a mirror image gets wrong
    python3 -m mambagen tokenize --data $D/train --tokenizer $S/$tok/tokenizer --out $S/$tok-train --device $DEV | tail -1
    python3 -m mambagen tokenize --data $D/val --tokenizer $S/$tok/tokenizer --out $S/$tok-val --device $DEV | tail -1
  done
  python3 -c "import sys; from mambagen.io import load_safetensors as l, save_safetensors as s; p=sys.argv[1]; \
s(p, {k: v.half() if v.is_floating_point() else v for k, v in l(p).items()})" $S/msvq-demo/tokenizer/model.safetensors
  python3 -m mambagen train-judge --data $D/train --val-data $D/val --out $S/judge --device $DEV --epochs ${JUDGE_EPOCHS:-30} | tail -2
  tar czf $OUT/study_tokenizers.tgz --exclude=study/vq-f8-small/tokenizer -C .devdata study && ls -la $OUT   # in the repo
  exit 0
fi

# generators: equal size, equal steps x batch (the same tokens seen); dropout 0.1 in every family; the model kept
# is the one at the lowest held-out bits/token (--keep-best, evaluated every $EVAL steps)
for spec in ${MODELS:-aim-small:vq-f8-small gpt-small:vq-f8-small arpg-small:vq-f8-small mvar-small:msvq-demo \
            aim-small-nope:vq-f8-small aim-small-single:vq-f8-small aim-small-layer:vq-f8-small}; do
  name=${spec%%:*}; tok=${spec##*:}; model=$name; over='{}'; R=$S/runs/$name
  case $name in
    aim-small-nope)   model=aim-small; over='{"position_embedding": false}' ;;
    aim-small-single) model=aim-small; over='{"adaln_groups": 1}' ;;
    aim-small-layer)  model=aim-small; over='{"adaln": "layer"}' ;;
  esac
  T0=$(date +%s)
  python3 -m mambagen train --data $S/$tok-train --val-data $S/$tok-val --tokenizer $S/$tok/tokenizer \
    --out $R --model $model --model-overrides "$over" --steps $GEN_STEPS --batch-size $BATCH \
    --lr 4e-4 --warmup 100 --eval-every $EVAL --keep-best --ckpt-every $GEN_STEPS \
    --log-every 10 --device $DEV $Q 2>&1 | grep -E "rror" | tail -3
  T1=$(date +%s)
  python3 -m mambagen eval-nll --model $R/best --data $S/$tok-val --json $R/nll.json | tail -1
  python3 -m mambagen sample --model $R/best --per-class 8 --cfg 2.0 --out $R/grid.png | tail -1
  python3 -m mambagen sample-many --model $R/best --per-class ${JUDGE_SAMPLES:-40} --cfg 2.0 --out $R/samples $Q > /dev/null 2>&1
  python3 -m mambagen judge-samples --judge $S/judge --samples $R/samples/samples.npz --ref $D/val --json $R/judge.json $Q | tail -2
  python3 bench/mirror_score.py $R/samples/samples.npz $D/val $R/mirror.json > /dev/null
  python3 - $R $model $((T1 - T0)) <<'PY'
import json, sys
from mambagen.checkpoint import load_model
from mambagen.models.registry import count_params
R, secs = sys.argv[1], int(sys.argv[3])
best = json.load(open(f"{R}/best/config.json"))
json.dump({"params": count_params(load_model(f"{R}/best")), "best_step": best["step"],
           "best_val_bits_per_token": best["val_bits_per_token"], "train_seconds": secs,
           "config": best["config"]}, open(f"{R}/summary.json", "w"), indent=1)
PY
  rm -rf $R/checkpoints $R/tb $R/samples/shards $R/final
  echo "$name done: train $((T1 - T0)) s, all $(( $(date +%s) - T0 )) s"
done
# metrics, grids, curves and logs come back; of the weights only the AiM pipeline (the demo candidate)
tar czf $OUT/study_runs.tgz --exclude='*.safetensors' --exclude='samples' --exclude='samples_0*.png' -C $S runs
if [ -d $S/runs/aim-small/best ]; then
  python3 -c "import sys; from mambagen.io import load_safetensors as l, save_safetensors as s; s(sys.argv[2], {k: v.half() if v.is_floating_point() else v for k, v in l(sys.argv[1]).items()})"     $S/runs/aim-small/best/model.safetensors $OUT/aim_small_best_fp16.safetensors
  cp $S/runs/aim-small/best/config.json $OUT/aim_small_best_config.json
fi
ls -la $OUT
