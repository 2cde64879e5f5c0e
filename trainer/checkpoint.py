"""Checkpoints: a state dict that loads with `weights_only=True`, plus a JSON config to rebuild the model.

Both files are written to a temporary name and renamed, so an interrupted run
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from trainer.families import get_family

__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "save_checkpoint", "load_checkpoint", "read_config"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
CONFIG_VERSION = 1


def _atomic_write(path: Path, write) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(directory: str | Path, model: nn.Module, config: dict) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda path: torch.save(state, path))
    text = json.dumps({"config_version": CONFIG_VERSION, **config}, indent=2)
    _atomic_write(directory / CONFIG_FILE, lambda path: Path(path).write_text(text))


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint config (expected the output directory of `python -m trainer`)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if config.get("config_version") != CONFIG_VERSION:
        raise ValueError(f"{path}: config_version {config.get('config_version')!r}, expected {CONFIG_VERSION}")
    return config


def load_checkpoint(directory: str | Path) -> tuple[nn.Module, dict]:
    """The trained model in eval mode, and its config. Never unpickles arbitrary objects."""
    config = read_config(directory)
    model = get_family(config["family"]).build(config["model"])
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint weights are missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot read checkpoint weights ({error})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit the model in {CONFIG_FILE}: {error}") from None
    return model.eval(), config
