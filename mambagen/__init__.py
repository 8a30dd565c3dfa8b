"""mambagen: class-conditional autoregressive image generation with Mamba (AiM) and baselines."""
__version__ = "0.1.0"

from .checkpoint import Pipeline, load_model, load_tokenizer, save_model, save_tokenizer  # noqa: E402
from .sources import load  # noqa: E402  (demo, official:NAME, hf:ORG/REPO or a directory)
from .models.registry import create_model, list_models  # noqa: E402
from .tokenizers import create_tokenizer, list_tokenizers  # noqa: E402

__all__ = ["create_model", "list_models", "create_tokenizer", "list_tokenizers", "load", "load_model", "load_tokenizer",
           "save_model", "save_tokenizer", "Pipeline", "__version__"]
