"""Train a recipe end to end: data, the family's phases, evaluation, checkpoint."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trainer.checkpoint import save_checkpoint
from trainer.data import DataInfo, load_split
from trainer.evaluate import evaluate_model
from trainer.families import get_family
from trainer.recipes import Recipe
from trainer.resume import TrainingRun

__all__ = ["train", "training_loader"]


def training_loader(
    dataset: str, batch_size: int, *, data_root=None, subset: int | None = None, seed: int = 0
) -> tuple[DataLoader, DataInfo]:
    """The shuffled, augmented training split every family trains on."""
    train_set, info = load_split(dataset, "train", data_root=data_root, augment=True, subset=subset)
    loader = DataLoader(
        train_set, batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=0 if dataset == "digits" else 2,
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, info


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
) -> dict:
    """Train `recipe`, evaluate it on the test split (or a seeded `test_subset` of it), and checkpoint it to `out`.

    Training state is saved to `out` every `checkpoint_every` steps and at the
    end of each phase; `resume` continues from it exactly (trainer/resume.py),
    given the same arguments.
    """
    if recipe.backbone != "cifar-resnet":
        raise ValueError(f"recipe {recipe.name} needs the {recipe.backbone} backbone, which is not built yet")
    torch.manual_seed(seed)
    family = get_family(recipe.family)
    loader, info = training_loader(recipe.dataset, recipe.batch_size, data_root=data_root, subset=subset, seed=seed)
    model_config = {
        "depth": recipe.depth,
        "width": recipe.width,
        "shortcut": recipe.shortcut,
        "num_classes": len(info.classes),
        "options": dataclasses.asdict(recipe.options),
    }
    model = family.build(model_config).to(device)
    run = TrainingRun(out, every_steps=checkpoint_every, resume=resume)
    run.track("training loader", loader.generator)
    run.keep("model", model)

    started = time.perf_counter()
    extras = family.fit(model, loader, phases=recipe.phases, device=torch.device(device), run=run)
    wall_time = time.perf_counter() - started

    config = {
        "family": recipe.family,
        "recipe": recipe.name,
        "model": model_config,
        "data": info.to_dict(),
        "data_root": str(data_root) if data_root else None,
        "training": {
            "phases": {name: dataclasses.asdict(phase) for name, phase in recipe.phases.items()},
            "batch_size": recipe.batch_size,
            "train_images": len(loader.dataset),
            "seed": seed,
            "device": device,
            "wall_time_s": round(wall_time, 1),  # of this process: a resumed run counts from the resume
            "resumed": resume,
        },
    }
    model.eval()
    config["metrics"] = evaluate_model(
        model, config, data_root=data_root, device=torch.device(device), extras=extras, test_subset=test_subset
    )
    save_checkpoint(out, model.cpu(), config, extras={name: m.cpu() for name, m in extras.items()})
    run.finish()
    return config
