"""DRNet: a tiny predictor picks each image's input resolution (Xie et al., 2021).

The backbone is shared across resolutions except for its BatchNorm, which keeps
one set per resolution. Training runs in the paper's two phases: the backbone
alone on every resolution, then jointly with the predictor under a MACs budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from trainer.backbone import backbone_from_config, cifar_resnet
from trainer.device_costs import DeviceCosts
from trainer.dynamic import DynamicOutput, resize
from trainer.loop import train_phase
from trainer.macs import count_macs, eval_mode
from trainer.resume import TrainingRun
from trainer.switchable_bn import use_bn_set
from trainer.torchvision_backbones import PREFIX, inverted_residual_predictor, resnet10

__all__ = [
    "DRNetOptions", "DRNet", "build", "fit", "evaluate", "flops_loss", "random_resolution_mix", "static_frontier",
    "Claim", "claims", "budget", "CANDIDATES", "choose_candidates", "path_name",
]


CANDIDATES = {
    "all": "every resolution in the options (the paper)",
    "paying": "the full resolution and those that pay on the device: its latency table's paying_points",
}


def path_name(resolution: int) -> str:
    """A resolution's graph and operating point, as the exporter names them (exporter/splits/drnet.py)."""
    return f"res{resolution}"


@dataclass(frozen=True)
class DRNetOptions:
    resolutions: tuple[int, ...] = (32, 24, 16)
    predictor_depth: int = 8  # the CIFAR ResNet predictor; on torchvision backbones it is the paper's ResNet-10
    predictor_width: int = 8
    predictor_resolution: int = 16
    # alpha, as a fraction of the full-resolution backbone's MACs (--cost latency: of the static model's measured ms)
    macs_target: float = 0.5
    eta: float = 0.2  # weight of the MACs loss: the paper's 0.2 (Table 1, Sec. 4.3; swept 0.1-1 in Table 2)
    tau: float = 1.0  # Gumbel-softmax temperature
    predictor_lr_scale: float = 0.1  # the predictor learns at 0.1x the backbone's rate
    # False: each image runs only its chosen resolution, as the paper routes a batch (Sec. 3.1). True: every
    # candidate runs on every image while finetuning and the straight-through gate picks among their logits, so the
    # predictor learns what each resolution would have scored, not only the one it chose (3x the finetuning compute).
    every_candidate: bool = False
    # Which resolutions to train: "all" of `resolutions` (the paper), or "paying": the full one and those the
    # device's latency table (--costs) says keep at least PAYS of their MACs saving as latency (a deviation).
    candidates: str = "all"

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATES:
            raise ValueError(f"unknown candidates {self.candidates!r}; choose from {list(CANDIDATES)}")


def flops_loss(expected: Tensor, target: float, c_max: float, c_min: float) -> Tensor:
    """DRNet's budget penalty max(0, (E[F] - alpha) / (C_max - C_min)), zero under budget; in MACs or in ms."""
    return torch.clamp((expected - target) / (c_max - c_min), min=0)


class DRNet(nn.Module):
    def __init__(self, backbone: nn.Module, predictor: nn.Module, options: DRNetOptions) -> None:
        super().__init__()
        self.backbone = backbone
        self.predictor = predictor
        self.options = options
        self.resolutions = tuple(options.resolutions)
        probe_channels = backbone.in_channels
        side = options.predictor_resolution
        with eval_mode(self):
            self.backbone_macs = [
                count_macs(self._backbone_at_size, torch.zeros(1, probe_channels, r, r), i)
                for i, r in enumerate(self.resolutions)
            ]
            self.predictor_macs = count_macs(self.predictor_logits, torch.zeros(1, probe_channels, side, side))

    def path_name(self, index: int) -> str:
        return path_name(self.resolutions[index])

    def _backbone_at_size(self, x: Tensor, index: int) -> Tensor:
        with use_bn_set(self.backbone, index):
            return self.backbone(x)

    def backbone_logits(self, x: Tensor, index: int) -> Tensor:
        """The backbone on `x` resized to candidate resolution `index`, with that resolution's BN set."""
        return self._backbone_at_size(resize(x, self.resolutions[index]), index)

    def predictor_logits(self, x: Tensor) -> Tensor:
        """One score per candidate resolution."""
        return self.predictor(resize(x, self.options.predictor_resolution))

    def forward(self, x: Tensor, path_costs: Sequence[float] | None = None) -> tuple[Tensor, Tensor]:
        """Training-time selection, as the paper routes a batch (Sec. 3.1): each sample runs only its hard choice
        (or, with `every_candidate`, every resolution, their logits mixed by the one-hot gate).

        The batch is split by chosen resolution and each group runs with its
        own BN set, so a set's statistics see only the samples that chose it.
        Gradient reaches the predictor through the straight-through Gumbel
        one-hot: a group's logits are multiplied by its gate entry, which is 1
        forward and carries the soft Gumbel-softmax gradient backward.

        Returns the selected logits and each sample's expected cost: its backbone MACs (the paper), or
        `path_costs`, one per resolution (a device's ms, trainer/device_costs.py).
        """
        gate = F.gumbel_softmax(self.predictor_logits(x), tau=self.options.tau, hard=True)
        costs = self.backbone_macs if path_costs is None else path_costs
        expected = gate @ torch.tensor(costs, dtype=gate.dtype, device=gate.device)
        if self.options.every_candidate:
            every = torch.stack([self.backbone_logits(x, i) for i in range(len(self.resolutions))])
            return torch.einsum("nr,rnc->nc", gate, every), expected
        choice = gate.argmax(dim=1)
        rows, parts = [], []
        for index in choice.unique().tolist():
            picked = torch.nonzero(choice == index).squeeze(1)
            parts.append(self.backbone_logits(x[picked], index) * gate[picked, index].unsqueeze(1))
            rows.append(picked)
        logits = torch.cat(parts)[torch.argsort(torch.cat(rows))]  # back in input order
        return logits, expected

    @torch.no_grad()
    def infer(self, x: Tensor) -> DynamicOutput:
        """Run only the chosen resolution for each image."""
        choice = self.predictor_logits(x).argmax(dim=1)
        logits = None
        for index in choice.unique().tolist():
            picked = choice == index
            out = self.backbone_logits(x[picked], index)
            if logits is None:
                logits = out.new_empty(len(x), out.shape[1])
            logits[picked] = out
        macs = torch.tensor([self.predictor_macs + self.backbone_macs[i] for i in choice.tolist()])
        return DynamicOutput(logits, [self.path_name(i) for i in choice.tolist()], macs)


def build(model: dict) -> DRNet:
    options = DRNetOptions(**{**model["options"], "resolutions": tuple(model["options"]["resolutions"])})
    backbone = backbone_from_config(model, bn_sets=len(options.resolutions))
    if model.get("backbone") == PREFIX + "mobilenet_v2":
        predictor = inverted_residual_predictor(num_classes=len(options.resolutions))  # Sec. 4.4
    elif model.get("backbone", "cifar-resnet").startswith(PREFIX):
        predictor = resnet10(num_classes=len(options.resolutions))  # the paper's ImageNet predictor (Sec. 4.1)
    else:
        predictor = cifar_resnet(
            options.predictor_depth, num_classes=len(options.resolutions), width=options.predictor_width
        )
    return DRNet(backbone, predictor, options)


def choose_candidates(options: DRNetOptions, costs: DeviceCosts | None) -> DRNetOptions:
    """`options` with the resolutions its `candidates` rule keeps, read from the device's table before the model
    is built: a resolution the device runs at a poor ms per MAC only dilutes the predictor's choice."""
    if options.candidates == "all":
        return options
    if costs is None:
        raise ValueError("DRNet's candidates='paying' picks resolutions from a device's latency table; "
                         "train with --cost latency --costs TABLE")
    paying = set(costs.table.paying_points())
    full, *smaller = options.resolutions
    chosen = (full, *(r for r in smaller if path_name(r) in paying))
    if len(chosen) == 1:
        raise ValueError(f"{costs.source}: no resolution below {full} pays on {costs.table.device}/"
                         f"{costs.table.backend} (python -m runtime.profile costs prints the report); "
                         f"the static model is faster there")
    return replace(options, resolutions=chosen)


def budget(model: DRNet, costs: DeviceCosts | None) -> tuple[list[float], float]:
    """Each resolution's cost and the target alpha the FLOPs loss holds their expectation to.

    The paper (Sec. 3.2): backbone MACs, alpha a share of the full resolution's. With a device's `costs`: each
    path as the runtime runs it, predictor included, and alpha the same share of the static model's ms.
    """
    if costs is None:
        return list(model.backbone_macs), model.options.macs_target * model.backbone_macs[0]
    paths = costs.paths_ms([{"predictor": 1.0, model.path_name(i): 1.0} for i in range(len(model.resolutions))])
    return paths, model.options.macs_target * costs.static_ms


def fit(
    model: DRNet, loader: DataLoader, *, phases: dict, device: torch.device, run: TrainingRun | None = None,
    costs: DeviceCosts | None = None,
) -> dict[str, nn.Module]:
    options = model.options
    resolutions = range(len(model.resolutions))

    def pretrain_loss(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        losses = [F.cross_entropy(model.backbone_logits(images, i), labels) for i in resolutions]
        total = torch.stack(losses).sum()
        return total, {"ce": total.item() / len(losses)}

    train_phase(
        model, loader, pretrain_loss, phase=phases["pretrain"],
        param_groups=[{"params": model.backbone.parameters()}], device=device, desc="pretrain backbone", run=run,
    )

    path_costs, target = budget(model, costs)
    c_max, c_min = max(path_costs), min(path_costs)
    unit, scale = ("macs", 1e6) if costs is None else ("ms", 1.0)

    def joint_loss(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        logits, expected = model(images, path_costs)
        ce = F.cross_entropy(logits, labels)
        budget = flops_loss(expected.mean(), target, c_max, c_min)
        return ce + options.eta * budget, {"ce": ce.item(), unit: expected.mean().item() / scale}

    train_phase(
        model, loader, joint_loss, phase=phases["finetune"],
        param_groups=[
            {"params": model.backbone.parameters()},
            {"params": model.predictor.parameters(), "lr": options.predictor_lr_scale},
        ],
        device=device, desc="finetune with predictor", run=run,
        skips_parameters=True,  # the BN set of a resolution that no image of a rank's batch chose
    )
    return {}


def random_resolution_mix(macs: list[int], target: float) -> list[float]:
    """Probabilities over resolutions whose expected MACs equal `target` (DRNet Table 5's baseline).

    Mixes the two resolutions that bracket the target; clips to the cheapest or
    dearest when the target lies outside their range.
    """
    order = sorted(range(len(macs)), key=macs.__getitem__)
    probabilities = [0.0] * len(macs)
    if target <= macs[order[0]]:
        probabilities[order[0]] = 1.0
        return probabilities
    for low, high in zip(order, order[1:]):
        if target <= macs[high]:
            share = (target - macs[low]) / (macs[high] - macs[low])
            probabilities[low], probabilities[high] = 1.0 - share, share
            return probabilities
    probabilities[order[-1]] = 1.0
    return probabilities


def static_frontier(macs: list[float], accuracy: list[float], at: float) -> tuple[float, tuple[int, int] | None]:
    """The best top-1 static models reach at `at` MACs, mixing any two (the upper hull of their points), and the
    pair it mixes (None: one static model alone, the best at no more MACs, or nothing below `at`).

    Stricter than the random-resolution baseline, which mixes the two resolutions that bracket `at` even where a
    cheaper one beats the dearer (24 px over 32 px).
    """
    best, pair = max((a for m, a in zip(macs, accuracy) if m <= at), default=0.0), None
    for low, (m0, a0) in enumerate(zip(macs, accuracy)):
        for high, (m1, a1) in enumerate(zip(macs, accuracy)):
            if m0 <= at <= m1 and m1 > m0 and (line := a0 + (a1 - a0) * (at - m0) / (m1 - m0)) > best:
                best, pair = line, (low, high)
    return best, pair


@torch.no_grad()
def evaluate(model: DRNet, loader: DataLoader, *, device: torch.device, extras: dict | None = None) -> dict:
    """Accuracy, mean MACs and chosen-resolution histogram for DRNet and its baselines.

    The random baseline mixes resolutions at DRNet's mean MACs, predictor
    included; its accuracy is the exact expectation, free of sampling noise.
    """
    model.eval()
    correct, macs, paths = [], [], []
    static_correct: list[list[Tensor]] = [[] for _ in model.resolutions]
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        out = model.infer(images)
        correct.append((out.logits.argmax(1) == labels).cpu())
        macs.append(out.macs)
        paths += out.paths
        for i in range(len(model.resolutions)):
            static_correct[i].append((model.backbone_logits(images, i).argmax(1) == labels).cpu())

    names = [model.path_name(i) for i in range(len(model.resolutions))]
    mean_macs = float(torch.cat(macs).float().mean())
    static_accuracy = [float(torch.cat(c).float().mean()) for c in static_correct]
    mix = random_resolution_mix(model.backbone_macs, mean_macs)
    baselines = {
        "random resolution, equal MACs": {
            "accuracy": sum(p * a for p, a in zip(mix, static_accuracy)),
            "mean_macs": sum(p * m for p, m in zip(mix, model.backbone_macs)),
            "histogram": {name: round(p * len(paths), 1) for name, p in zip(names, mix)},
        }
    }
    frontier, pair = static_frontier(model.backbone_macs, static_accuracy, mean_macs)
    baselines["frontier of the static models, equal MACs"] = {
        "accuracy": frontier, "mean_macs": mean_macs,
        "mixes": [names[i] for i in pair] if pair else [],
        "histogram": {},
    }
    for name, accuracy, backbone_macs in zip(names, static_accuracy, model.backbone_macs):
        baselines[f"static {name}"] = {"accuracy": accuracy, "mean_macs": backbone_macs, "histogram": {name: len(paths)}}
    return {
        "images": len(paths),
        "model": {
            "accuracy": float(torch.cat(correct).float().mean()),
            "mean_macs": mean_macs,
            "histogram": {name: paths.count(name) for name in names},
        },
        "baselines": baselines,
    }


@dataclass(frozen=True)
class Claim:
    statement: str
    holds: bool
    by: str  # the margin, in words


def claims(metrics: dict, used_share: float = 0.10) -> list[Claim]:
    """What a trained DRNet must show to be worth deploying, from `evaluate`'s metrics: it beats random
    resolution and the static models' frontier at its own MACs, and it is input-adaptive (at least two
    resolutions each serve `used_share` of the images or more), not a static model behind a predictor."""
    model, baselines = metrics["model"], metrics["baselines"]
    random = baselines["random resolution, equal MACs"]["accuracy"]
    frontier = baselines["frontier of the static models, equal MACs"]
    mixes = " and ".join(frontier["mixes"]) or "the best static model at no more MACs"
    images = sum(model["histogram"].values())
    used = {path: count / images for path, count in model["histogram"].items() if count >= used_share * images}
    return [
        Claim("DRNet beats random resolution at equal MACs", model["accuracy"] > random,
              f"{100 * (model['accuracy'] - random):+.1f} pp"),
        Claim("above the static frontier", model["accuracy"] > frontier["accuracy"],
              f"{100 * (model['accuracy'] - frontier['accuracy']):+.1f} pp over mixing {mixes}"),
        Claim(f"input-adaptive: at least two resolutions serve {used_share:.0%} of the images or more", len(used) >= 2,
              ", ".join(f"{path} {share:.0%}" for path, share in used.items()) or "none"),
    ]
