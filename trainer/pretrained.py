"""Plain CIFAR ResNets trained once, stored as safetensors, that every family starts from (`--init`).

The papers start from pretrained networks: BlockDrop and URNet from a trained
ResNet, DRNet and Resizable networks from a trained backbone. A
`resnet-cifar10-<depth>` recipe trains one and writes two files:

- `<recipe>.safetensors`: the state dict (tensors only, so loading runs no code);
- `<recipe>.json` beside it: architecture, data, test accuracy, the command
  that made it, and the weights' sha256.

`load_backbone` refuses weights whose sha256 differs from the record, and
`initialize_backbone` copies them into a family's backbone, into every BN set
where the family keeps one set per resolution or scale.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from runtime.format.files import atomic_write, sha256_of

__all__ = [
    "BackboneRecord", "save_backbone", "load_backbone", "initialize_backbone", "check_architecture", "record_path",
    "top1_accuracy",
]

RECORD_VERSION = 1
_BN_SET = re.compile(r"\.sets\.\d+\.")  # trainer.switchable_bn: "<bn>.sets.<i>.<field>" holds "<bn>.<field>"


@dataclass(frozen=True)
class BackboneRecord:
    """What the JSON beside a weights file says about them."""

    recipe: str
    architecture: dict  # depth, width, shortcut, num_classes: what backbone_from_config reads
    data: dict  # trainer.data.DataInfo
    test_accuracy: float  # top-1 on the whole test split
    test_images: int
    command: str  # the command line that trained it
    training: dict  # phases, batch size, seed, wall and CPU time, whether it resumed
    sha256: str = ""  # of the weights file, filled in by save_backbone
    record_version: int = RECORD_VERSION


def record_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_backbone(weights: str | Path, backbone: nn.Module, record: BackboneRecord) -> BackboneRecord:
    """Weights first, then the record naming their sha256: a record always has the weights it describes."""
    weights = Path(weights)
    if weights.suffix != ".safetensors":
        raise ValueError(f"{weights}: backbone weights are stored as .safetensors")
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in backbone.state_dict().items()}
    atomic_write(weights, lambda path: save_file(state, str(path), metadata={"recipe": record.recipe}))
    record = BackboneRecord(**{**asdict(record), "sha256": sha256_of(weights)})
    text = json.dumps(asdict(record), indent=2) + "\n"
    atomic_write(record_path(weights), lambda path: Path(path).write_text(text))
    return record


def load_backbone(weights: str | Path) -> tuple[dict[str, Tensor], BackboneRecord | None]:
    """The state dict and its record, once the weights' sha256 matches the record's.

    A `.pth` or `.pt` file is a torchvision state dict (e.g. ImageNet weights
    saved from torchvision.models): read with `weights_only=True`, no record.
    """
    weights = Path(weights)
    if weights.suffix in (".pth", ".pt"):
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing")
        try:
            return torch.load(weights, map_location="cpu", weights_only=True), None
        except Exception as error:  # a pickle that needs code to load, or a damaged file
            raise ValueError(f"{weights}: not a state dict of tensors ({error})") from None
    record_file = record_path(weights)
    for path in (weights, record_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; --init takes a .safetensors file with its .json record beside it")
    try:
        raw = json.loads(record_file.read_text())
        record = BackboneRecord(**raw)
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{record_file}: not a backbone record ({error})") from None
    if record.record_version != RECORD_VERSION:
        raise ValueError(f"{record_file}: record_version {record.record_version!r}, expected {RECORD_VERSION}")
    actual = sha256_of(weights)
    if actual != record.sha256:
        raise ValueError(f"{weights}: sha256 {actual} differs from {record.sha256} in {record_file.name}")
    try:
        state = load_file(str(weights))
    except Exception as error:  # safetensors raises its own error types for damaged headers
        raise ValueError(f"{weights}: cannot read safetensors weights ({error})") from None
    return state, record


def initialize_backbone(backbone: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """Copy a plain backbone's `state` into `backbone`, every BN set of a switchable BN taking the plain BN's values.

    Every tensor must find its place, and every place its tensor: a backbone of
    another depth, width or shortcut is refused with the names that differ.
    """
    targets = backbone.state_dict()
    plain_names = {name: _BN_SET.sub(".", name) for name in targets}
    missing = sorted({plain for plain in plain_names.values() if plain not in state})
    unused = sorted(set(state) - set(plain_names.values()))
    if missing or unused:
        raise ValueError(
            f"{source}: weights do not fit this backbone; missing {_names(missing)}, not used {_names(unused)}"
        )
    for name, plain in plain_names.items():
        if targets[name].shape != state[plain].shape:
            raise ValueError(f"{source}: {plain} has shape {tuple(state[plain].shape)}, the backbone's {name} "
                             f"{tuple(targets[name].shape)}")
    backbone.load_state_dict({name: state[plain] for name, plain in plain_names.items()})


def check_architecture(record: BackboneRecord, model: dict, source: str | Path) -> None:
    """Refuse a backbone whose depth, width, shortcut or classes differ from the model config's."""
    wanted = {key: model[key] for key in record.architecture}
    if wanted != record.architecture:
        raise ValueError(f"{source}: a backbone of {record.architecture}, but the recipe builds {wanted}")


def _names(names: list[str], shown: int = 4) -> str:
    if not names:
        return "none"
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


@torch.no_grad()
def top1_accuracy(backbone: nn.Module, loader, device: torch.device) -> float:
    backbone.eval()
    correct = sum((backbone(x.to(device)).argmax(1) == y.to(device)).sum().item() for x, y in loader)
    return correct / len(loader.dataset)
