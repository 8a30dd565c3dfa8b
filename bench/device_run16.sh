#!/usr/bin/env bash
# Run 16 (issue 15 review, H200): after the review, the fast paths against the reference (greedy tokens) and
# every command on CUDA end to end - sample-many (fast path, per-row streams), edit (raster prefix, ARPG
# canvas, M-VAR region), sample, training's sample grid - on random weights with real tokenizer shapes.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/h200_run16.txt
python3 bench/check_fast_gpu.py $OUT/h200_run16_fast_checks.json aim-b gpt-b arpg-l var-d16 mvar-d16 2>&1 \
  | grep -v Warn | cut -c1-400 | tee -a $OUT/h200_run16.txt
python3 - <<'PY' 2>&1 | grep -v Warn | tee -a $OUT/h200_run16.txt
import numpy as np, torch, mambagen
from PIL import Image
from mambagen.models.registry import family_of
from mambagen.tokenizers import KINDS
for name in ("aim-b", "arpg-l", "mvar-d16"):
    torch.manual_seed(0)
    m = mambagen.create_model(name).eval()
    mambagen.save_model(m, f"/tmp/{name}", tokenizer=KINDS[family_of(m).tokenizer].shaped(m.config).eval())
img = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
Image.fromarray(img).save("/tmp/img.png")
mask = np.zeros((256, 256), np.uint8); mask[160:] = 255
Image.fromarray(mask).save("/tmp/mask.png")
PY
run() { local t0=$(date +%s.%N); python3 -m mambagen "$@" 2>&1 | grep "wrote\|rror" | tail -2
        echo "  rc ${PIPESTATUS[0]}, $(python3 -c "import time; print(round(time.time() - $t0, 1))") s: mambagen $*" ; }
for m in aim-b arpg-l mvar-d16; do
  run sample-many --model /tmp/$m --out /tmp/sm_$m --classes 1,2 --per-class 16 --batch-size 16 --no-progress
  run sample-many --model /tmp/$m --out /tmp/sm_$m --classes 1,2 --per-class 16 --batch-size 8 --no-progress
done
run edit --model /tmp/aim-b --image /tmp/img.png --mask /tmp/mask.png --num 4 --out $OUT/edit_aim.png
run edit --model /tmp/mvar-d16 --image /tmp/img.png --mask /tmp/mask.png --num 4 --compile --out $OUT/edit_mvar.png
run edit --model /tmp/arpg-l --image /tmp/img.png --canvas 20 --num 2 --out $OUT/edit_arpg_canvas.png
run sample --model /tmp/arpg-l --classes 1,2 --per-class 8 --batch-size 16 --out $OUT/sample_arpg.png
python3 - <<'PY' 2>&1 | grep -v Warn | tee -a $OUT/h200_run16.txt
import torch, mambagen, time
from pathlib import Path
from mambagen.sample import pipeline
from mambagen.train.loop import sample_grid
torch.manual_seed(0)
tok = mambagen.create_tokenizer("vq-tiny").cuda().eval()
m = mambagen.create_model("aim-tiny", num_tokens=64).cuda()
t = time.time(); sample_grid(m, tok, 10, Path("/tmp/grid.png"), 2.0, 0)
kept = {type(s).__name__ for s in pipeline._FAST_SAMPLERS[m].values()}
print(f"training sample grid on CUDA: {time.time() - t:.1f} s through {kept}, model back in train mode: {m.training}")
PY
