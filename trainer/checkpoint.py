"""Checkpoints: a state dict that loads with `weights_only=True`, plus a JSON config to rebuild the model.

Both files are written to a temporary name and renamed, so an interrupted run
never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from runtime.format.files import atomic_write, sha256_of
from trainer.families import get_family
from trainer.resume import PREVIOUS_STATE_FILE, STATE_FILE, read_tensors

__all__ = [
    "CONFIG_FILE", "WEIGHTS_FILE", "save_checkpoint", "load_checkpoint", "load_extras", "read_config",
    "publish_checkpoint",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pt"
CONFIG_VERSION = 1


def _save_state(path: Path, module: nn.Module) -> None:
    state = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    atomic_write(path, lambda temporary: torch.save(state, temporary))


def _load_state(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint weights are missing")
    return read_tensors(path)


def save_checkpoint(
    directory: str | Path, model: nn.Module, config: dict, *, extras: dict[str, nn.Module] | None = None
) -> None:
    """Weights, then config last: a directory with a config always has the weights it names.

    `extras` are companion networks kept for evaluation, e.g. a family's
    baselines; they are saved beside the model and listed in the config.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    extras = extras or {}
    for name, module in extras.items():
        _save_state(directory / f"extra-{name}.pt", module)
    _save_state(directory / WEIGHTS_FILE, model)
    # The config names the exact weights it belongs to, so a run interrupted between
    # the two renames is caught on load instead of pairing new weights with an old config.
    config = {
        "config_version": CONFIG_VERSION, **config, "extras": sorted(extras),
        "weights_sha256": sha256_of(directory / WEIGHTS_FILE),
    }
    text = json.dumps(config, indent=2)
    atomic_write(directory / CONFIG_FILE, lambda path: Path(path).write_text(text))


def read_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        if any((Path(directory) / name).is_file() for name in (STATE_FILE, PREVIOUS_STATE_FILE)):
            raise FileNotFoundError(
                f"{directory}: the run is unfinished (its training state is saved, its checkpoint not yet written): "
                f"resume it with `python -m trainer --resume {directory}`"
            )
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
    weights = Path(directory) / WEIGHTS_FILE
    state = _load_state(weights)
    if sha256_of(weights) != config.get("weights_sha256"):
        raise ValueError(
            f"{weights}: sha256 differs from the one in {CONFIG_FILE}; weights and config do not belong together"
        )
    _restore(model, state, weights)
    return model.eval(), config


def _restore(module: nn.Module, state: dict, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path}: weights do not fit the model in {CONFIG_FILE}: {error}") from None


def load_extras(directory: str | Path, config: dict) -> dict[str, nn.Module]:
    """The companion networks saved with the model, rebuilt by the family, in eval mode."""
    family = get_family(config["family"])
    extras = {}
    for name in config.get("extras", []):
        module = family.build_extra(config["model"], name)
        path = Path(directory) / f"extra-{name}.pt"
        _restore(module, _load_state(path), path)
        extras[name] = module.eval()
    return extras


def publish_checkpoint(directory: str | Path, to: str | Path) -> Path:
    """The model and its config alone, checked on the way, without companions or training state.

    A trained model small enough to commit or ship: what the exporter and the
    deployment benchmarks read, with its training record and metrics. A copy
    that already holds the same weights and record is left as it is: torch.save
    is not byte-stable, and a rewrite would change a committed file for nothing.
    """
    model, config = load_checkpoint(directory)
    recorded = _record(config)
    if not _holds(to, model, recorded):
        save_checkpoint(to, model, recorded)
    return Path(to)


def _record(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in ("config_version", "extras", "weights_sha256")}


def _holds(directory: str | Path, model: nn.Module, recorded: dict) -> bool:
    if not (Path(directory) / CONFIG_FILE).is_file():
        return False
    held, config = load_checkpoint(directory)
    state = held.state_dict()
    return _record(config) == recorded and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
