#!/usr/bin/env bash
# Run 14 (one device call): `mambagen sample` on CUDA through each family's fast path (random weights,
# registered sizes with their real tokenizers), compiled and not; each grid must come out.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
run() { local t0=$(date +%s.%N)
        python3 -m mambagen sample --classes 1,2 --per-class 16 --batch-size 16 "$@" 2>&1 | grep "wrote\|rror" | tail -3
        echo "  $(python3 -c "import time; print(round(time.time() - $t0, 1))") s for the whole command: $*"; }
run --model arpg-l --tokenizer vq-f16 --compile --out $OUT/arpg_l.png
run --model mvar-d16 --tokenizer msvq-f16 --compile --out $OUT/mvar_d16.png
run --model aim-l --tokenizer vq-f16 --compile --out $OUT/aim_l.png
run --model gpt-l --tokenizer vq-f16 --out $OUT/gpt_l.png
run --model arpg-l --tokenizer vq-f16 --reference --out $OUT/arpg_l_reference.png
