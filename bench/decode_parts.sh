#!/usr/bin/env bash
# One device call: the in-graph breakdown of AiM-L's decode step (bench/decode_parts.py).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 bench/decode_parts.py $OUT/decode_parts.json ${ROWS:-32} 2>&1 | grep -v Warn | tail -80
