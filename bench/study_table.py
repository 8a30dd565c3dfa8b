"""The study table of docs/study/README.md from the per-run JSON files next to it.

Usage: python bench/study_table.py docs/study bench/results/h100_study_models.json bench/results/cpu_study_models.json
"""
import json
import sys
from pathlib import Path

RUNS = [("aim-small", "AiM (Mamba2, raster)"), ("gpt-small", "LlamaGen GPT (raster)"),
        ("arpg-small", "ARPG (random order, 64 steps)"), ("mvar-small", "M-VAR (next scale, own tokenizer)"),
        ("aim-small-nope", "AiM, no position embeddings"), ("aim-small-single", "AiM, adaLN-single (G = 1)"),
        ("aim-small-layer", "AiM, adaLN per layer (G = 12)")]


def speeds(path: str) -> dict:
    return {r["model"]: r["images_per_s"] for r in json.load(open(path))["records"]}


def main(root: str, gpu: str, cpu: str) -> None:
    gpu_s, cpu_s = speeds(gpu), speeds(cpu)
    print("| run | params | held-out bits/token (step) | judge accuracy | judge FD | mirror score L-R | "
          "images/s CPU | images/s H100 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, what in RUNS:
        d = Path(root) / name
        s, j, m = (json.loads((d / f).read_text()) for f in ("summary.json", "judge.json", "mirror.json"))
        model = name if name in gpu_s else "aim-small"
        print(f"| {what} | {s['params'] / 1e6:.2f}M | {s['best_val_bits_per_token']:.3f} ({s['best_step']}) | "
              f"{j['judge']['sample_accuracy']:.3f} | {j['judge']['fd']:.2f} | {m['samples']['left_right']:.2f} | "
              f"{cpu_s.get(model, float('nan')):.1f} | {gpu_s.get(model, float('nan')):.0f} |")
    j = json.loads((Path(root) / "aim-small" / "judge.json").read_text())["judge"]
    m = json.loads((Path(root) / "aim-small" / "mirror.json").read_text())["real"]
    print(f"| real val images | - | - | {j['reference_accuracy']:.3f} | {j['fd_floor']:.2f} (floor) | "
          f"{m['left_right']:.2f} | - | - |")


if __name__ == "__main__":
    main(*sys.argv[1:4])
