"""GPU check of the per-row streams (`RowStreams`) on each family's fast path: the graphed sampler (not
compiled) against the reference loop, fp32, sampled at temperature 1 with the family's official top-k/top-p.
Both draw the same numbers, so the tokens agree wherever the two paths' logits do not straddle a draw
(fp32 arithmetic of another kernel order); prints and writes the fraction of equal tokens per model.

    python bench/rows_check.py OUT.json aim-l gpt-l arpg-l var-d16 mvar-d16
"""
import json
import sys
import time

import torch

from mambagen.bench import generation_setting
from mambagen.models.registry import create_model
from mambagen.sample.pipeline import Sampler
from mambagen.sample.streams import RowStreams

out, names = sys.argv[1], sys.argv[2:]
records = []
for name in names:
    torch.manual_seed(0)
    model = create_model(name).cuda().eval()
    sampling, tokenizer = generation_setting(model, 2.0)
    labels = torch.arange(4, device="cuda") % model.config.num_classes
    rng = RowStreams.from_seeds([101, 102, 103, 104], "cuda")
    t0 = time.time()
    ref = Sampler(model, tokenizer, sampling, fast=False).tokens(labels, rng)
    fast = Sampler(model, tokenizer, sampling, fast=True).tokens(labels, rng)
    fast2 = Sampler(model, tokenizer, sampling, fast=True).tokens(labels, rng)   # the kept sampler, replayed
    rec = {"model": name, "tokens": ref.numel(), "equal_fraction": (ref == fast).float().mean().item(),
           "replay_identical": bool(torch.equal(fast, fast2)), "seconds": time.time() - t0,
           "sampling": sampling.to_dict(), "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(json.dumps(rec), flush=True)
    records.append(rec)
    del model
    torch.cuda.empty_cache()
json.dump(records, open(out, "w"), indent=2)
