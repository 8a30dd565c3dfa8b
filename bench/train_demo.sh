#!/usr/bin/env bash
# Device run: train the demo tokenizer + AiM on the emoji data (carried in .devdata/emoji64) and
# bring back the pipeline in float16, a sample grid and the training curves.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
D=.devdata/emoji64; W=/tmp/demo; mkdir -p $W
T0=$(date +%s)
python3 -m mambagen train-tokenizer --data $D/train --val-data $D/val --out $W/vq --tokenizer vq-f8-small \
  --image-size 64 --batch-size 128 --steps ${VQ_STEPS:-3000} --lr 2e-4 --warmup 200 --eval-every 1000 --ckpt-every 1000 \
  --num-workers 8 --no-progress --device cuda 2>&1 | grep -E "val|rror" | tail -6
echo "tokenizer done $(( $(date +%s) - T0 )) s"
python3 -m mambagen tokenize --data $D/train --tokenizer $W/vq/tokenizer --out $W/tok_train --flip --device cuda --batch-size 256 2>&1 | tail -1
python3 -m mambagen tokenize --data $D/val --tokenizer $W/vq/tokenizer --out $W/tok_val --device cuda 2>&1 | tail -1
python3 -m mambagen train --data $W/tok_train --val-data $W/tok_val --tokenizer $W/vq/tokenizer --out $W/aim \
  --model aim-small --steps ${AIM_STEPS:-4000} --batch-size 256 --lr 4e-4 --warmup 200 --ema 0.999 \
  --eval-every 1000 --ckpt-every 1000 --log-every 100 --no-progress 2>&1 | grep -E "val|final|rror" | tail -8
echo "aim done $(( $(date +%s) - T0 )) s"
python3 - <<'PY'
import json, os
from mambagen.io import load_safetensors, save_safetensors
out, W = os.environ["OUT"], "/tmp/demo"
ck = sorted(os.listdir(f"{W}/aim/checkpoints"))
src = f"{W}/aim/final" if os.path.exists(f"{W}/aim/final/config.json") else f"{W}/aim/checkpoints/{ck[-1]}"
ema = f"{src}/ema.safetensors" if os.path.exists(f"{src}/ema.safetensors") else f"{src}/model.safetensors"
half = lambda d: {k: v.half() if v.is_floating_point() else v for k, v in d.items()}
save_safetensors(f"{out}/aim_model.safetensors", half(load_safetensors(ema)))
os.system(f"cp {src}/config.json {out}/aim_config.json; cp {W}/vq/tokenizer/config.json {out}/vq_config.json")
save_safetensors(f"{out}/vq_model.safetensors", half(load_safetensors(f"{W}/vq/tokenizer/model.safetensors")))
os.system(f"cp {W}/aim/curves.png {out}/aim_curves.png; cp {W}/vq/curves.png {out}/vq_curves.png")
json.dump({"aim": open(f"{W}/aim/log.csv").read()[-60000:], "vq": open(f"{W}/vq/log.csv").read()[-60000:],
           "source": src}, open(f"{out}/logs.json", "w"))
print("exported from", src)
PY
python3 -m mambagen sample --model $W/aim/final --ema --per-class 8 --cfg 3.0 --out $OUT/demo_grid.png 2>&1 | tail -1
