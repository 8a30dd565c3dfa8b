#!/bin/bash
# Issue 17 on the H200: time to 50k images with `mambagen sample-many` (aim-l, gpt-l, arpg-l, mvar-d16 at
# batch 64, 2,000 images each, bf16 by default on CUDA), then `mambagen reproduce arpg-l` end to end.
export PYTHONPATH=$PWD
python bench/time_to_50k.py $OUT/h200_run18_time_to_50k.json 2>&1 | tail -20
