"""URNet: a conditional gate before each residual block, steered by a user scale S (Lee et al., AAAI 2020).

Each Conditional Gating Module (CGM) sees the features entering its block and
S, and opens or closes the block. The scale loss pulls the fraction of open
gates towards S, so one trained network serves every S in [S_min, S_max].
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from runtime.rules.gated import SCALES  # the evaluation sweep is the bundle's operating points
from trainer.backbone import CifarResNet, backbone_from_config
from trainer.block_loop import BlockCosts, block_costs, blend_blocks, run_blocks
from trainer.device_costs import DeviceCosts
from trainer.dynamic import DynamicOutput, block_path
from trainer.loop import pretrain_backbone, train_phase
from trainer.macs import count_macs, eval_mode
from trainer.resume import TrainingRun

__all__ = [
    "URNetOptions", "ConditionalGate", "URNet", "build", "build_extra", "fit", "evaluate",
    "scale_loss", "usage_of", "straight_through", "sample_scale", "random_drop_mask",
]



GATE_MODES = ("paper", "direct-scale")


@dataclass(frozen=True)
class URNetOptions:
    """Defaults are the paper's CIFAR settings (Sec. "Implementation details", Table 1, "Scale Annealing")."""

    resolution: int = 32
    reduction: int = 2  # CGM channel reduction r: 2 for CIFAR, 16 for ImageNet
    beta: float = 2.0  # weight of the scale loss (Table 1's CIFAR runs; Fig. 5 sweeps 1-8)
    soft_probability: float = 0.1  # p: chance the gates are sigmoids rather than binary steps (Table 1: p = 0.1)
    scale_min: float = 0.2
    scale_max: float = 1.0
    scale_per_sample: bool = False  # the paper draws one S per iteration
    fixed_scale: float | None = None  # fixed-S mode: anneal S from 1 down to this target
    scale_noise: float = 0.1  # sigma of the Gaussian noise on S in fixed-S mode
    anneal_epochs: int | None = 5  # fixed-S annealing length; None: the whole joint phase
    # "paper": one sigmoid-or-binary draw per iteration from the seeded generator, binary gates
    # pass no gradient, S enters the CGM as one more input. "direct-scale" (ours): a draw per gate,
    # binary gates pass the sigmoid's gradient (straight-through), and S also reaches the logit
    # through a learned weight (benchmarks/results/blocks_cifar10.md).
    gate_mode: str = "paper"

    def __post_init__(self) -> None:
        if self.gate_mode not in GATE_MODES:
            raise ValueError(f"unknown gate_mode {self.gate_mode!r}; choose from {list(GATE_MODES)}")


def scale_loss(gates: Tensor, scale: Tensor, usage: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """(usage - S)^2, averaged over the batch: usage is the share of gates open, (1/N) * sum_n gate_n (the paper),
    or `usage(gates)`, the share of the static model's latency on a device (`BlockLatency.share`, --cost latency),
    so that S asks for a share of the device's time."""
    share = gates.mean(dim=1) if usage is None else usage(gates)
    return ((share - scale) ** 2).mean()


class _StraightThroughStep(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor) -> Tensor:
        ctx.save_for_backward(logits)
        return (logits > 0).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (logits,) = ctx.saved_tensors
        soft = torch.sigmoid(logits)
        return grad * soft * (1 - soft)


def straight_through(logits: Tensor) -> Tensor:
    """An exact 0/1 step forward, the sigmoid's gradient backward.

    A custom function rather than `hard + soft - soft.detach()`, whose rounding
    leaves gates a hair off 1 and blends a trace of the skipped path back in.
    """
    return _StraightThroughStep.apply(logits)


def sample_scale(options: URNetOptions, progress: float, generator: torch.Generator, count: int) -> Tensor:
    """S for each of the `count` samples of one training batch; `progress` runs from 0 to 1 over the annealing.

    Free mode draws S ~ U(S_min, S_max), per sample or once for the batch.
    Fixed-S mode cosine-anneals S from 1 to the target and adds Gaussian
    noise, clipped at 1, once for the batch.
    """
    if options.fixed_scale is None:
        draws = torch.rand(count if options.scale_per_sample else 1, generator=generator)
        return (options.scale_min + (options.scale_max - options.scale_min) * draws).expand(count)
    target = options.fixed_scale
    annealed = target + (1 - target) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    noise = options.scale_noise * torch.randn(1, generator=generator)
    return (annealed + noise).clamp(max=1.0).expand(count)


class ConditionalGate(nn.Module):
    """CGM: pooled features with S appended, two linear layers, one open/close logit per sample.

    With `direct` (the direct-scale mode), S enters normalized to [-1, 1] over
    [S_min, S_max] and also reaches the logit through a weight that starts
    positive: appended raw as one input among C + 1, S barely moved the gates
    in our CIFAR-10 runs. Without it (the paper's CGM), S is appended as it is.
    """

    SCALE_WEIGHT = 3.2  # initial logit change per unit of normalized S (direct-scale mode)

    def __init__(self, channels: int, reduction: int, scale_range: tuple[float, float], *, direct: bool) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels + 1, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        nn.init.constant_(self.fc2.bias, 2.0)  # start open at mid-range S: the pretrained ResNet runs in full
        self.scale_weight = nn.Parameter(torch.tensor(self.SCALE_WEIGHT)) if direct else None
        low, high = scale_range
        self.scale_center, self.scale_spread = ((low + high) / 2, max((high - low) / 2, 1e-6)) if direct else (0.0, 1.0)

    def forward(self, x: Tensor, scale: Tensor) -> Tensor:
        s = (scale.to(x.dtype) - self.scale_center) / self.scale_spread
        # keepdim: XNNPACK takes a spatial mean only in this form; without it ExecuTorch runs the mean
        # outside the delegate, about 5x slower per gate at batch 8.
        features = torch.cat([x.mean(dim=(2, 3), keepdim=True).flatten(1), s.view(-1, 1)], dim=1)
        logits = self.fc2(F.relu(self.fc1(features))).squeeze(1)
        return logits if self.scale_weight is None else logits + self.scale_weight * s


class URNet(nn.Module):
    def __init__(self, backbone: CifarResNet, options: URNetOptions) -> None:
        super().__init__()
        self.backbone = backbone
        self.options = options
        self.costs: BlockCosts = block_costs(backbone, options.resolution)
        x = torch.zeros(1, backbone.in_channels, options.resolution, options.resolution)
        gates, gate_macs = [], []
        with eval_mode(backbone), torch.no_grad():
            x = backbone.stem(x)
            for block in backbone.blocks:
                gate = ConditionalGate(
                    x.shape[1], options.reduction, (options.scale_min, options.scale_max),
                    direct=options.gate_mode == "direct-scale",
                )
                gates.append(gate)
                gate_macs.append(count_macs(gate, x, torch.ones(1)))
                x = block(x)
        self.gates = nn.ModuleList(gates)
        self.gate_macs = sum(gate_macs)  # every gate runs for every sample

    @property
    def num_blocks(self) -> int:
        return len(self.backbone.blocks)

    def draws_soft(self, generator: torch.Generator | None) -> bool:
        """One draw: are this iteration's gates sigmoids (probability p) rather than binary steps?"""
        return bool(torch.rand(1, generator=generator) < self.options.soft_probability)

    def forward(
        self, x: Tensor, scale: Tensor, *, soft: bool | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Training-time execution: logits and the (N, K) gate values used.

        `soft` makes every gate a sigmoid (True) or a binary step (False). None
        draws as the mode does: in the paper's mode one draw for every gate of
        the iteration, and a binary gate passes no gradient; in the
        direct-scale mode a draw per gate, and a binary gate passes the
        sigmoid's gradient (straight-through).
        """
        paper = self.options.gate_mode == "paper"
        if paper and soft is None:
            soft = self.draws_soft(generator)
        used = []

        def gate(k: int, h: Tensor) -> Tensor:
            logits = self.gates[k](h, scale)
            soft_here = self.draws_soft(generator) if soft is None else soft
            if soft_here:
                g = torch.sigmoid(logits)
            else:
                g = (logits > 0).to(logits.dtype) if paper else straight_through(logits)
            used.append(g)
            return g

        logits = blend_blocks(self.backbone, x, gate)
        return logits, torch.stack(used, dim=1)

    @torch.no_grad()
    def infer(self, x: Tensor, scale: float = 1.0) -> DynamicOutput:
        """Binary gates; a closed gate skips its block for real."""
        s = torch.full((len(x),), float(scale), device=x.device)
        logits, executed = run_blocks(self.backbone, x, lambda k, h: self.gates[k](h, s) > 0)
        return DynamicOutput(logits, block_path(executed), self.gate_macs + self.costs.macs(executed), executed)


def build(model: dict) -> URNet:
    # A config from before gate modes existed trained the direct-scale CGM.
    options = URNetOptions(**{"gate_mode": "direct-scale", **model["options"]})
    return URNet(build_extra(model, "backbone"), options)


def build_extra(model: dict, name: str) -> nn.Module:
    """The baselines are plain ResNets of the same architecture."""
    return backbone_from_config(model, block_layout=True)


def random_drop_mask(samples: int, blocks: int, keep: float, generator: torch.Generator) -> Tensor:
    """Each block kept with probability `keep`, independently per sample (URNet Table 1's 'rand')."""
    return torch.rand(samples, blocks, generator=generator) < keep


def usage_of(model: URNet, costs: DeviceCosts | None) -> Callable[[Tensor], Tensor] | None:
    """The scale loss's usage: None, the paper's share of gates open; or a path's latency over the static model's
    on the costs' device, every block step a graph call (exporter/splits/urnet.py), the stem's included."""
    return None if costs is None else costs.blocks(model.num_blocks, fixed=("stem",)).share


def fit(
    model: URNet, loader: DataLoader, *, phases: dict, device: torch.device, run: TrainingRun | None = None,
    costs: DeviceCosts | None = None,
) -> dict[str, nn.Module]:
    """Pretrain the ResNet, train the CGMs alone, then everything jointly; also train the baselines.

    Returns the baselines: the pretrained ResNet ("rand, val": random drop at
    test time only) and a copy finetuned with random drop ("rand, train/val")
    for as many epochs as the joint phase. With `costs`, S is a share of the static model's latency on the
    costs' device (usage_of).
    """
    options = model.options
    run = run or TrainingRun()
    rng = run.generator("random-drop keep", 0)  # every draw of training comes from seeded generators
    blocks = model.num_blocks
    usage = usage_of(model, costs)

    pretrain_backbone(model.backbone, loader, phase=phases["pretrain"], device=device, run=run)
    resnet = run.keep("resnet", copy.deepcopy(model.backbone))

    dropped = run.keep("resnet_random_drop", copy.deepcopy(model.backbone))
    mask_rng = run.generator("random-drop mask", 0)

    def random_drop_loss(images: Tensor, labels: Tensor):
        keep = options.scale_min + (options.scale_max - options.scale_min) * torch.rand(1, generator=rng).item()
        mask = random_drop_mask(len(images), blocks, keep, mask_rng).to(images.device)
        loss = F.cross_entropy(blend_blocks(dropped, images, lambda k, _: mask[:, k]), labels)
        return loss, {"ce": loss.item()}

    train_phase(
        dropped, loader, random_drop_loss, phase=phases["joint"],
        param_groups=[{"params": dropped.parameters()}], device=device, desc="baseline: random-drop finetune", run=run,
    )

    anneal_epochs = phases["joint"].epochs if options.anneal_epochs is None else options.anneal_epochs
    annealing_steps = max(1, anneal_epochs * len(loader))  # fixed-S annealing runs over these steps
    done = run.tensor("joint steps", torch.zeros((), dtype=torch.long))
    scale_rng = run.generator("scale", 0)
    gate_rng = run.generator("gates", 1)
    free = dataclasses.replace(options, fixed_scale=None)  # the gates learn first over the whole range

    def gated_loss(images: Tensor, labels: Tensor, *, joint: bool):
        progress = done.item() / annealing_steps
        done.add_(int(joint))
        scale = sample_scale(options if joint else free, progress, scale_rng, len(images)).to(images.device)
        soft = model.draws_soft(gate_rng) if options.gate_mode == "paper" else None
        if soft is False and not joint:
            # Binary gates pass no gradient and the ResNet is frozen: the iteration is drawn, but trains nothing.
            return None, {"S": scale.mean().item()}
        logits, gates = model(images, scale, soft=soft, generator=gate_rng)
        ce = F.cross_entropy(logits, labels)
        ls = scale_loss(gates, scale, usage)
        return ce + options.beta * ls, {"ce": ce.item(), "S": scale.mean().item(), "open": gates.mean().item()}

    train_phase(
        model, loader, lambda x, y: gated_loss(x, y, joint=False), phase=phases["gates"],
        param_groups=[{"params": model.gates.parameters()}], device=device, desc="train gates",
        before_epoch=lambda _: model.backbone.eval(), run=run,
        # Every CGM gets a gradient in a step that trains; the steps that train nothing return no loss.
        skips_parameters=False,
    )
    train_phase(
        model, loader, lambda x, y: gated_loss(x, y, joint=True), phase=phases["joint"],
        param_groups=[{"params": model.parameters()}], device=device, desc="joint finetune", run=run,
        skips_parameters=True,
    )
    return {"resnet": resnet, "resnet_random_drop": dropped}


def _row(correct: Tensor, macs: Tensor, executed: Tensor) -> dict:
    used = executed.float().sum(1)
    return {
        "accuracy": correct.float().mean().item(),
        "mean_macs": macs.float().mean().item(),
        "blocks_mean": used.mean().item(),
        "blocks_std": used.std().item(),
        "usage": used.mean().item() / executed.shape[1],
        "histogram": {},
    }


@torch.no_grad()
def evaluate(model: URNet, loader: DataLoader, *, device: torch.device, extras: dict | None = None) -> dict:
    """The S sweep for URNet and both random-drop baselines, and the block-usage map (URNet Fig. 4)."""
    model.eval()
    extras = extras or {}
    baselines = {"rand, val": extras.get("resnet"), "rand, train/val": extras.get("resnet_random_drop")}
    points, usage_map = [], {}
    for s in SCALES:
        outs, labels = [], []
        for images, target in loader:
            outs.append(model.infer(images.to(device), s))
            labels.append(target.to(device))
        y = torch.cat(labels)
        executed = torch.cat([o.blocks for o in outs])
        row = _row(torch.cat([o.logits.argmax(1) for o in outs]) == y, torch.cat([o.macs for o in outs]), executed)
        row["histogram"] = {}
        usage_map[str(s)] = executed.float().mean(0).tolist()
        point = {"scale": s, "model": row, "baselines": {}}
        generator = torch.Generator().manual_seed(0)
        for name, network in baselines.items():
            if network is None:
                continue
            hits, ran = [], []
            for images, target in loader:
                mask = random_drop_mask(len(images), model.num_blocks, s, generator).to(device)
                logits, executed = run_blocks(network, images.to(device), lambda k, _: mask[:, k])
                hits.append(logits.argmax(1) == target.to(device))
                ran.append(executed)
            ran = torch.cat(ran)
            point["baselines"][name] = _row(torch.cat(hits), model.costs.macs(ran), ran)
        points.append(point)
    headline = next(p for p in points if p["scale"] == 0.6)
    return {
        "images": len(y),
        "num_blocks": model.num_blocks,
        "model": {**headline["model"], "label": "URNet, S=0.6"},
        "baselines": {f"{name}, S=0.6": row for name, row in headline["baselines"].items()},
        "operating_points": points,
        "block_usage_map": usage_map,
    }
