"""One training phase; families differ only in their loss, parameter groups and optimizer."""

from __future__ import annotations

import contextlib
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from trainer.distributed import mean_over_ranks, ranks
from trainer.resume import Start, TrainingRun

__all__ = ["Phase", "train_phase", "pretrain_backbone"]


HEARTBEAT_S = 30.0  # without a progress bar, a line at least this often, so that a logged run is never silent long
# A loss of None: the iteration trains nothing (URNet's binary-gate iterations while only the gates learn).
LossFn = Callable[[Tensor, Tensor], tuple[Tensor | None, dict[str, float]]]
OPTIMIZERS = {
    "sgd": lambda groups, wd: torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=wd),
    "momentum": lambda groups, wd: torch.optim.SGD(groups, momentum=0.9, weight_decay=wd),  # the papers' plain SGD
    "adam": lambda groups, wd: torch.optim.Adam(groups, weight_decay=wd),
}


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))


def _one_cycle(i: int, total: int, warmup: float = 0.3, initial: float = 1 / 25, final: float = 1 / 25e4) -> float:
    """Smith and Topin's one-cycle, as torch's OneCycleLR defaults: cosine up to the peak over 30%, then down."""
    ramp = warmup * total
    return _cosine(initial, 1.0, i / ramp) if i < ramp else _cosine(1.0, final, (i - ramp) / (total - ramp))


# Per-iteration learning-rate multipliers, as a function of (phase, iteration, total iterations).
SCHEDULES = {
    "cosine": lambda phase, i, total: _cosine(1.0, 0.0, i / total),
    "one-cycle": lambda phase, i, total: _one_cycle(i, total),
    "linear": lambda phase, i, total: 1 - i / total,
    "step": lambda phase, i, total: 0.1 ** sum(i >= m * total for m in phase.milestones),
    "constant": lambda phase, i, total: 1.0,
}


@dataclass(frozen=True)
class Phase:
    epochs: int
    lr: float
    optimizer: str = "sgd"  # sgd (Nesterov momentum 0.9), momentum (plain momentum 0.9, as the papers), or adam
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine, one-cycle, linear (to zero), step (lr / 10 at each milestone), or constant
    milestones: tuple[float, ...] = ()  # step: fractions of the phase, e.g. 30/100, 60/100, 80/100, 90/100
    label_smoothing: float = 0.0  # of pretrain_backbone's cross-entropy (the plain ResNet recipes)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; known: {sorted(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; known: {sorted(SCHEDULES)}")
        if (self.schedule == "step") != bool(self.milestones):
            raise ValueError("milestones go with the step schedule, and the step schedule needs them")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


class _Step(nn.Module):
    """A phase's loss as one module, so that DDP sees one forward per step, whatever networks the loss calls."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        return self.loss_fn(images, labels)


@contextlib.contextmanager
def _only_trained(model: nn.Module, groups: list[dict]) -> Iterator[None]:
    """For the phase, parameters outside the optimizer's groups need no gradient.

    Backward then skips their weight gradients (the frozen ResNet while
    BlockDrop's policy or URNet's gates learn), and DDP neither waits for nor
    averages them.
    """
    trained = {id(p) for group in groups for p in group["params"]}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in trained]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def train_phase(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    *,
    phase: Phase,
    param_groups: Iterable[dict],
    device: torch.device,
    desc: str,
    before_epoch: Callable[[int], None] | None = None,
    run: TrainingRun | None = None,
    skips_parameters: bool = False,
) -> list[dict[str, float]]:
    """`phase.epochs` epochs of `phase.optimizer`, the learning rate following `phase.schedule` per iteration.

    Each param group's "lr" is a multiple of the phase's rate (default 1).
    `before_epoch(epoch)` runs after `model.train()`, e.g. to freeze parts or
    advance a curriculum. With a `run`, the phase checkpoints itself and,
    when the run resumes, skips or continues as saved (trainer/resume.py).

    Under torchrun (trainer/distributed.py) the loss runs inside DDP, which
    averages the gradients of the ranks. `skips_parameters` says that some
    trained parameters may get no gradient in a step: blocks a policy or a
    gate skips for a rank's whole batch, the BN set of a resolution or scale
    that no image of the batch took. DDP must then look for them after every
    forward (`find_unused_parameters`), a walk of the autograd graph that the
    other phases do not pay for; without it, DDP would wait for their
    gradients forever.

    Batches go to the model in channels_last, which trains 1.25-1.3x faster
    than NCHW on this 2-core CPU (benchmarks/training_speed.py) and is the layout
    NVIDIA recommends for tensor-core convolutions (not measured here); `train`
    converts the model the same way. Each epoch ends with its throughput and
    the mean of each logged value, over every rank; they are also returned,
    one dict per epoch this process trained.
    """
    start = run.begin_phase() if run else Start()
    if phase.epochs <= 0 or start.done:
        return []
    groups = [{**g, "params": list(g["params"]), "lr": phase.lr * g.get("lr", 1.0)} for g in param_groups]
    with _only_trained(model, groups):
        return _train_epochs(model, loader, loss_fn, phase, groups, device, desc, before_epoch, run, start,
                             skips_parameters)


def _train_epochs(
    model: nn.Module, loader: DataLoader, loss_fn: LossFn, phase: Phase, groups: list[dict], device: torch.device,
    desc: str, before_epoch, run: TrainingRun | None, start: Start, skips_parameters: bool,
) -> list[dict[str, float]]:
    optimizer = OPTIMIZERS[phase.optimizer](groups, phase.weight_decay)
    total, schedule = phase.epochs * len(loader), SCHEDULES[phase.schedule]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule(phase, i, total))
    if start.saved:
        optimizer.load_state_dict(start.saved["optimizer"])
        scheduler.load_state_dict(start.saved["scheduler"])
    place = ranks()
    step_fn: nn.Module = _Step(model, loss_fn)
    if place.distributed:
        step_fn = DistributedDataParallel(
            step_fn, device_ids=[place.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=skips_parameters,
        )
    history = []
    for epoch in range(start.epoch, phase.epochs):
        model.train()
        if before_epoch:
            before_epoch(epoch)
        resuming = start.mid_epoch and epoch == start.epoch
        if isinstance(loader.sampler, DistributedSampler):  # each phase's epochs in their own order
            loader.sampler.set_epoch((run.phase if run else 0) * 10_000 + epoch)
        if run:
            run.begin_epoch(loader, resuming)
        batches = iter(loader)
        skipped = start.step if resuming else 0
        for _ in range(skipped):  # fetched and dropped, so that the data workers draw what they drew before
            next(batches)
        if resuming:
            run.resumed()
        progress = tqdm(
            batches, desc=f"{desc} {epoch + 1}/{phase.epochs}", total=len(loader), initial=skipped,
            leave=False, dynamic_ncols=True, disable=None if place.main else True,
        )
        started, images_seen, sums = time.perf_counter(), 0, {}
        heartbeat = Heartbeat(f"{desc} {epoch + 1}/{phase.epochs}", len(loader), place.main and progress.disable)
        for step, (images, labels) in enumerate(progress, start=skipped + 1):
            heartbeat.beat(step)
            images_seen += len(images)
            # bf16 autocast on CUDA: tensor cores, and no loss scaling needed, unlike fp16.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, logs = step_fn(
                    images.to(device, memory_format=torch.channels_last, non_blocking=True),
                    labels.to(device, non_blocking=True),
                )
            trained = loss is not None  # else drawn, counted and scheduled, but with nothing to step
            if trained:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            with warnings.catch_warnings():  # the schedule counts iterations, trained or not
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"))
                scheduler.step()
            progress.set_postfix({name: f"{value:.3f}" for name, value in logs.items()})
            for name, value in {**logs, "trained": float(trained)}.items():
                logged, count = sums.get(name, (0.0, 0))
                sums[name] = (logged + value, count + 1)
            if run:
                run.step_done(epoch, step, len(loader), optimizer, scheduler)
        progress.close()
        if run:
            run.epoch_done(epoch, len(loader), phase.epochs, optimizer, scheduler)
        history.append(_epoch_summary(desc, epoch, phase.epochs, time.perf_counter() - started, images_seen, sums,
                                      device))
    return history


class Heartbeat:
    """Where a phase is, a line every HEARTBEAT_S seconds, when no progress bar shows it (output piped or logged)."""

    def __init__(self, what: str, steps: int, enabled: bool) -> None:
        self.what, self.steps, self.enabled = what, steps, enabled
        self.last = time.perf_counter()

    def beat(self, step: int) -> None:
        if self.enabled and time.perf_counter() - self.last >= HEARTBEAT_S:
            self.last = time.perf_counter()
            print(f"{self.what}: step {step}/{self.steps}", flush=True)


def _epoch_summary(
    desc: str, epoch: int, epochs: int, seconds: float, images: int, sums: dict[str, tuple[float, int]],
    device: torch.device,
) -> dict[str, float]:
    """The epoch's throughput over all ranks and its mean logs over all ranks, printed once by the main rank.

    `sums` holds each logged value's sum and count over this rank's steps; "trained" is the share of steps that
    trained.
    """
    names = sorted(sums)
    means = [logged / count for logged, count in (sums[n] for n in names)]
    *means, seconds = mean_over_ranks(means + [seconds], device)
    place = ranks()
    summary = {"images_per_s": images * place.world_size / seconds, "seconds": seconds, **dict(zip(names, means))}
    if place.main:
        logged = "".join(f", {name} {value:.4g}" for name, value in zip(names, means))
        tqdm.write(f"{desc} {epoch + 1}/{epochs}: {summary['images_per_s']:.0f} images/s, {seconds:.0f} s{logged}",
                   nolock=True)
    return summary


def pretrain_backbone(
    backbone: nn.Module, loader: DataLoader, *, phase: Phase, device: torch.device, run: TrainingRun | None = None
) -> None:
    """Plain cross-entropy training of the static network, the block families' starting point."""

    def loss_fn(images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        loss = torch.nn.functional.cross_entropy(backbone(images), labels, label_smoothing=phase.label_smoothing)
        return loss, {"ce": loss.item()}

    train_phase(backbone, loader, loss_fn, phase=phase, param_groups=[{"params": backbone.parameters()}],
                device=device, desc="pretrain ResNet", run=run)
