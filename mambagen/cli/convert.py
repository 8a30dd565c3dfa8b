"""`mambagen convert`: official checkpoints -> our checkpoint directories, through the family records."""
from __future__ import annotations

from .common import FMT


def cmd_convert(args) -> None:
    from ..checkpoint import save_model, save_tokenizer
    from ..convert import official_tokenizer_kinds
    from ..io import read_json
    from ..models.registry import FAMILIES, count_params
    from ..tokenizers import KINDS

    config = read_json(args.config) if args.config else None
    kinds = official_tokenizer_kinds()
    if args.family in kinds:                                    # a tokenizer on its own
        tok = kinds[args.family].convert(args.weights, config)
        print(f"wrote {save_tokenizer(tok, args.out, extra={'source': str(args.weights)})}")
        return
    family = FAMILIES[args.family]
    given = {"vae": args.vae, "vq": args.vq}
    extra = [flag for flag, v in given.items() if v is not None and flag not in family.convert_options]
    if extra:
        raise ValueError(f"--{extra[0]} does not apply to {family.name} (it takes: "
                         f"{', '.join('--' + o for o in family.convert_options) or 'no tokenizer file'})")
    tok_file = next((v for v in given.values() if v is not None), None)
    tokenizer = KINDS[family.tokenizer].convert(tok_file) if tok_file is not None else None
    model, tokenizer = family.convert(args.weights, config, tokenizer=tokenizer)
    out = save_model(model, args.out, tokenizer=tokenizer, extra={"source": str(args.weights)})
    print(f"wrote {out} ({family.name} {count_params(model):,} params"
          f"{', with its tokenizer' if tokenizer is not None else ''})")


def add_parsers(subparsers) -> None:
    from ..convert import official_tokenizer_kinds
    from ..models.registry import FAMILIES
    kinds = official_tokenizer_kinds()
    takes = "; ".join([f"{f.name}: {f.convert_help}" for f in FAMILIES.values()]
                      + [f"{name}: {kind.convert_help}" for name, kind in kinds.items()])
    s = subparsers.add_parser("convert", help="official checkpoint -> our checkpoint directory", formatter_class=FMT,
                              description="Convert official weights (read without unpickling code) to a mambagen "
                              f"directory. {takes}.")
    s.add_argument("family", choices=[*FAMILIES, *kinds])
    s.add_argument("weights", help="official file or directory")
    s.add_argument("out", help="output directory")
    s.add_argument("--config", default=None, help="official config as JSON (MambaConfig / ModelArgs / VAR(...) "
                   "fields); VAR/M-VAR configs are inferred from the tensors when omitted")
    s.add_argument("--vae", default=None, help="var/mvar: the official VQVAE file (vae_ch160v4096z32.pth)")
    s.add_argument("--vq", default=None, help="gpt/arpg: the LlamaGen VQ file (vq_ds16_c2i.pt) to ship alongside")
    s.set_defaults(fn=cmd_convert)

    e = subparsers.add_parser("export", help="a push-ready copy of a checkpoint directory (weights, config.json, "
                              "model card)", formatter_class=FMT,
                              description="Copy a checkpoint directory (or official:NAME, hf:ORG/REPO) as it would be "
                              "pushed to the Hugging Face hub: the weights and config.json as they are (their digests "
                              "checked first), a model card README.md and .gitattributes. Then: hf upload REPO OUT.")
    e.add_argument("model", help="checkpoint directory, 'demo', official:NAME or hf:ORG/REPO")
    e.add_argument("out", help="a new (or empty) folder")
    e.set_defaults(fn=cmd_export)


def cmd_export(args) -> None:
    from ..hub import export
    from ..sources import resolve
    print(f"wrote {export(resolve(args.model), args.out)} (push it with: hf upload REPO {args.out})")
