"""Small helpers shared by several test files."""
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
