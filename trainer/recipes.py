"""Named training recipes, `<family>-<dataset>[-<backbone>]`, with the papers' settings as defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainer.families.blockdrop import BlockDropOptions
from trainer.families.drnet import DRNetOptions
from trainer.families.urnet import URNetOptions
from trainer.loop import Phase

__all__ = ["Phase", "Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    dataset: str
    depth: int
    phases: dict[str, Phase]
    options: Any
    width: int = 16
    batch_size: int = 128
    description: str = ""

    def with_epochs(self, total: int) -> Recipe:
        """The same recipe with `total` epochs, shared among phases in the recipe's proportions."""
        if total < len(self.phases):
            raise ValueError(f"--epochs must be at least {len(self.phases)} (one per phase: {list(self.phases)})")
        # Largest-remainder apportionment keeps the proportions and sums to exactly
        # `total`; a phase rounded to zero then borrows an epoch from the longest.
        names = list(self.phases)
        default_total = sum(p.epochs for p in self.phases.values())
        shares = {n: total * self.phases[n].epochs / default_total for n in names}
        epochs = {n: int(shares[n]) for n in names}
        for n in sorted(names, key=lambda n: int(shares[n]) - shares[n])[: total - sum(epochs.values())]:
            epochs[n] += 1
        for n in names:
            if epochs[n] == 0:
                epochs[max(names, key=epochs.__getitem__)] -= 1
                epochs[n] = 1
        phases = {n: dataclasses.replace(self.phases[n], epochs=epochs[n]) for n in names}
        return dataclasses.replace(self, phases=phases)


def _recipes(*recipes: Recipe) -> dict[str, Recipe]:
    return {r.name: r for r in recipes}


RECIPES = _recipes(
    Recipe(
        name="drnet-digits",
        family="drnet",
        dataset="digits",
        depth=8,
        phases={"pretrain": Phase(epochs=6, lr=0.1), "finetune": Phase(epochs=4, lr=0.05)},
        options=DRNetOptions(resolutions=(32, 24, 16), macs_target=0.45, eta=2.0),
        batch_size=64,
        description="scikit-learn digits on a 32x32 canvas; CPU, about a minute",
    ),
    Recipe(
        name="drnet-cifar10",
        family="drnet",
        dataset="cifar10",
        depth=20,
        phases={"pretrain": Phase(epochs=160, lr=0.1), "finetune": Phase(epochs=40, lr=0.01)},
        options=DRNetOptions(resolutions=(32, 24, 16), macs_target=0.6, eta=2.0),
        description="CIFAR-10, ResNet-20 backbone, candidates 32/24/16",
    ),
    Recipe(
        name="blockdrop-digits",
        family="blockdrop",
        dataset="digits",
        depth=14,
        phases={
            "pretrain": Phase(epochs=5, lr=0.1),
            "curriculum": Phase(epochs=6, lr=1e-3, optimizer="adam", weight_decay=0.0),
            "finetune": Phase(epochs=3, lr=1e-4, optimizer="adam", weight_decay=0.0),
        },
        options=BlockDropOptions(gamma=2.0, policy_width=8, policy_resolution=16),
        batch_size=64,
        description="scikit-learn digits, ResNet-14 (6 blocks), policy on a 16x16 input; CPU, minutes",
    ),
    *(
        Recipe(
            name=f"blockdrop-cifar10-resnet{depth}",
            family="blockdrop",
            dataset="cifar10",
            depth=depth,
            # Paper: a pretrained ResNet, then curriculum learning and joint finetuning with
            # Adam at 1e-3 and 1e-4 (the authors' code runs both far longer on GPUs).
            phases={
                "pretrain": Phase(epochs=160, lr=0.1),
                "curriculum": Phase(epochs=400, lr=1e-3, optimizer="adam", weight_decay=0.0),
                "finetune": Phase(epochs=400, lr=1e-4, optimizer="adam", weight_decay=0.0),
            },
            options=BlockDropOptions(gamma=10.0),
            batch_size=256,
            description=f"CIFAR-10, ResNet-{depth}, the paper's settings (gamma 10, alpha 0.8)",
        )
        for depth in (32, 110)
    ),
    Recipe(
        name="urnet-digits",
        family="urnet",
        dataset="digits",
        depth=14,
        phases={
            "pretrain": Phase(epochs=5, lr=0.1),
            "gates": Phase(epochs=2, lr=1e-3, optimizer="adam", weight_decay=0.0),
            "joint": Phase(epochs=4, lr=0.01),
        },
        options=URNetOptions(reduction=2, beta=10.0),
        batch_size=64,
        description="scikit-learn digits, ResNet-14 (6 blocks); CPU, about two minutes",
    ),
    Recipe(
        name="urnet-cifar10-resnet110",
        family="urnet",
        dataset="cifar10",
        depth=110,
        phases={
            "pretrain": Phase(epochs=160, lr=0.1),
            "gates": Phase(epochs=20, lr=1e-3, optimizer="adam", weight_decay=0.0),
            "joint": Phase(epochs=100, lr=0.01),
        },
        options=URNetOptions(reduction=2, beta=15.0, scale_min=0.2, scale_max=1.0),
        description="CIFAR-10, ResNet-110 (54 blocks), CGM reduction 2, S ~ U(0.2, 1)",
    ),
)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None
