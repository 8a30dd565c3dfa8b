"""`mambagen info`: the registered families and sizes with parameter counts, tokenizers, kernels."""
from __future__ import annotations

import torch


def cmd_info(args) -> None:
    if args.official:
        from ..releases import catalogue_lines
        print("Released checkpoints (mambagen sample --model official:NAME; published scores and the setting that "
              "produced them, each with its source; guidance 1 = off):")
        print("\n".join(catalogue_lines()))
        return
    from ..layers import kernels
    from ..models.registry import FAMILIES, count_params, create_model
    from ..tokenizers import KINDS

    print(f"mambagen {__import__('mambagen').__version__}  torch {torch.__version__}  "
          f"cuda {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    print("\nGenerators (parameters counted on the meta device; tied weights once):")
    print(f"  {'name':<12} {'family':<7} {'params':>15} {'official':>15}  description")
    for family in FAMILIES.values():
        for name, size in family.sizes.items():
            with torch.device("meta"):
                n = count_params(create_model(name))
            official = f"{size.official_params:,}" if size.official_params else "-"
            mark = "" if size.official_params in (None, n) else "  MISMATCH"
            print(f"  {name:<12} {family.name:<7} {n:>15,} {official:>15}  {size.description}{mark}")
    print("\nFamilies: " + "; ".join(f"{f.name} ({f.sampler.name}, {f.tokenizer} tokens, edits: "
                                     f"{', '.join(sorted(f.edits)) or 'none'})" for f in FAMILIES.values()))
    print("\nTokenizers:")
    for kind in KINDS.values():
        for name in kind.configs:
            with torch.device("meta"):
                tok = kind.create(name)
            print(f"  {name:<12} {sum(p.numel() for p in tok.parameters()):>15,}  {kind.describe(tok.config)}")
    usable = [k for k, v in kernels.available().items() if v]
    imported = [k for k, v in kernels.importable().items() if v]
    if usable:
        print(f"\nFast GPU kernels available: {', '.join(usable)}")
    elif imported and not torch.cuda.is_available():
        print(f"\nFast GPU kernels: none usable (no CUDA GPU; {len(imported)} import for the interpreter tests); "
              "the pure PyTorch reference paths run")
    else:
        print("\nFast GPU kernels: none (pure PyTorch reference paths)")


def add_parsers(subparsers) -> None:
    s = subparsers.add_parser("info", help="registered models with parameter counts, tokenizers, kernels",
                              description="List the registered generator sizes (parameter counts next to the "
                              "official ones), the families, the tokenizers, and the fast kernels this machine "
                              "can run.")
    s.add_argument("--official", action="store_true", help="list the catalogue of released checkpoints instead "
                   "(official:NAME), with their published scores and sampling settings")
    s.set_defaults(fn=cmd_info)
