"""`python -m mambagen ...` (e.g. under torchrun: torchrun --nproc-per-node 2 -m mambagen train ...)."""
import sys

from .cli import main

sys.exit(main())
