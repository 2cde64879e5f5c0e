"""One SGD training phase; families differ only in their loss and parameter groups."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

__all__ = ["train_phase"]

LossFn = Callable[[Tensor, Tensor], tuple[Tensor, dict[str, float]]]


def train_phase(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    *,
    param_groups: Iterable[dict],
    epochs: int,
    weight_decay: float,
    device: torch.device,
    desc: str,
) -> None:
    """SGD with Nesterov momentum and a cosine schedule over the whole phase."""
    if epochs <= 0:
        return
    optimizer = torch.optim.SGD(list(param_groups), momentum=0.9, nesterov=True, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    for epoch in range(epochs):
        model.train()
        progress = tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True, disable=None)
        for images, labels in progress:
            loss, logs = loss_fn(images.to(device), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            progress.set_postfix({name: f"{value:.3f}" for name, value in logs.items()})
