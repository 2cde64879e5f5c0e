"""Resizable networks: feature maps resized stage by stage, one BN set per scale factor.

One backbone holds |L|^stages spatial sub-networks (Resizable Neural Networks,
Sec. 3.1): a bilinear resize at the first non-strided block of each stage
brings the stage to its factor of the nominal resolution. Convolutions are
shared; each BN keeps one set per factor (scale-aware BN, Sec. 3.2). Training
is fair sampling (Algorithm 1), optionally switching to a target configuration
(Resizable-Aug, Sec. 3.4); every configuration then gets its own calibrated BN
statistics, and a ResizeLearner can pick one per image (Resizable-Adapt, Sec. 3.5).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from runtime.format.lookup_table import LOOKUP_TABLE_FILE, Entry, LookupTable, write_table
from trainer.backbone import backbone_from_config, conv1x1, conv3x3
from trainer.bn_calibration import DEFAULT_IMAGES, calibrate_batchnorm
from trainer.device_costs import DeviceCosts
from trainer.dynamic import DynamicOutput, resize
from trainer.loop import train_phase
from trainer.macs import count_macs, eval_mode
from trainer.resume import TrainingRun
from trainer.switchable_bn import freeze_active_bn_sets, make_switchable, use_bn_set

__all__ = [
    "Configuration", "ResizableOptions", "ResizableNetwork", "ResizeLearner", "SpatialSubnetwork",
    "configuration_name", "fair_configurations", "learner_targets", "configuration_costs", "build", "fit", "evaluate",
]

Configuration = tuple[float, ...]  # one scale factor per stage


@dataclass(frozen=True)
class ResizableOptions:
    factors: tuple[float, ...] = (1.0, 0.75, 0.5)  # the list L (Sec. 3.1; A.1 takes factors from such a list)
    resolution: int = 32  # input side; stage sides and MACs refer to it
    target: Configuration | None = None  # Resizable-Aug's target, trained alone after the switch (Sec. 3.4)
    # Configurations to enumerate, calibrate and offer; None: all |L|^stages (name a subset when that is too many).
    configurations: tuple[Configuration, ...] | None = None
    # Algorithm 1 accumulates (sums) the len(L) sub-networks' gradients before one step; "mean" is our
    # deviation, which divides them by len(L) and keeps the step size of single-network training.
    fair_gradients: str = "sum"
    calibration_images: int = DEFAULT_IMAGES  # BN post-statistics per configuration
    learner_images: int = 50_000  # Sec. 3.5 labels 50k training images for the ResizeLearner
    learner_width: int = 16
    # The ResizeLearner's label: None, the paper's (Sec. 3.5), the cheapest configuration that is right; a number m
    # (ours), the cheapest whose true-class probability is within m of the highest, which trades a little
    # confidence for cost where several configurations are right or none is.
    learner_margin: float | None = None


def configuration_name(configuration: Configuration) -> str:
    """"rs100-075-050": each stage's factor in percent."""
    return "rs" + "-".join(f"{round(f * 100):03d}" for f in configuration)


def fair_configurations(factors: tuple[float, ...], stages: int, generator: torch.Generator) -> list[Configuration]:
    """One iteration of fair sampling (Algorithm 1): len(L) sub-networks, each factor once per stage.

    Each stage permutes L on its own; sub-network j takes the j-th factor of
    every stage's permutation, so no stage repeats a factor within the iteration.
    """
    orders = [torch.randperm(len(factors), generator=generator).tolist() for _ in range(stages)]
    return [tuple(factors[order[j]] for order in orders) for j in range(len(factors))]


def learner_targets(correct: Tensor, true_probability: Tensor, costs: Tensor, margin: float | None = None) -> Tensor:
    """The ResizeLearner's label per image (N, K inputs over K configurations), `costs` per configuration in MACs
    (the paper) or a device's ms.

    The cheapest configuration that classifies the image correctly; equal costs
    go to the higher probability of the true class. When none is correct, the
    configuration that gives the true class the highest probability: the one
    nearest to being right. With a `margin`, a configuration qualifies when its
    true-class probability is within `margin` of the image's highest instead of
    when it is right.
    """
    if margin is not None:
        correct = true_probability >= true_probability.max(dim=1, keepdim=True).values - margin
    cost = torch.where(correct, costs.to(true_probability.dtype).expand_as(true_probability), math.inf)
    cheapest = correct & (cost == cost.min(dim=1, keepdim=True).values)
    best_correct = torch.where(cheapest, true_probability, -math.inf).argmax(dim=1)
    return torch.where(correct.any(dim=1), best_correct, true_probability.argmax(dim=1))


class SpatialSubnetwork(nn.Module):
    """One configuration as a plain static network: fixed resize sides, ordinary BN."""

    def __init__(self, backbone: nn.Module, sides: dict[int, int]) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = backbone.stem, backbone.blocks, backbone.head
        self.sides = sides  # block index -> side its input is resized to

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for index, block in enumerate(self.blocks):
            if index in self.sides:
                x = resize(x, self.sides[index])
            x = block(x)
        return self.head(x)


class ResizeLearner(nn.Module):
    """Sec. 3.5's ResizeLearner: three convolutions, pooling and a softmax over the configurations.

    It reads the stem's output, where the paper attaches it "at the last stage".
    At run time the learner must decide before any sub-network runs: reading
    the last stage would mean running a whole backbone first, costing more than
    the choice can save. The stem is the only part every configuration computes
    at the same resolution with the same BN (resizing starts at the first block),
    so its features are the cheapest learned ones that do not depend on the
    choice. The exported selector recomputes the stem (3% of ResNet-20's MACs).
    """

    def __init__(self, in_channels: int, width: int, configurations: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv3x3(in_channels, width, stride=2), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            conv3x3(width, 2 * width, stride=2), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            conv1x1(2 * width, configurations),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))

    def forward(self, stem_features: Tensor) -> Tensor:
        """Scores (logits) per configuration; the softmax belongs to the loss, argmax needs none."""
        return self.pool(self.features(stem_features))


class CalibratedStatistics(nn.Module):
    """One configuration's calibrated BN running statistics, every BN of its sub-network in module order."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("mean", torch.zeros(sum(channels)))
        self.register_buffer("var", torch.ones(sum(channels)))
        self.register_buffer("done", torch.tensor(False))

    def store(self, norms: list[nn.BatchNorm2d]) -> None:
        self.mean.copy_(torch.cat([n.running_mean for n in norms]))
        self.var.copy_(torch.cat([n.running_var for n in norms]))
        self.done.fill_(True)

    def load(self, norms: list[nn.BatchNorm2d]) -> None:
        for norm, mean, var in zip(norms, self.mean.split(self.channels), self.var.split(self.channels)):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)


@torch.no_grad()
def _probe(backbone: nn.Module, resolution: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Each block's input side at `resolution`, and whether the block shrinks it (a strided block)."""
    x = torch.zeros(1, backbone.in_channels, resolution, resolution)
    sides, strided = [], []
    with eval_mode(backbone):
        x = backbone.stem(x)
        for block in backbone.blocks:
            sides.append(x.shape[-1])
            x = block(x)
            strided.append(x.shape[-1] < sides[-1])
    return tuple(sides), tuple(strided)


def _norms(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


class ResizableNetwork(nn.Module):
    def __init__(self, backbone: nn.Module, options: ResizableOptions) -> None:
        super().__init__()
        self.block_sides, self.strided = _probe(backbone, options.resolution)
        if any(all(self.strided[i] for i in stage) for stage in backbone.stages):
            raise ValueError("a Resizable network needs a non-strided block in every stage (CIFAR ResNets: depth 14 or more)")
        if not options.factors or any(not 0 < f <= 1 for f in options.factors) or len(set(options.factors)) != len(options.factors):
            raise ValueError(f"factors must be distinct numbers in (0, 1], got {options.factors}")
        self.backbone = backbone
        self.options = options
        self.factors = tuple(options.factors)
        stages = len(backbone.stages)
        self.configurations: tuple[Configuration, ...] = tuple(
            tuple(c) for c in options.configurations or itertools.product(self.factors, repeat=stages)
        )
        for c in self.configurations:
            if len(c) != stages or not set(c) <= set(self.factors):
                raise ValueError(f"configuration {c} is not one factor of {self.factors} per stage ({stages} stages)")
        if options.fair_gradients not in ("sum", "mean"):
            raise ValueError(f"fair_gradients must be 'sum' (Algorithm 1) or 'mean', got {options.fair_gradients!r}")
        if options.target is not None and tuple(options.target) not in self.configurations:
            raise ValueError(f"target {options.target} is not among the configurations {self.configurations}")
        self.learner = ResizeLearner(backbone.stem[0].out_channels, options.learner_width, len(self.configurations))
        self.register_buffer("learner_trained", torch.tensor(False))
        channels = [n.num_features for n in _norms(self._static(self.configurations[0]))]
        self.statistics = nn.ModuleDict(
            {configuration_name(c): CalibratedStatistics(channels) for c in self.configurations}
        )
        image = torch.zeros(1, backbone.in_channels, options.resolution, options.resolution)
        with eval_mode(self):
            self.macs = [count_macs(self._static(c), image) for c in self.configurations]
            self.learner_macs = count_macs(self.learner_logits, image)

    # -- structure -----------------------------------------------------------------

    @property
    def full_configuration(self) -> Configuration:
        """The configuration with the most MACs (every stage at its largest factor): the static baseline."""
        return self.configurations[max(range(len(self.macs)), key=self.macs.__getitem__)]

    def sides(self, configuration: Configuration) -> dict[int, int]:
        """Where each stage resizes, and to what: its factor of the stage's nominal side.

        The first non-strided block of a stage takes the resized map (block 0 of
        a CIFAR ResNet's first stage, the second block of the later ones, whose
        first block has stride 2). Factors refer to the nominal side, the one
        the plain network has there, so a stage's size does not depend on earlier factors.
        """
        sides = {}
        for stage, factor in zip(self.backbone.stages, configuration):
            first_plain = next(i for i in stage if not self.strided[i])
            sides[first_plain] = max(1, round(factor * self.block_sides[first_plain]))
        return sides

    def bn_sets(self, configuration: Configuration) -> list[int]:
        """The BN set each block uses: the index in L of the factor its feature maps are at.

        A stage's strided first block runs before the stage resizes, on the
        previous stage's map at the previous stage's factor; its activations have
        that scale's statistics, so it uses the previous stage's set. Every other
        block uses its own stage's set. (The stem runs before any resize and has
        one plain BN.)
        """
        sets = []
        for s, stage in enumerate(self.backbone.stages):
            for index in stage:
                strided = s > 0 and self.strided[index]
                sets.append(self.factors.index(configuration[s - 1 if strided else s]))
        return sets

    @contextlib.contextmanager
    def _selected(self, configuration: Configuration):
        with contextlib.ExitStack() as stack:
            for block, index in zip(self.backbone.blocks, self.bn_sets(configuration)):
                stack.enter_context(use_bn_set(block, index))
            yield

    def _static(self, configuration: Configuration) -> SpatialSubnetwork:
        with self._selected(configuration):
            return SpatialSubnetwork(freeze_active_bn_sets(self.backbone), self.sides(configuration))

    # -- running -------------------------------------------------------------------

    def forward(self, x: Tensor, configuration: Configuration) -> Tensor:
        """Logits of one spatial sub-network on shared weights, with its stages' BN sets (training)."""
        sides = self.sides(configuration)
        with self._selected(configuration):
            x = self.backbone.stem(x)
            for index, block in enumerate(self.backbone.blocks):
                if index in sides:
                    x = resize(x, sides[index])
                x = block(x)
            return self.backbone.head(x)

    def subnetwork(self, configuration: Configuration, *, calibrated: bool = True) -> SpatialSubnetwork:
        """A static copy of one configuration with plain BN: its calibrated statistics, or those left by training."""
        static = self._static(configuration)
        if calibrated:
            stats = self.statistics[configuration_name(configuration)]
            if not bool(stats.done):
                raise ValueError(f"{configuration_name(configuration)} has no calibrated BN statistics; run calibrate()")
            stats.load(_norms(static))
        return static.eval()

    def calibrate(self, images: Tensor, *, batch_size: int = 200) -> None:
        """BN post-statistics for every configuration, stored with the model; shared weights are untouched."""
        batches = images.tensor_split(math.ceil(len(images) / batch_size))  # sizes differ by one at most
        for configuration in self.configurations:
            static = self._static(configuration)
            calibrate_batchnorm(static, batches)
            self.statistics[configuration_name(configuration)].store(_norms(static))

    def learner_logits(self, x: Tensor) -> Tensor:
        return self.learner(self.backbone.stem(x))

    @torch.no_grad()
    def infer(self, x: Tensor, *, allowed: list[int] | None = None) -> DynamicOutput:
        """Resizable-Adapt: each image runs the configuration the ResizeLearner scores best among `allowed`."""
        if not bool(self.learner_trained):
            raise ValueError("this Resizable network has no trained ResizeLearner (its learner phase had 0 epochs)")
        scores = self.learner_logits(x)
        if allowed is not None:
            mask = torch.full((scores.shape[1],), -math.inf)
            mask[allowed] = 0.0
            scores = scores + mask
        choice = scores.argmax(dim=1)
        logits = None
        for index in choice.unique().tolist():
            picked = choice == index
            out = self.subnetwork(self.configurations[index])(x[picked])
            if logits is None:
                logits = out.new_empty(len(x), out.shape[1])
            logits[picked] = out
        names = [configuration_name(self.configurations[i]) for i in choice.tolist()]
        macs = torch.tensor([self.learner_macs + self.macs[i] for i in choice.tolist()])
        return DynamicOutput(logits, names, macs)


def build(model: dict) -> ResizableNetwork:
    raw = model["options"]
    options = ResizableOptions(**{
        **raw,
        "factors": tuple(raw["factors"]),
        "target": tuple(raw["target"]) if raw.get("target") else None,
        "configurations": tuple(tuple(c) for c in raw["configurations"]) if raw.get("configurations") else None,
    })
    # Scale-aware BN in every block; the stem runs before any resize and keeps one plain BN.
    backbone = backbone_from_config(model, block_layout=True)
    make_switchable(backbone.blocks, len(options.factors))
    return ResizableNetwork(backbone, options)


def _images(loader: DataLoader, count: int) -> tuple[Tensor, Tensor]:
    """The first `count` training images (as the loader augments them) and their labels."""
    images, labels, held = [], [], 0
    for x, y in loader:
        images.append(x[: count - held])
        labels.append(y[: count - held])
        held += len(images[-1])
        if held >= count:
            break
    return torch.cat(images), torch.cat(labels)


def configuration_costs(model: ResizableNetwork, costs: DeviceCosts | None) -> Tensor:
    """What the learner's label calls "cheapest": each configuration's MACs (the paper), or its graph's latency on
    the costs' device (the learner runs before every configuration alike, so it orders none of them)."""
    if costs is None:
        return torch.tensor(model.macs)
    return torch.tensor(costs.paths_ms([{configuration_name(c): 1.0} for c in model.configurations]))


@torch.no_grad()
def _label_learner_images(
    model: ResizableNetwork, images: Tensor, labels: Tensor, device: torch.device, costs: Tensor
) -> Tensor:
    networks = [model.subnetwork(c).to(device) for c in model.configurations]
    targets = []
    for x, y in zip(images.split(256), labels.split(256)):
        x, y = x.to(device), y.to(device)
        probabilities = torch.stack([net(x).softmax(dim=1) for net in networks], dim=1).cpu()  # (n, K, classes)
        correct = probabilities.argmax(dim=2) == y.cpu()[:, None]
        true_probability = probabilities.gather(2, y.cpu()[:, None, None].expand(-1, len(networks), 1)).squeeze(2)
        targets.append(learner_targets(correct, true_probability, costs, model.options.learner_margin))
    return torch.cat(targets)


def fit(
    model: ResizableNetwork, loader: DataLoader, *, phases: dict, device: torch.device, run: TrainingRun | None = None,
    costs: DeviceCosts | None = None,
) -> dict[str, nn.Module]:
    options = model.options
    run = run or TrainingRun()
    generator = run.generator("configurations", 0)
    stages = len(model.backbone.stages)
    backbone_params = [{"params": model.backbone.parameters()}]

    def fair_loss(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        # Summing the len(L) losses before one backward accumulates exactly their gradients.
        losses = torch.stack([
            F.cross_entropy(model(images, c), labels) for c in fair_configurations(model.factors, stages, generator)
        ])
        total = losses.sum() if options.fair_gradients == "sum" else losses.mean()
        return total, {"ce": losses.mean().item()}

    train_phase(model, loader, fair_loss, phase=phases["supernet"], param_groups=backbone_params, device=device,
                desc="fair sampling", run=run)

    if phases["target"].epochs:
        if options.target is None:
            raise ValueError("the target phase (Resizable-Aug) needs options.target, the configuration to train")

        def target_loss(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
            loss = F.cross_entropy(model(images, options.target), labels)
            return loss, {"ce": loss.item()}

        # One configuration: the BN sets of the scales it does not use get no gradient.
        train_phase(model, loader, target_loss, phase=phases["target"], param_groups=backbone_params, device=device,
                    desc=f"target {configuration_name(options.target)}", run=run, skips_parameters=True)

    model.eval()
    calibration, _ = _images(loader, options.calibration_images)
    model.calibrate(calibration.to(device))

    if phases["learner"].epochs:
        images, labels = _images(loader, options.learner_images)
        targets = _label_learner_images(model, images, labels, device, configuration_costs(model, costs))
        run.tensor("learner images", images)  # on resume, as drawn before the interruption
        run.tensor("learner targets", targets)
        learner_loader = DataLoader(
            TensorDataset(images, targets), batch_size=loader.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(1),
        )
        stem = model.backbone.stem.eval()

        def learner_loss(x: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
            with torch.no_grad():
                features = stem(x)
            loss = F.cross_entropy(model.learner(features), target)
            return loss, {"ce": loss.item()}

        # The backbone is frozen: only the learner's parameters reach the optimizer.
        train_phase(model.learner, learner_loader, learner_loss, phase=phases["learner"],
                    param_groups=[{"params": model.learner.parameters()}], device=device, desc="ResizeLearner", run=run)
        model.learner_trained.fill_(True)
    return {}


@torch.no_grad()
def evaluate(model: ResizableNetwork, loader: DataLoader, *, device: torch.device, extras: dict | None = None) -> dict:
    """Per configuration: accuracy calibrated and not (Table 5's ablation), and MACs; then the ResizeLearner.

    The model row is the ResizeLearner when one is trained, else the target
    configuration (Resizable-Aug), else the full configuration.
    """
    model.eval()
    correct = {c: [] for c in model.configurations}
    uncalibrated = {c: [] for c in model.configurations}
    adapt_correct, adapt_macs, adapt_paths, labels_seen = [], [], [], 0
    networks = {c: model.subnetwork(c) for c in model.configurations}
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        labels_seen += len(labels)
        for c in model.configurations:
            correct[c].append(networks[c](images).argmax(1) == labels)
            uncalibrated[c].append(model(images, c).argmax(1) == labels)
        if bool(model.learner_trained):
            out = model.infer(images)
            adapt_correct.append(out.logits.argmax(1) == labels)
            adapt_macs.append(out.macs)
            adapt_paths += out.paths

    def accuracy(values: list[Tensor]) -> float:
        return float(torch.cat(values).float().mean())

    rows = {
        configuration_name(c): {
            "factors": list(c), "accuracy": accuracy(correct[c]), "accuracy_uncalibrated": accuracy(uncalibrated[c]),
            "mean_macs": macs, "histogram": {configuration_name(c): labels_seen},
        }
        for c, macs in zip(model.configurations, model.macs)
    }
    if adapt_paths:
        head = {
            "label": "ResizeLearner",
            "accuracy": accuracy(adapt_correct),
            "mean_macs": float(torch.cat(adapt_macs).float().mean()),
            "learner_macs": model.learner_macs,
            "histogram": {name: adapt_paths.count(name) for name in dict.fromkeys(adapt_paths)},
        }
    else:
        name = configuration_name(model.options.target or model.full_configuration)
        head = {"label": name, **rows[name]}
    return {
        "images": labels_seen,
        "model": head,
        "baselines": {name: {k: row[k] for k in ("accuracy", "mean_macs", "histogram")} for name, row in rows.items()},
        "configurations": rows,
        "calibration_images": model.options.calibration_images,
    }


def lookup_table(config: dict, checkpoint: str | Path) -> LookupTable:
    """Resizable-NAS's table (Sec. 3.3) of a finished run, from its config's test evaluation: each configuration's
    accuracy (calibrated and not) and MACs; latencies are merged in later, per device (trainer/resizable_nas.py)."""
    metrics, options = config["metrics"], config["model"]["options"]
    entries = tuple(
        Entry(name, tuple(row["factors"]), int(row["mean_macs"]), row["accuracy"], row["accuracy_uncalibrated"])
        for name, row in metrics["configurations"].items()
    )
    return LookupTable(
        factors=tuple(options["factors"]),
        stages=len(entries[0].factors),
        test_images=metrics["images"],
        calibration_images=metrics["calibration_images"],
        configurations=entries,
        learner_macs=metrics["model"].get("learner_macs"),
        source={"checkpoint": str(checkpoint), "recipe": config["recipe"]},
    )


def write_lookup_table(checkpoint: Path, config: dict) -> Path:
    """Beside a finished checkpoint, the lookup table its export reads."""
    write_table(checkpoint / LOOKUP_TABLE_FILE, lookup_table(config, checkpoint))
    return checkpoint / LOOKUP_TABLE_FILE
