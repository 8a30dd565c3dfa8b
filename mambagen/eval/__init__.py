"""Evaluation: sampling at scale, distribution metrics, held-out likelihood, tokenizer and judge metrics.

    metrics.py        Fréchet distance, KID, precision/recall (k-NN manifolds), Inception Score: pure math
    inception.py      the TF-Inception TorchScript (the [fid] extra or --inception PATH) and its input convention
    sets.py           image sets (.npz or folder) as uint8 NHWC
    suite.py          samples vs reference with a cached reference and a real-vs-real floor
    sample_many.py    sharded, resumable, per-image-seeded sampling -> ADM .npz
    model_metrics.py  held-out bits/token, tokenizer PSNR/SSIM/codebook usage
    judge.py          a small CNN classifier for honest demo-scale numbers
    cli.py            sample-many, eval, eval-nll, eval-tokenizer, train-judge, judge-samples
"""
