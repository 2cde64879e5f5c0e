"""`--compile`: the backbone runs through torch.compile on CPU, and the checkpoint is the plain module's."""

from __future__ import annotations

import dataclasses

import torch

from trainer.checkpoint import load_checkpoint
from trainer.recipes import get_recipe
from trainer.train import train


def test_a_compiled_run_trains_and_saves_plain_names(tmp_path):
    recipe = get_recipe("urnet-digits")
    recipe = dataclasses.replace(recipe, phases={n: dataclasses.replace(p, epochs=1) for n, p in recipe.phases.items()})
    torch._dynamo.reset()
    config = train(recipe, tmp_path / "run", subset=64, test_subset=32, torch_compile=True)
    assert config["training"]["compiled"] is True
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "something was compiled"
    model, _ = load_checkpoint(tmp_path / "run")  # the saved names are the plain module's: no _orig_mod
    assert not any("_orig_mod" in name for name in model.state_dict())
