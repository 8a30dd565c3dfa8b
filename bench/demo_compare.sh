#!/bin/bash
# Two demo generators head to head on CPU, scored by one judge over several sampling seeds: each seed's
# judge report, and the seeds pooled into one sample set (more images per class, so a class's score moves
# less per image). What decided that the run28 generator replaces run26's (docs/demo/h200_run28/).
#
#   A=demo B=path/to/demo SEEDS="0 1" bash bench/demo_compare.sh     # NAMES="shipped new": the rows' names
#
# A and B: anything `mambagen sample-many --model` takes (B's directory holds its tokenizer/). The judge and
# the real val images default to .devdata/p26's (docs/demo/README.md remakes them). Output: $OUT (default
# .devdata/compare)/<name>-<seed>/ and <name>-pooled/ (names a and b unless NAMES), each with judge.json;
# the table is printed.
# ~4 minutes per model and seed on 2 cores at 40 per class.
set -e
export PYTHONPATH=$PWD
P=${P:-.devdata/p26}; OUT=${OUT:-.devdata/compare}; PER_CLASS=${PER_CLASS:-40}; SEEDS=${SEEDS:-0 1}
read -r NA NB <<< "${NAMES:-a b}"
declare -A MODEL=([$NA]=${A:?set A to a model} [$NB]=${B:?set B to a model})
for name in $NA $NB; do
  for seed in $SEEDS; do
    O=$OUT/$name-$seed
    python -m mambagen sample-many --model ${MODEL[$name]} --out $O --per-class $PER_CLASS --seed $seed --no-progress | tail -1
    python -m mambagen judge-samples --judge $P/judge --samples $O/samples.npz --ref $P/emoji64/val --json $O/judge.json \
      --no-progress > $O/judge.log 2>&1
  done
  mkdir -p $OUT/$name-pooled
  python - $OUT/$name-pooled/samples.npz $(for s in $SEEDS; do echo $OUT/$name-$s/samples.npz; done) <<'PY'
import sys
import numpy as np
parts = [np.load(f) for f in sys.argv[2:]]
np.savez(sys.argv[1], arr_0=np.concatenate([p["arr_0"] for p in parts]), labels=np.concatenate([p["labels"] for p in parts]))
PY
  python -m mambagen judge-samples --judge $P/judge --samples $OUT/$name-pooled/samples.npz --ref $P/emoji64/val \
    --json $OUT/$name-pooled/judge.json --no-progress > $OUT/$name-pooled/judge.log 2>&1
done
echo "$NA = ${MODEL[$NA]}, $NB = ${MODEL[$NB]}"
python - $OUT <<'PY'
import json, pathlib, sys
sys.path.insert(0, "bench")
from demo_metrics import missing_classes, sample_score
print("| run | classes at 0.9x real | FD / floor | sample accuracy | classes missing |\n|---|---|---|---|---|")
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/judge.json")):
    report = json.loads(f.read_text())
    meeting, fd_ratio, acc = sample_score(report)
    print(f"| {f.parent.name} | {meeting}/{len(report['judge']['per_class_accuracy'])} | {fd_ratio:.2f} | {acc:.3f} | "
          f"{', '.join(missing_classes(report))} |")
PY
