"""Small helpers shared by several test files."""
import json
from pathlib import Path

import torch


def assert_overfits_one_batch(model, steps: int = 40) -> None:
    """Training a tiny raster model on one fixed batch must halve its loss (the model learns at all)."""
    codes, labels = torch.randint(0, 256, (4, 16)), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        _, loss = model(codes, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def images(b: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(b, 3, size, size) random images in [-1, 1], the same for a seed."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


class Squares(torch.utils.data.Dataset):
    """Noisy 16x16 squares, red or blue: 2 classes (a stand-in for an ImageFolder)."""
    classes = ["red", "blue"]

    def __init__(self, n: int = 24):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(n):
            label = i % 2
            img = torch.full((3, 16, 16), -1.0)
            img[label * 2] = 1.0
            img += 0.2 * torch.randn(3, 16, 16, generator=g)
            self.items.append((img.clamp(-1, 1), label))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tiny_token_data(root: Path, train: int, val: int = 0, flip: bool = False) -> Path:
    """root/tokenizer (a vq-tiny), root/train (and root/val) token datasets of `Squares`."""
    import mambagen
    from mambagen.data.tokens import tokenize_dataset
    torch.manual_seed(0)
    tok = mambagen.create_tokenizer("vq-tiny")
    mambagen.save_tokenizer(tok, root / "tokenizer")
    tokenize_dataset(tok, Squares(train), root / "train", batch_size=8, flip=flip, progress=False)
    if val:
        tokenize_dataset(tok, Squares(val), root / "val", batch_size=8, progress=False)
    return root


OFFICIAL_LAYOUTS = json.loads((Path(__file__).parent / "fixtures" / "official_layouts.json").read_text())


def assert_official_layout(model, layout: dict) -> None:
    """A model (e.g. built on the meta device) has an official layout's parameter count, buffer size,
    state-dict size and key shapes (`OFFICIAL_LAYOUTS`)."""
    assert sum(p.numel() for p in model.parameters()) == layout["params"]
    if "buffers" in layout:
        assert sum(b.numel() for b in model.buffers()) == layout["buffers"]
    sd = model.state_dict()
    assert len(sd) == layout["state_dict_entries"]
    for key, shape in layout["shapes"].items():
        assert tuple(sd[key].shape) == tuple(shape), key
