"""Named training recipes, `<family>-<dataset>[-<backbone>]`, with the papers' settings as defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainer.families.blockdrop import BlockDropOptions
from trainer.families.drnet import DRNetOptions
from trainer.families.resizable import ResizableOptions
from trainer.families.urnet import URNetOptions
from trainer.loop import Phase

__all__ = ["Phase", "Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    family: str | None  # None: a plain backbone, the starting point of the family recipes (trainer/pretrained.py)
    dataset: str
    depth: int
    phases: dict[str, Phase]
    options: Any
    width: int = 16
    batch_size: int = 128
    description: str = ""
    backbone: str = "cifar-resnet"  # or a torchvision model for the ImageNet recipes, run once those backbones land
    shortcut: str = "projection"  # CIFAR ResNet downsampling shortcut: trainer.backbone.SHORTCUTS
    # CPU threads it trains with, fixed so that the same command trains the same weights on any machine (the
    # digits recipes, which the demo and the tests run); None: torch's default, all the cores.
    threads: int | None = None

    @property
    def architecture(self) -> str:
        return f"ResNet-{self.depth}" if self.backbone == "cifar-resnet" else self.backbone

    def without(self, skipped: tuple[str, ...]) -> Recipe:
        """The same recipe with the `skipped` phases switched off (zero epochs)."""
        phases = {n: dataclasses.replace(p, epochs=0) if n in skipped else p for n, p in self.phases.items()}
        return dataclasses.replace(self, phases=phases)

    def with_epochs(self, total: int) -> Recipe:
        """The same recipe with `total` epochs, shared among phases in the recipe's proportions.

        Phases the recipe leaves at zero epochs (switched off) stay off.
        """
        names = [n for n, p in self.phases.items() if p.epochs > 0]
        if total < len(names):
            raise ValueError(f"--epochs must be at least {len(names)} (one per phase: {names})")
        # Largest-remainder apportionment keeps the proportions and sums to exactly
        # `total`; a phase rounded to zero then borrows an epoch from the longest.
        default_total = sum(p.epochs for p in self.phases.values())
        shares = {n: total * self.phases[n].epochs / default_total for n in names}
        epochs = {n: int(shares[n]) for n in names}
        for n in sorted(names, key=lambda n: int(shares[n]) - shares[n])[: total - sum(epochs.values())]:
            epochs[n] += 1
        for n in names:
            if epochs[n] == 0:
                epochs[max(names, key=epochs.__getitem__)] -= 1
                epochs[n] = 1
        phases = {n: dataclasses.replace(p, epochs=epochs.get(n, 0)) for n, p in self.phases.items()}
        return dataclasses.replace(self, phases=phases)


# He et al. (2016), Sec. 4.2: the CIFAR ResNet's training, 64k iterations of batch 128 (164 epochs), SGD 0.1
# divided by 10 at 50% and 75%, weight decay 1e-4. BlockDrop and URNet start from a ResNet trained so.
HE_ET_AL_CIFAR = Phase(epochs=164, lr=0.1, optimizer="momentum", weight_decay=1e-4, schedule="step", milestones=(0.5, 0.75))
# torchvision's reference ImageNet ResNet training: 90 epochs, SGD 0.1 divided by 10 every 30, weight decay 1e-4.
# The block families' ImageNet recipes start from such a ResNet (--init a torchvision state dict) or train one.
TORCHVISION_IMAGENET = Phase(epochs=90, lr=0.1, optimizer="momentum", weight_decay=1e-4, schedule="step",
                             milestones=(1 / 3, 2 / 3))

# BlockDrop's gamma on CIFAR depends on the ResNet (Table 3, the same models as Table 1's "ft" rows): 5 for
# ResNet-32 (6.9 of 15 blocks, 91.3%), 10 for ResNet-110 (16.9 of 54, 93.6%). ResNet-20 and -56 are not in the
# paper: they take the gamma of the paper's depth nearest theirs.
BLOCKDROP_CIFAR_GAMMA = {32: 5.0, 110: 10.0}


def blockdrop_cifar_gamma(depth: int) -> tuple[float, int]:
    """The paper's gamma for a CIFAR ResNet of `depth`, and the paper's depth it comes from."""
    nearest = min(BLOCKDROP_CIFAR_GAMMA, key=lambda paper_depth: abs(paper_depth - depth))
    return BLOCKDROP_CIFAR_GAMMA[nearest], nearest


def _recipes(*recipes: Recipe) -> dict[str, Recipe]:
    return {r.name: r for r in recipes}


RECIPES = _recipes(
    *(
        Recipe(
            name=f"resnet-cifar10-{depth}",
            family=None,
            shortcut="zero-pad",  # He et al.'s option A, which the block families default to
            dataset="cifar10",
            depth=depth,
            # He et al. train 164 epochs, SGD 0.1, / 10 at 50% and 75%. Deviation, to fit a 2-core CPU:
            # one-cycle to 0.2 over 50 epochs, Nesterov, weight decay 5e-4, label smoothing 0.1.
            phases={"train": Phase(epochs=50, lr=0.2, schedule="one-cycle", label_smoothing=0.1)},
            options=None,
            description=f"the plain ResNet-{depth} (option A shortcuts) that family recipes start from with --init; "
            "deviation from He et al.'s 164-epoch step schedule: 50 epochs one-cycle with label smoothing 0.1",
        )
        for depth in (20, 32, 56, 110)
    ),
    Recipe(
        name="drnet-digits",
        family="drnet",
        dataset="digits",
        depth=8,
        phases={"pretrain": Phase(epochs=4, lr=0.1), "finetune": Phase(epochs=3, lr=0.05)},
        options=DRNetOptions(resolutions=(32, 24, 16), macs_target=0.45, eta=2.0, every_candidate=True),
        batch_size=64,
        threads=2,
        description="scikit-learn digits at random sizes on a 32x32 canvas, the demo's; CPU, 2 threads, about 1.5 min "
        "on 2 cores (measured). Deviations: "
        "eta 2.0 (paper 0.2), so that a few epochs' budget pull moves the predictor; every candidate runs while "
        "finetuning (paper: the chosen one), so that the predictor learns which resolution each image needs "
        "(routed by its own choice alone, it sends every image to 16 px)",
    ),
    Recipe(
        name="drnet-cifar10",
        family="drnet",
        shortcut="zero-pad",  # He et al.'s CIFAR ResNet (option A), as the committed backbones (--init)
        dataset="cifar10",
        depth=20,
        # Sec. 4 (Experimental Settings): SGD with momentum 0.9, weight decay 1e-4, batch 256; pretraining 70 epochs at 0.1, / 10 every
        # 20; finetuning 100 epochs, / 10 every 30; the predictor at 0.1x. The paper's 3-epoch warmup is not done.
        phases={
            "pretrain": Phase(
                epochs=70, lr=0.1, optimizer="momentum", weight_decay=1e-4, schedule="step", milestones=(20 / 70, 40 / 70, 60 / 70)
            ),
            "finetune": Phase(
                epochs=100, lr=0.1, optimizer="momentum", weight_decay=1e-4, schedule="step", milestones=(0.3, 0.6, 0.9)
            ),
        },
        options=DRNetOptions(resolutions=(32, 24, 16), macs_target=0.6),  # eta 0.2: Table 1 / Sec. 4.3
        batch_size=256,
        description="CIFAR-10, ResNet-20 backbone, candidates 32/24/16; the paper's eta 0.2, batch routing and step "
        "schedules. Deviations: no 3-epoch warmup; CIFAR instead of ImageNet",
    ),
    *(
        Recipe(
            name=f"drnet-imagenet-{backbone}",
            family="drnet",
            dataset="imagenet",
            depth=depth,
            # Sec. 4.1, as drnet-cifar10: SGD momentum 0.9, weight decay 1e-4, batch 256; pretraining 70 epochs
            # at 0.1, / 10 every 20; finetuning 100 epochs, / 10 every 30; the ResNet-10 predictor at 128 px
            # and 0.1x the rate. alpha 3.0 G of ResNet-50's 4.1 G (Table 2).
            phases={
                "pretrain": Phase(epochs=70, lr=0.1, optimizer="momentum", weight_decay=weight_decay,
                                  schedule="step", milestones=(20 / 70, 40 / 70, 60 / 70)),
                "finetune": Phase(epochs=100, lr=0.1, optimizer="momentum", weight_decay=weight_decay,
                                  schedule="step", milestones=(0.3, 0.6, 0.9)),
            },
            options=DRNetOptions(resolutions=resolutions, predictor_resolution=128, macs_target=3.0 / 4.1),
            batch_size=256,
            backbone=f"torchvision:{model}",
            description=description,
        )
        for backbone, model, depth, resolutions, weight_decay, description in (
            ("resnet50", "resnet50", 50, (224, 168, 112), 1e-4,
             "ImageNet, ResNet-50 at 224/168/112 with resolution-aware BN (Sec. 4.1, Table 3). "
             "Deviation: no 3-epoch warmup"),
            ("mobilenetv2", "mobilenet_v2", 0, (224, 196, 168), 4e-5,
             "ImageNet, MobileNetV2 at [1, 0.875, 0.75] x 224 (Sec. 4.4). Deviations: the paper trains it as "
             "MobileNetV2's own paper (unspelled), here DRNet's schedule with MobileNetV2's wd 4e-5; the predictor's "
             "inverted residual blocks are one per MobileNetV2 stage at half width (the paper's text breaks off); "
             "no warmup"),
        )
    ),
    Recipe(
        name="blockdrop-digits",
        family="blockdrop",
        shortcut="zero-pad",  # parameter-free, as the official BlockDrop code
        dataset="digits",
        depth=14,
        phases={
            "pretrain": Phase(epochs=5, lr=0.1),
            "curriculum": Phase(epochs=6, lr=1e-3, optimizer="adam", weight_decay=0.0),
            "finetune": Phase(epochs=3, lr=1e-4, optimizer="adam", weight_decay=0.0),
        },
        options=BlockDropOptions(gamma=2.0, policy_width=8, policy_resolution=16),
        batch_size=64,
        threads=2,
        description="scikit-learn digits, ResNet-14 (6 blocks); CPU, about 4 min on 2 cores with its three "
        "baselines' finetuning (measured). Deviations for a few-epoch demo: "
        "gamma 2 (paper 10), a width-8 policy on a 16x16 input (paper: width 16 at 32x32), short Adam phases",
    ),
    *(
        Recipe(
            name=f"blockdrop-cifar10-resnet{depth}",
            family="blockdrop",
            shortcut="zero-pad",  # parameter-free, as the official BlockDrop code
            dataset="cifar10",
            depth=depth,
            # Appendix (CIFAR): a pretrained ResNet (He et al.: SGD 0.1, / 10 at 50% and 75%, weight decay
            # 1e-4); curriculum 5000 epochs, Adam 1e-4; joint finetuning 1600 epochs at 1e-4, then 400 at 1e-5.
            phases={
                "pretrain": HE_ET_AL_CIFAR,
                "curriculum": Phase(epochs=5000, lr=1e-4, optimizer="adam", weight_decay=0.0, schedule="constant"),
                "finetune": Phase(epochs=2000, lr=1e-4, optimizer="adam", weight_decay=0.0, schedule="step", milestones=(0.8,)),
            },
            options=BlockDropOptions(gamma=blockdrop_cifar_gamma(depth)[0]),
            batch_size=256,
            description=f"CIFAR-10, ResNet-{depth}, the paper's settings (gamma {blockdrop_cifar_gamma(depth)[0]:g}, "
            f"Table 3's for ResNet-{blockdrop_cifar_gamma(depth)[1]}; alpha 0.8; its epochs and rates). "
            "Deviations: batch 256 in the curriculum (paper 2048) and in pretraining (He et al. 128)",
        )
        for depth in (20, 32, 56, 110)  # the paper's 32 and 110; 20 and 56 match the committed backbones
    ),
    Recipe(
        name="blockdrop-imagenet-resnet101",
        family="blockdrop",
        dataset="imagenet",
        depth=101,
        # Appendix (ImageNet): a pretrained ResNet-101 (--init a torchvision state dict; the pretrain phase is
        # torchvision's reference recipe, 90 epochs, for training one here); curriculum 45 epochs at Adam 1e-4,
        # joint finetuning 10 epochs at 1e-5, batch 320; gamma 5 (Table 4, the 20% speed-up); the ResNet-10
        # policy on a 112x112 input (Sec. 4.1).
        phases={
            "pretrain": TORCHVISION_IMAGENET,
            "curriculum": Phase(epochs=45, lr=1e-4, optimizer="adam", weight_decay=0.0, schedule="constant"),
            "finetune": Phase(epochs=10, lr=1e-5, optimizer="adam", weight_decay=0.0, schedule="constant"),
        },
        options=BlockDropOptions(resolution=224, policy_resolution=112, gamma=5.0),
        batch_size=320,
        backbone="torchvision:resnet101",
        description="ImageNet, ResNet-101 (33 blocks), the paper's settings. Deviation: batch 320 in the curriculum "
        "too (paper 2048)",
    ),
    Recipe(
        name="urnet-digits",
        family="urnet",
        shortcut="zero-pad",  # parameter-free, as the official BlockDrop code
        dataset="digits",
        depth=14,
        phases={
            "pretrain": Phase(epochs=5, lr=0.1),
            "gates": Phase(epochs=2, lr=1e-3, optimizer="adam", weight_decay=0.0),
            "joint": Phase(epochs=4, lr=0.01),
        },
        # Deviations for a few-epoch demo: the direct-scale CGM, p 0.5, beta 10 and S per sample
        # (paper: its CGM, p 0.1, beta 2, S per iteration), so that usage follows S within minutes.
        options=URNetOptions(reduction=2, beta=10.0, soft_probability=0.5, scale_per_sample=True, gate_mode="direct-scale"),
        batch_size=64,
        threads=2,
        description="scikit-learn digits, ResNet-14 (6 blocks); CPU, about 3 min on 2 cores with its random-drop "
        "baseline (measured). Deviations: direct-scale CGM, "
        "p 0.5 (paper 0.1), beta 10 (paper 2), S per sample (paper: per iteration)",
    ),
    *(
        Recipe(
            name=f"urnet-cifar10-resnet{depth}",
            family="urnet",
            shortcut="zero-pad",  # parameter-free, as the official BlockDrop code
            dataset="cifar10",
            depth=depth,
            # Implementation details: the CGMs alone for 100 epochs, then jointly for 400, the learning rate
            # going from 1e-3 to 1e-5. The optimizer is not stated: Adam, and the steps at 50% and 75%, are ours.
            phases={
                "pretrain": HE_ET_AL_CIFAR,
                "gates": Phase(epochs=100, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="constant"),
                "joint": Phase(epochs=400, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="step", milestones=(0.5, 0.75)),
            },
            options=URNetOptions(reduction=2),  # the paper's CGM, p 0.1, beta 2, one S ~ U(0.2, 1) per iteration (Table 1)
            description=f"CIFAR-10, ResNet-{depth} ({3 * ((depth - 2) // 6)} blocks; the paper's is ResNet-110), the "
            "paper's settings: CGM reduction 2, p 0.1, beta 2, S ~ U(0.2, 1) per iteration, 100 + 400 epochs from 1e-3 to 1e-5",
        )
        for depth in (20, 56, 110)  # the paper's 110; 20 and 56 match the committed backbones
    ),
    Recipe(
        name="urnet-imagenet-resnet101",
        family="urnet",
        dataset="imagenet",
        depth=101,
        # Implementation details: CGM reduction 16; the CGMs alone 5 epochs, then jointly 15, the learning rate
        # from 1e-3 to 1e-5 (Adam and the steps are ours, as on CIFAR); beta 4 (Table 2's run). The pretrain
        # phase is torchvision's reference recipe, for when no pretrained ResNet-101 is given with --init.
        phases={
            "pretrain": TORCHVISION_IMAGENET,
            "gates": Phase(epochs=5, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="constant"),
            "joint": Phase(epochs=15, lr=1e-3, optimizer="adam", weight_decay=0.0, schedule="step", milestones=(0.5, 0.75)),
        },
        options=URNetOptions(resolution=224, reduction=16, beta=4.0),
        batch_size=256,
        backbone="torchvision:resnet101",
        description="ImageNet, ResNet-101 (33 blocks, option B shortcuts), the paper's settings: reduction 16, beta 4, "
        "5 + 15 epochs from 1e-3 to 1e-5. The batch size is not given: 256 is ours",
    ),
    Recipe(
        name="resizable-digits",
        family="resizable",
        dataset="digits",
        depth=14,
        phases={
            "supernet": Phase(epochs=8, lr=0.1),
            "target": Phase(epochs=0, lr=0.01),
            "learner": Phase(epochs=6, lr=1e-3, optimizer="adam", weight_decay=0.0),
        },
        options=ResizableOptions(factors=(1.0, 0.75, 0.5)),
        batch_size=64,
        threads=2,
        description="scikit-learn digits, ResNet-14, L = 1/0.75/0.5 (27 sub-networks) and a ResizeLearner; CPU, about "
        "4.5 min on 2 cores (measured)",
    ),
    *(
        Recipe(
            name=f"resizable-cifar10-resnet{depth}",
            family="resizable",
            shortcut="zero-pad",  # He et al.'s CIFAR ResNet (option A), as the committed backbones (--init)
            dataset="cifar10",
            depth=depth,
            # The paper has no CIFAR setting. A.1 trains resizable networks for twice the
            # baseline's epochs: 2 x the 160 of our CIFAR baselines, same cosine schedule.
            # The ResizeLearner's optimizer is not given in the paper: Adam 1e-3 is ours.
            phases={
                "supernet": Phase(epochs=320, lr=0.1),
                "target": Phase(epochs=0, lr=0.01),
                "learner": Phase(epochs=30, lr=1e-3, optimizer="adam", weight_decay=0.0),
            },
            options=ResizableOptions(factors=(1.0, 0.75, 0.5)),
            description=f"CIFAR-10, ResNet-{depth}, L = 1/0.75/0.5, fair sampling, 50k images label the ResizeLearner",
        )
        for depth in (20, 56)
    ),
    Recipe(
        name="resizable-cifar10-resnet20-aug",
        family="resizable",
        shortcut="zero-pad",
        dataset="cifar10",
        depth=20,
        # Resizable-Aug (Sec. 3.4): the baseline's 160 epochs in all; the switch point is
        # not given in the paper: ours is at 75%. Then BN calibration (Table 5).
        phases={
            "supernet": Phase(epochs=120, lr=0.1),
            "target": Phase(epochs=40, lr=0.01),
            "learner": Phase(epochs=0, lr=1e-3, optimizer="adam", weight_decay=0.0),
        },
        options=ResizableOptions(factors=(1.0, 0.75, 0.5), target=(1.0, 1.0, 1.0)),
        description="CIFAR-10, ResNet-20, Resizable-Aug: fair sampling, then the full configuration alone",
    ),
    # The paper's ImageNet settings (A.1), for torchvision backbones; they run once those land.
    Recipe(
        name="resizable-imagenet-resnet50",
        family="resizable",
        dataset="imagenet",
        depth=50,
        # 2 x the baseline's 100 epochs; lr / 10 at 30/60/80/90 of 100, scaled to 200.
        # The base lr is not given: 0.2 is the linear scaling rule's for batch 512.
        phases={
            "supernet": Phase(epochs=200, lr=0.2, weight_decay=1e-4, schedule="step", milestones=(0.3, 0.6, 0.8, 0.9)),
            "target": Phase(epochs=0, lr=0.02, weight_decay=1e-4),
            "learner": Phase(epochs=30, lr=1e-3, optimizer="adam", weight_decay=0.0),
        },
        options=ResizableOptions(factors=(1.0, 0.75, 0.5), resolution=224),
        batch_size=512,
        backbone="torchvision:resnet50",
        description="ImageNet, ResNet-50, 200 epochs, batch 512, wd 1e-4 (A.1)",
    ),
    Recipe(
        name="resizable-imagenet-mobilenetv2",
        family="resizable",
        dataset="imagenet",
        depth=0,
        # 2 x the baseline's 240 epochs, linear decay from 0.5, batch 1024, wd 4e-5 (A.1).
        phases={
            "supernet": Phase(epochs=480, lr=0.5, weight_decay=4e-5, schedule="linear"),
            "target": Phase(epochs=0, lr=0.05, weight_decay=4e-5),
            "learner": Phase(epochs=30, lr=1e-3, optimizer="adam", weight_decay=0.0),
        },
        options=ResizableOptions(factors=(1.0, 0.75, 0.5), resolution=224),
        batch_size=1024,
        backbone="torchvision:mobilenet_v2",
        description="ImageNet, MobileNetV2, 480 epochs, linear decay, batch 1024, wd 4e-5 (A.1)",
    ),
)


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None
