"""Train a recipe end to end: data, the family's phases, evaluation, checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from runtime.format.files import sha256_of
from trainer.backbone import backbone_from_config
from trainer.checkpoint import save_checkpoint
from trainer.data import DataInfo, load_split
from trainer.device_costs import DeviceCosts
from trainer.distributed import ranks
from trainer.evaluate import evaluate_model
from trainer.families import get_family
from trainer.loop import pretrain_backbone
from trainer.pretrained import (
    BackboneRecord, check_architecture, initialize_backbone, load_backbone, save_backbone, top1_accuracy,
)
from trainer.recipes import Recipe
from trainer.resume import TrainingRun

__all__ = ["train", "training_loader", "compile_backbone"]


def training_loader(
    dataset: str, batch_size: int, *, data_root=None, subset: int | None = None, seed: int = 0,
    pin_memory: bool = False, workers: int | None = None,
) -> tuple[DataLoader, DataInfo]:
    """The shuffled, augmented training split every family trains on: this rank's share of each global batch.

    Digits and CIFAR-10 need no data workers: they are in memory and augmented
    a batch at a time (trainer.data), so both cores go to the model. ImageNet
    is decoded by `workers` processes (default: one per core, up to 8, shared
    among the node's ranks). `pin_memory` for CUDA. Under torchrun, a
    `DistributedSampler` deals each rank batch_size / world_size images per
    step; each rank's generator (seeded `seed + rank`) seeds its workers.
    """
    place = ranks()
    if batch_size % place.world_size:
        raise ValueError(f"the global batch of {batch_size} does not split evenly over {place.world_size} processes")
    train_set, info = load_split(dataset, "train", data_root=data_root, augment=True, subset=subset)
    if workers is None:
        in_memory = dataset != "imagenet"
        workers = 0 if in_memory else min(8, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    sampler = DistributedSampler(train_set, seed=seed, drop_last=True) if place.distributed else None
    loader = DataLoader(
        train_set, batch_size=batch_size // place.world_size, shuffle=sampler is None, sampler=sampler,
        drop_last=True, pin_memory=pin_memory, num_workers=workers,
        generator=torch.Generator().manual_seed(seed + place.rank),
    )
    return loader, info


def compile_backbone(backbone: torch.nn.Module) -> None:
    """torch.compile where the time goes: the backbone, and each of its blocks, which the block families call one by one.

    In place (nn.Module.compile), so state-dict names stay those of the plain module.
    """
    backbone.compile()
    for block in getattr(backbone, "blocks", ()):
        block.compile()


def train(
    recipe: Recipe,
    out: str | Path,
    *,
    device: str = "cpu",
    data_root: str | Path | None = None,
    subset: int | None = None,
    seed: int = 0,
    test_subset: int | None = None,
    checkpoint_every: int = 500,
    resume: bool = False,
    init: str | Path | None = None,
    command: str = "",
    torch_compile: bool = False,
    workers: int | None = None,
    costs: DeviceCosts | None = None,
) -> dict:
    """Train `recipe`, evaluate it on the test split (or a seeded `test_subset` of it), and checkpoint it to `out`.

    Training state is saved to `out` every `checkpoint_every` steps and at the
    end of each phase; `resume` continues from it exactly (trainer/resume.py),
    given the same arguments. `init` names a plain backbone's weights
    (trainer/pretrained.py) to start from; the phases it stands in for are
    skipped. A plain backbone recipe writes `<out>/<recipe>.safetensors` and
    its record, and returns the record; `command` is written into it.
    `torch_compile` runs the backbone through torch.compile (compile_backbone).
    `workers` data-loading processes, for ImageNet (training_loader).
    `costs`, a device's latency table (trainer/device_costs.py), replaces the
    family's MACs cost term with that device's milliseconds: a deviation from
    the paper, which the checkpoint records.

    Under torchrun (trainer/distributed.py) every rank trains; the main rank
    alone evaluates and writes, and the others return an empty dict. On a
    CPU, a recipe that fixes its threads (`Recipe.threads`) trains with that
    many, so that the same command gives the same weights on any machine.
    """
    threads = recipe.threads if device == "cpu" else None
    with cpu_threads(threads):
        return _train(recipe, out, device=device, data_root=data_root, subset=subset, seed=seed,
                      test_subset=test_subset, checkpoint_every=checkpoint_every, resume=resume, init=init,
                      command=command, torch_compile=torch_compile, workers=workers, costs=costs)


UNTRAINED_IMAGES = 256  # training images an untrained checkpoint loads: its data's shapes and classes, no more


def untrained_checkpoint(recipe: Recipe, out: str | Path, *, init: str | Path | None = None,
                         data_root: str | Path | None = None, seed: int = 0) -> Path:
    """`recipe`'s model as its training would start (seeded, or from the `init` backbone), with every phase
    switched off, saved as a checkpoint in `out`: graphs of the shapes training will export, whose latency a
    device cost table measures before any training (python -m runtime.profile costs)."""
    train(recipe.without(tuple(recipe.phases)), out, data_root=data_root, subset=UNTRAINED_IMAGES, seed=seed,
          test_subset=UNTRAINED_IMAGES, init=init)
    return Path(out)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` while inside (None: left as they are)."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(recipe: Recipe, out, *, device, data_root, subset, seed, test_subset, checkpoint_every, resume, init,
           command, torch_compile, workers, costs) -> dict:
    backbones = get_family(recipe.family).backbones if recipe.family else ("cifar-resnet",)
    if recipe.backbone not in backbones:
        raise ValueError(f"recipe {recipe.name}: the {recipe.backbone} backbone is not supported yet; "
                         f"{recipe.family or 'a plain backbone recipe'} runs on {', '.join(backbones)}")
    if recipe.family is None and init is not None:
        raise ValueError(f"recipe {recipe.name} trains a backbone from scratch; --init is for the family recipes")
    if recipe.family is None and costs is not None:
        raise ValueError(f"recipe {recipe.name} trains a plain backbone, which makes no decisions to cost")
    torch.manual_seed(seed)
    place = ranks()
    loader, info = training_loader(
        recipe.dataset, recipe.batch_size, data_root=data_root, subset=subset, seed=seed,
        pin_memory=device == "cuda", workers=workers,
    )
    model_config = {
        "backbone": recipe.backbone,
        "depth": recipe.depth,
        "width": recipe.width,
        "shortcut": recipe.shortcut,
        "num_classes": len(info.classes),
    }
    training = {
        "phases": {name: dataclasses.asdict(phase) for name, phase in recipe.phases.items()},
        "batch_size": recipe.batch_size,
        "train_images": len(loader.dataset),
        "processes": place.world_size,
        "seed": seed,
        "device": device,
        "compiled": torch_compile,
        "resumed": resume,
        # The cost term the decisions trained against: the papers' MACs, or a device's ms (a deviation, named).
        "cost": {"cost": "macs"} if costs is None else costs.describe(),
    }
    run = TrainingRun(out, every_steps=checkpoint_every, resume=resume)
    if run.resumed_from and ranks().main:
        print(run.resumed_from, flush=True)
    run.track("training loader", loader.generator)
    if recipe.family is None:
        return _train_backbone(recipe, out, loader, info, model_config, training, run, device, data_root, command, torch_compile)

    family = get_family(recipe.family)
    options = recipe.options
    if family.choose_candidates is not None:
        options = family.choose_candidates(options, costs)
    model_config["options"] = dataclasses.asdict(options)
    model = family.build(model_config)
    if init is not None:
        state, record = load_backbone(init)
        if record is not None:
            check_architecture(record, model_config, init)
        elif hasattr(model.backbone, "from_torchvision_names"):  # torchvision's names, laid out as blocks
            state = model.backbone.from_torchvision_names(state)
        initialize_backbone(model.backbone, state, init)
        recipe = recipe.without(family.init_skips)
        training["phases"] = {name: dataclasses.asdict(phase) for name, phase in recipe.phases.items()}
        training["init"] = {"weights": str(init), "sha256": sha256_of(Path(init)), "skipped_phases": list(family.init_skips)}
        if record is not None:
            training["init"].update(recipe=record.recipe, test_accuracy=record.test_accuracy)
    model = model.to(device, memory_format=torch.channels_last)
    if torch_compile:
        compile_backbone(model.backbone)
    run.keep("model", model)
    _draw_per_rank(seed)

    extras = family.fit(model, loader, phases=recipe.phases, device=torch.device(device), run=run, costs=costs)
    training.update(run.times())  # every process's share, when the run resumed
    if not place.main:
        return {}

    config = {
        "family": recipe.family,
        "recipe": recipe.name,
        "model": model_config,
        "data": info.to_dict(),
        "data_root": str(data_root) if data_root else None,
        "training": training,
    }
    model.eval()
    config["metrics"] = evaluate_model(
        model, config, data_root=data_root, device=torch.device(device), extras=extras, test_subset=test_subset
    )
    save_checkpoint(out, model.cpu(), config, extras={name: m.cpu() for name, m in extras.items()})
    if family.companion is not None:
        family.companion(Path(out), config)
    run.finish()
    return config


def _draw_per_rank(seed: int) -> None:
    """Once every rank has built the same networks from `seed`: each draws its own crops and policies from here."""
    place = ranks()
    if place.distributed:
        torch.manual_seed(seed + place.rank)


def _train_backbone(
    recipe: Recipe, out, loader, info: DataInfo, model_config: dict, training: dict, run: TrainingRun,
    device: str, data_root, command: str, torch_compile: bool,
) -> dict:
    """A plain backbone recipe: one phase of cross-entropy, then its weights and record."""
    (phase,) = recipe.phases.values()
    backbone = backbone_from_config(model_config).to(device, memory_format=torch.channels_last)
    if torch_compile:
        compile_backbone(backbone)
    run.keep("model", backbone)
    _draw_per_rank(training["seed"])
    pretrain_backbone(backbone, loader, phase=phase, device=torch.device(device), run=run)
    training.update(run.times())
    if not ranks().main:
        return {}
    test_set, _ = load_split(recipe.dataset, "test", data_root=data_root)
    accuracy = top1_accuracy(backbone, DataLoader(test_set, batch_size=500), torch.device(device))
    record = BackboneRecord(
        recipe=recipe.name, architecture=model_config, data=info.to_dict(), test_accuracy=round(accuracy, 4),
        test_images=len(test_set), command=command, training=training,
    )
    record = save_backbone(Path(out) / f"{recipe.name}.safetensors", backbone.cpu(), record)
    run.finish()
    return dataclasses.asdict(record)
