#!/usr/bin/env bash
# Issue 19: the shipped demo's sampling settings (guidance, temperature, top-k / top-p) side by side, scored by
# one judge on the val split: classes at the per-class target, FD / floor, sample accuracy. CPU is enough
# (64 tokens per image): ~2 minutes per setting at PER_CLASS=20 on 2 cores.
#   JUDGE=.devdata/judge_cpu REF=.devdata/demo_v2/emoji64/val OUT_DIR=.devdata/sampling bash bench/demo_sampling_sweep.sh
# A setting is NAME=FLAGS for `mambagen sample-many`; SETTINGS overrides the list below. The table lands in
# $OUT_DIR/sweep.md (and each setting's judge report in $OUT_DIR/<name>.json).
set -euo pipefail
export PYTHONPATH=$PWD
MODEL=${MODEL:-mambagen/assets/emoji-aim-demo}; OUT_DIR=${OUT_DIR:-.devdata/sampling}; DEV=${DEV:-cpu}
: "${JUDGE:?set JUDGE to a judge directory (mambagen train-judge --out)}" "${REF:?set REF to the val images (a class-folder tree)}"
SETTINGS=${SETTINGS:-"cfg4=--cfg 4
cfg3=--cfg 3
cfg6=--cfg 6
cfg4_t0.9=--cfg 4 --temperature 0.9
cfg4_topk100=--cfg 4 --top-k 100
cfg4_topp0.9=--cfg 4 --top-p 0.9
cfg3_topp0.9=--cfg 3 --top-p 0.9"}
mkdir -p $OUT_DIR
while IFS='=' read -r name flags; do
  [ -f $OUT_DIR/$name.json ] && continue
  # shellcheck disable=SC2086   # the flags are words
  python -m mambagen sample-many --model $MODEL $flags --per-class ${PER_CLASS:-20} --seed ${SEED:-0} \
    --out $OUT_DIR/$name --device $DEV --no-progress | tail -1
  python -m mambagen judge-samples --judge $JUDGE --samples $OUT_DIR/$name/samples.npz --ref $REF \
    --json $OUT_DIR/$name.json --device $DEV --no-progress | tail -1
done <<< "$SETTINGS"
python - $OUT_DIR "$SETTINGS" <<'PY'
import json, sys
sys.path.insert(0, "bench")
from demo_metrics import sample_score
from mambagen.io import atomic_path
out, settings = sys.argv[1], [s.split("=", 1) for s in sys.argv[2].strip().splitlines()]
lines = ["| setting | sample-many flags | classes at target | FD / floor | sample accuracy |", "|---|---|---|---|---|"]
for name, flags in settings:
    report = json.load(open(f"{out}/{name}.json"))
    meeting, fd_ratio, acc = sample_score(report)
    lines.append(f"| {name} | `{flags}` | {meeting}/{len(report['judge']['per_class_accuracy'])} | {fd_ratio:.2f} | {acc:.3f} |")
with atomic_path(f"{out}/sweep.md") as tmp:
    tmp.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
