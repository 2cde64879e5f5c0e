"""BlockDrop: a policy network picks, once per image, which residual blocks run (Wu et al., CVPR 2018).

The policy outputs K keep-probabilities; training samples Bernoulli policies
and rewards correct, sparse ones, with a self-critical greedy baseline and
alpha-bounded exploration. A curriculum hands the policy one more block per
epoch, from the last block backwards, before the ResNet is finetuned jointly.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli
from torch.utils.data import DataLoader

from trainer.backbone import CifarResNet, backbone_from_config, cifar_resnet
from trainer.torchvision_backbones import PREFIX, resnet10
from trainer.block_loop import BlockCosts, block_costs, blend_blocks, run_blocks
from trainer.device_costs import DeviceCosts
from trainer.dynamic import DynamicOutput, block_path, resize
from trainer.distributed import mean_over_ranks
from trainer.loop import pretrain_backbone, train_phase
from trainer.macs import count_macs, eval_mode
from trainer.resume import TrainingRun

__all__ = [
    "BlockDropOptions", "BlockDrop", "build", "build_extra", "fit", "evaluate", "BASELINES", "blocks_kept",
    "block_share", "usage_of", "reward", "bound_probabilities", "self_critical_advantage", "curriculum_learned",
    "policy_loss", "baseline_masks",
]

BASELINES = ("FirstK", "RandomK", "DistributeK")  # Table 1's heuristics, each keeping K blocks


@dataclass(frozen=True)
class BlockDropOptions:
    resolution: int = 32
    policy_depth: int = 8  # the paper's CIFAR policy: a ResNet-8 on the 32x32 input
    policy_width: int = 16
    policy_resolution: int = 32  # the paper downsamples for large inputs (112 for 224 ImageNet)
    alpha: float = 0.8  # exploration bound: s' = alpha * s + (1 - alpha) * (1 - s)
    gamma: float = 10.0  # penalty for a wrong prediction when finetuning (paper, CIFAR ResNet-110)
    curriculum_gamma: float = 1.0  # the same penalty during the curriculum (paper's code default)
    entropy: float = 0.1  # entropy bonus weight on the policy
    # Table 1 fine-tunes each baseline's ResNet with its own policy; as long as BlockDrop's joint phase (None),
    # or this many epochs (0: report the baselines on the pretrained ResNet only).
    baseline_finetune_epochs: int | None = None


def block_share(executed: Tensor) -> Tensor:
    """|u|_0 / K: the share of blocks a sample runs, the paper's usage."""
    return executed.float().sum(dim=1) / executed.shape[1]


def reward(executed: Tensor, correct: Tensor, gamma: float, usage: Callable[[Tensor], Tensor] = block_share) -> Tensor:
    """1 - usage^2 for a correct prediction, -gamma otherwise; usage is the share of blocks run (the paper), or
    of the static model's latency on a device (`BlockLatency.share`, --cost latency)."""
    share = usage(executed.float())
    return torch.where(correct, 1 - share**2, torch.full_like(share, -gamma))


def bound_probabilities(probs: Tensor, alpha: float) -> Tensor:
    return alpha * probs + (1 - alpha) * (1 - probs)


def self_critical_advantage(sampled_reward: Tensor, greedy_reward: Tensor) -> Tensor:
    """The sampled policy's reward over the greedy (s > 0.5) policy's: no learned value baseline needed."""
    return sampled_reward - greedy_reward


def curriculum_learned(num_blocks: int, epoch: int, epochs: int) -> int:
    """How many trailing blocks the policy controls at `epoch` of a curriculum of `epochs`.

    The paper's schedule: epoch t learns the last t + 1 blocks and keeps the
    first K - t - 1 on, then all K once t + 1 >= K. A curriculum shorter than
    K epochs hands over blocks faster, so it still ends with all of them.
    """
    paced = math.ceil((epoch + 1) * num_blocks / max(epochs, 1))
    return min(num_blocks, max(epoch + 1, paced))


def policy_loss(probs: Tensor, sampled: Tensor, advantage: Tensor, learned: Tensor, entropy: float) -> Tensor:
    """REINFORCE over the learned blocks; forced-on blocks take no part."""
    distribution = Bernoulli(probs)
    log_prob = (distribution.log_prob(sampled) * learned).sum(dim=1)
    bonus = (distribution.entropy() * learned).sum(dim=1)
    return (-(log_prob * advantage) - entropy * bonus).mean()


class BlockDrop(nn.Module):
    def __init__(self, backbone: CifarResNet, policy: CifarResNet, options: BlockDropOptions) -> None:
        super().__init__()
        self.backbone = backbone
        self.policy = policy
        self.options = options
        self.costs: BlockCosts = block_costs(backbone, options.resolution)
        side = options.resolution
        with eval_mode(policy):
            self.policy_macs = count_macs(self.policy_logits, torch.zeros(1, policy.in_channels, side, side))

    @property
    def num_blocks(self) -> int:
        return len(self.backbone.blocks)

    def policy_logits(self, x: Tensor) -> Tensor:
        return self.policy(resize(x, self.options.policy_resolution))

    def keep_probabilities(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.policy_logits(x))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Masked execution for training, one keep/drop mask row per sample."""
        return blend_blocks(self.backbone, x, lambda k, _: mask[:, k])

    def run_policy(self, x: Tensor, mask: Tensor) -> DynamicOutput:
        """Run `mask` for real: dropped blocks are skipped, and MACs count what ran."""
        logits, executed = run_blocks(self.backbone, x, lambda k, _: mask[:, k])
        return DynamicOutput(logits, block_path(executed), self.policy_macs + self.costs.macs(executed), executed)

    @torch.no_grad()
    def infer(self, x: Tensor) -> DynamicOutput:
        return self.run_policy(x, self.keep_probabilities(x) >= 0.5)


def build(model: dict) -> BlockDrop:
    backbone = backbone_from_config(model, block_layout=True)
    return BlockDrop(backbone, _policy(model, len(backbone.blocks)), BlockDropOptions(**model["options"]))


def build_extra(model: dict, name: str) -> nn.Module:
    """Table 1's companions: the pretrained ResNet, the policy after the curriculum alone, each baseline fine-tuned."""
    if name == "curriculum_policy":
        with torch.random.fork_rng():  # counting the blocks must not move the generator the policy is drawn from
            blocks = len(backbone_from_config(model, block_layout=True).blocks)
        return _policy(model, blocks)
    return backbone_from_config(model, block_layout=True)


def _policy(model: dict, blocks: int) -> nn.Module:
    """One keep logit per block: the paper's ResNet-8 on CIFAR, its ResNet-10 on a downsampled ImageNet input."""
    if model.get("backbone", "cifar-resnet").startswith(PREFIX):
        return resnet10(num_classes=blocks)
    options = BlockDropOptions(**model["options"])
    return cifar_resnet(options.policy_depth, num_classes=blocks, width=options.policy_width)


def blocks_kept(mean_blocks: float) -> int:
    """Table 1's K: BlockDrop's mean number of blocks, rounded up."""
    return math.ceil(mean_blocks - 1e-9)


def usage_of(model: BlockDrop, costs: DeviceCosts | None) -> Callable[[Tensor], Tensor]:
    """The reward's usage: the paper's share of blocks, or a path's latency as the runtime runs it block by block
    over the static model's, on the costs' device (policy, stem and head run on every path)."""
    return block_share if costs is None else costs.blocks(model.num_blocks, fixed=("policy", "stem", "head")).share


def _policy_step(model: BlockDrop, images: Tensor, labels: Tensor, learned: Tensor, gamma: float, *, joint: bool,
                 usage: Callable[[Tensor], Tensor] = block_share):
    probs = bound_probabilities(model.keep_probabilities(images), model.options.alpha)
    forced = ~learned.bool()
    sampled = Bernoulli(probs).sample().masked_fill(forced, 1.0)
    greedy = (probs >= 0.5).float().masked_fill(forced, 1.0)
    with torch.set_grad_enabled(joint):
        sampled_logits = model(images, sampled)
    with torch.no_grad():
        greedy_correct = model(images, greedy).argmax(1) == labels
    sampled_correct = sampled_logits.argmax(1) == labels
    sampled_reward = reward(sampled, sampled_correct, gamma, usage)
    advantage = self_critical_advantage(sampled_reward, reward(greedy, greedy_correct, gamma, usage))
    loss = policy_loss(probs, sampled, advantage, learned, model.options.entropy)
    logs = {"reward": sampled_reward.mean().item(), "blocks": sampled.sum(1).mean().item()}
    if joint:
        ce = F.cross_entropy(sampled_logits, labels)
        loss = loss + ce
        logs["ce"] = ce.item()
    return loss, logs


def fit(
    model: BlockDrop, loader: DataLoader, *, phases: dict, device: torch.device, run: TrainingRun | None = None,
    costs: DeviceCosts | None = None,
) -> dict[str, nn.Module]:
    options, blocks = model.options, model.num_blocks
    run = run or TrainingRun()
    usage = usage_of(model, costs)

    pretrain_backbone(model.backbone, loader, phase=phases["pretrain"], device=device, run=run)
    pretrained = run.keep("pretrained", copy.deepcopy(model.backbone))

    curriculum = phases["curriculum"]
    learned = torch.ones(blocks, device=device)

    def start_curriculum_epoch(epoch: int) -> None:
        model.backbone.eval()  # the ResNet is fixed while the policy learns
        count = curriculum_learned(blocks, epoch, curriculum.epochs)
        learned.zero_()
        learned[blocks - count :] = 1

    train_phase(
        model, loader,
        lambda images, labels: _policy_step(model, images, labels, learned, options.curriculum_gamma, joint=False,
                                            usage=usage),
        phase=curriculum, param_groups=[{"params": model.policy.parameters()}], device=device,
        desc="policy curriculum", before_epoch=start_curriculum_epoch, run=run,
    )

    curriculum_policy = run.keep("curriculum_policy", copy.deepcopy(model.policy))

    learned.fill_(1)
    # Masked execution (blend_blocks) runs every block for the whole batch, so under DDP every
    # parameter gets a gradient each step, dropped blocks included: no `skips_parameters`.
    train_phase(
        model, loader,
        lambda images, labels: _policy_step(model, images, labels, learned, options.gamma, joint=True, usage=usage),
        phase=phases["finetune"], param_groups=[{"params": model.parameters()}], device=device,
        desc="joint finetune", run=run,
    )
    extras = {"pretrained": pretrained, "curriculum_policy": curriculum_policy}
    epochs = phases["finetune"].epochs if options.baseline_finetune_epochs is None else options.baseline_finetune_epochs
    if epochs:
        count = blocks_kept(_mean_blocks(model, loader, device))
        for name in BASELINES:
            extras[f"finetuned-{name}-K{count}"] = _finetune_baseline(
                pretrained, name, count, loader, dataclasses.replace(phases["finetune"], epochs=epochs), device, run,
            )
    return extras


@torch.no_grad()
def _mean_blocks(model: BlockDrop, loader: DataLoader, device: torch.device) -> float:
    """The learned policy's mean blocks per image on the training images (of every rank: all take the same K)."""
    model.eval()
    used = [(model.keep_probabilities(images.to(device)) >= 0.5).sum(1).float() for images, _ in loader]
    (mean,) = mean_over_ranks([torch.cat(used).mean().item()], device)
    return mean


def _finetune_baseline(
    pretrained: CifarResNet, name: str, count: int, loader: DataLoader, phase, device: torch.device, run: TrainingRun
) -> CifarResNet:
    """The pretrained ResNet fine-tuned under one heuristic's K-block masks, as Table 1's fine-tuned rows."""
    network = run.keep(f"finetuned {name}", copy.deepcopy(pretrained))
    generator = run.generator(f"finetuned {name}", 0)

    def loss_fn(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        mask = baseline_masks(name, count, network, len(images), generator).to(images.device)
        loss = F.cross_entropy(blend_blocks(network, images, lambda k, _: mask[:, k]), labels)
        return loss, {"ce": loss.item()}

    train_phase(network, loader, loss_fn, phase=phase, param_groups=[{"params": network.parameters()}],
                device=device, desc=f"baseline: {name} K={count} finetune", run=run)
    return network


def baseline_masks(name: str, count: int, backbone: CifarResNet, samples: int, generator: torch.Generator) -> Tensor:
    """BlockDrop Table 1's baselines: K blocks kept, chosen without looking at the image.

    FirstK keeps the first K; RandomK draws K per image; DistributeK spreads K
    evenly over the three stages, earliest blocks of each stage first.
    """
    blocks = len(backbone.blocks)
    mask = torch.zeros(samples, blocks, dtype=torch.bool)
    if name == "FirstK":
        mask[:, :count] = True
    elif name == "RandomK":
        order = torch.rand(samples, blocks, generator=generator).argsort(dim=1)
        mask.scatter_(1, order[:, :count], True)
    elif name == "DistributeK":
        stages = backbone.stages
        for index, stage in enumerate(stages):
            share = count // len(stages) + (1 if index < count % len(stages) else 0)
            mask[:, stage.start : stage.start + share] = True
    else:
        raise ValueError(f"unknown baseline {name!r}")
    return mask


@torch.no_grad()
def evaluate(model: BlockDrop, loader: DataLoader, *, device: torch.device, extras: dict | None = None) -> dict:
    """Accuracy, blocks used and MACs of the learned policy against Table 1's rows: FirstK, RandomK and
    DistributeK at K = BlockDrop's mean blocks rounded up, on the pretrained ResNet and fine-tuned with
    their own policies; the curriculum-only policy; and the pretrained full ResNet."""
    model.eval()
    outputs, labels = [], []
    for images, target in loader:
        out = model.infer(images.to(device))
        outputs.append(out)
        labels.append(target.to(device))
    y = torch.cat(labels)
    executed = torch.cat([o.blocks for o in outputs])
    correct = torch.cat([o.logits.argmax(1) for o in outputs]) == y
    macs = torch.cat([o.macs for o in outputs]).float()
    paths = [p for o in outputs for p in o.paths]
    used = executed.sum(1).float()
    count = blocks_kept(used.mean().item())
    extras = extras or {}
    # Table 1 measures the heuristics and the full ResNet on the pretrained network; a checkpoint
    # from before it kept that network has only BlockDrop's fine-tuned backbone, and says so.
    pretrained = extras.get("pretrained")
    on = "pretrained" if pretrained is not None else "BlockDrop's fine-tuned backbone"
    pretrained = pretrained if pretrained is not None else model.backbone

    def heuristic(name: str, k: int, network: CifarResNet) -> dict:
        generator = torch.Generator().manual_seed(0)
        hits, spent = [], []
        for images, target in loader:
            mask = baseline_masks(name, k, network, len(images), generator).to(device)
            logits, ran = run_blocks(network, images.to(device), lambda b, _: mask[:, b])
            hits.append(logits.argmax(1) == target.to(device))
            spent.append(model.costs.macs(ran))
        return {"accuracy": torch.cat(hits).float().mean().item(), "mean_macs": torch.cat(spent).float().mean().item(),
                "blocks_mean": float(k), "histogram": {}}

    baselines = {f"{name} (K={count}), {on}": heuristic(name, count, pretrained) for name in BASELINES}
    for extra, network in extras.items():
        if extra.startswith("finetuned-"):
            _, name, k = extra.split("-")
            baselines[f"{name} (K={k[1:]}), fine-tuned with its policy"] = heuristic(name, int(k[1:]), network)
    if "curriculum_policy" in extras:
        curriculum = BlockDrop(pretrained, extras["curriculum_policy"], model.options)
        out = [curriculum.infer(images.to(device)) for images, _ in loader]
        ran = torch.cat([o.blocks for o in out])
        baselines["curriculum only, pretrained"] = {
            "accuracy": (torch.cat([o.logits.argmax(1) for o in out]) == y).float().mean().item(),
            "mean_macs": torch.cat([o.macs for o in out]).float().mean().item(),
            "blocks_mean": ran.sum(1).float().mean().item(), "histogram": {},
        }
    full_correct = torch.cat([pretrained(images.to(device)).argmax(1) == t.to(device) for images, t in loader])
    baselines[f"full ResNet, {on}"] = {
        "accuracy": full_correct.float().mean().item(), "mean_macs": float(model.costs.full),
        "blocks_mean": float(model.num_blocks), "histogram": {},
    }
    policies = Counter(paths)
    return {
        "images": len(y),
        "num_blocks": model.num_blocks,
        "policy_macs": model.policy_macs,
        "model": {
            "accuracy": correct.float().mean().item(),
            "mean_macs": macs.mean().item(),
            "std_macs": macs.std().item(),
            "blocks_mean": used.mean().item(),
            "blocks_std": used.std().item(),
            "histogram": dict(policies.most_common()),
        },
        "operating_points": [{"gamma": model.options.gamma, "accuracy": correct.float().mean().item(),
                              "mean_macs": macs.mean().item(), "blocks_mean": used.mean().item()}],
        "block_usage": executed.float().mean(0).tolist(),
        "baselines": baselines,
    }
