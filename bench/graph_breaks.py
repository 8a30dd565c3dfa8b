"""How many graphs torch.compile makes of a model's training forward, and why it breaks: the step the
training bench compiles, traced by `torch._dynamo.explain` (random weights, bf16 autocast, no kernels run).
A whole model is one graph; every break adds eager glue between graphs and stops fusion across it.
Usage (on the device):  python bench/graph_breaks.py OUT.json [MODEL ...]   (default aim-b)"""
import json
import sys

import torch
import torch._dynamo

from mambagen.bench import _model, training_inputs


def explain(name: str, device: torch.device) -> dict:
    model = _model(name, device, torch.float32, None).train()
    inputs = training_inputs(model, 2, device)
    torch._dynamo.reset()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        ex = torch._dynamo.explain(model)(*inputs)
    reasons = sorted({b.reason.splitlines()[0][:200] for b in ex.break_reasons})
    return {"model": name, "device": str(device), "graphs": ex.graph_count, "graph_breaks": ex.graph_break_count,
            "reasons": reasons}


if __name__ == "__main__":
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [explain(name, device) for name in sys.argv[2:] or ["aim-b"]]
    for r in rows:
        print(json.dumps(r))
    json.dump(rows, open(sys.argv[1], "w"), indent=1)
